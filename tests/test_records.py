"""The record's keys and counting figures have one home each: a work unit and a prompt are harness.records'
UNIT and PROMPT (resume, merge, the report's units and its pairings all key by them), and τ and TPF are
orthrus_core.metrics' (the report's summaries are those functions of the records' sums)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import generation_record, run_info

from harness.records import PROMPT, UNIT, prompt_key, unit_key
from harness.report.runs import generations, load_runs, units
from harness.report.stats import pooled_tau, pooled_tpf
from harness.report.summary import summarize
from harness.store import open_run, read_records
from orthrus_core import metrics


def test_the_keys_are_their_columns_in_order():
    record = generation_record(
        suite="s", item_id="s/7", method="eagle3:tree=chain", sample=2, turn=1, turns=2
    )
    row = record.to_json()
    assert UNIT == ("suite", "item_id", "method", "sample") and PROMPT == (
        "suite",
        "item_id",
        "sample",
        "turn",
    )
    assert unit_key(row) == ("s", "s/7", "eagle3:tree=chain", 2)
    assert prompt_key(row) == ("s", "s/7", 2, 1)


def write_run(directory):
    """Two items, two samples, two turns, by two methods: 8 units, 8 prompts, 16 generations."""
    store = open_run(directory, run_info(methods=("ar", "orthrus"), samples=2), resume=False)
    for item in ("s/0", "s/1"):
        for sample in (0, 1):
            for method, accepted in (("ar", ()), ("orthrus", (3, 1, 0))):
                store.write_unit(
                    [
                        generation_record(
                            item_id=item,
                            method=method,
                            method_name=method,
                            sample=sample,
                            turn=turn,
                            turns=2,
                            output_ids=range(5 + turn + sample),
                            accepted=accepted,
                        )
                        for turn in (0, 1)
                    ]
                )
    return store


def test_the_store_and_the_report_count_the_same_units(tmp_path):
    store = write_run(tmp_path)
    records = read_records(tmp_path)
    assert store.done == {unit_key(r) for r in records} and len(store.done) == 8
    store.close()
    u = units(generations(load_runs([tmp_path])))
    rows = [unit_key(row) for row in u.to_dict("records")]
    assert len(rows) == len(set(rows)) and set(rows) == store.done  # one report row per stored unit
    for row in u.to_dict("records"):  # a row sums its unit's generations
        own = [r for r in records if unit_key(r) == unit_key(row)]
        assert len(own) == 2 and row["tokens"] == sum(r["new_tokens"] for r in own)


def test_a_prompt_is_shared_across_methods_and_distinct_per_turn(tmp_path):
    write_run(tmp_path).close()
    records = read_records(tmp_path)
    by_prompt = {}
    for r in records:
        by_prompt.setdefault(prompt_key(r), set()).add(r["method"])
    assert len(by_prompt) == 8 and all(methods == {"ar", "orthrus"} for methods in by_prompt.values())
    summary = summarize(records).set_index("method")
    assert summary.loc["orthrus", "identical_to_ar"] == 1.0  # every orthrus generation paired with ar's


def test_the_summary_is_metrics_of_the_sums(tmp_path):
    write_run(tmp_path).close()
    records = read_records(tmp_path)
    summary = summarize(records).set_index("method")
    for method in ("ar", "orthrus"):
        own = [r for r in records if r["method"] == method]
        accepted = [n for r in own for n in r["accepted"]]
        forwards = sum(r["ar_forwards"] + r["draft_forwards"] for r in own)
        tau = metrics.tau(sum(accepted), len(accepted))
        assert summary.loc[method, "tpf"] == pytest.approx(
            metrics.tpf(sum(r["new_tokens"] for r in own), forwards)
        )
        assert pd.isna(summary.loc[method, "tau"]) if tau is None else summary.loc[method, "tau"] == tau
    assert pd.isna(summary.loc["ar", "tau"]) and summary.loc["orthrus", "tau"] == 1 + 4 / 3


def test_the_resampled_statistics_are_metrics_of_the_sums():
    assert pooled_tau([3, 0, 5], [2, 1, 3]) == metrics.tau(8, 6)
    assert pooled_tpf([10, 4], [5, 0]) == metrics.tpf(14, 5)
    resamples = pooled_tau(np.array([[1, 2], [3, 4]]), np.array([[1, 1], [2, 2]]))  # bootstrap_ci's shape
    assert resamples.tolist() == [metrics.tau(3, 2), metrics.tau(7, 4)]
    with np.errstate(invalid="ignore"):
        assert np.isnan(pooled_tau([0, 0], [0, 0]))  # a number for the bootstrap, as a ratio of sums gives
