"""Sampling settings at their edges, through the command line: settings whose distribution is one token
(top-k 1, a temperature below 1e-6, a top-p below 1e-6) are decoded and verified as greedy and say so; data
that is one token at most positions (top-p 0.3 on the tiny family) is verified without a crash; and every JSON file a run and its verify write parses with
a strict parser (no NaN or Infinity tokens). A few seconds per run: one item, 8 tokens, 2 samples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from command_line import cli

from harness.cli import main
from harness.records import unit_key
from harness.report.runs import load_runs
from harness.report.verdicts import verify_tables
from harness.store import read_records, record_line
from orthrus_core.jsonfile import json_text, write_json

RUN_ARGS = ["--suite", "tiny-math", "--methods", "ar,orthrus", "--limit", "1", "--max-new-tokens", "8"]
RUN_ARGS += ["--warmup", "0", "--samples", "2", "--no-verify"]
DEGENERATE = {
    "top-k 1": (["--temperature", "1", "--top-k", "1"], "top_k 1 leaves one token"),
    "temperature 1e-9": (["--temperature", "1e-9"], "temperature 1e-09 below 1e-06 leaves one token"),
    "top-p 1e-12": (["--temperature", "1", "--top-p", "1e-12"], "top_p 1e-12 below 1e-06 leaves one token"),
}


def outputs(run: Path) -> dict[tuple, list[int]]:
    return {unit_key(r): r["output_ids"] for r in read_records(run)}


def strict_loads(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity, as strict parsers (JavaScript's, Go's) do."""

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("degenerate")


@pytest.fixture(scope="module")
def greedy_run(runs) -> Path:
    out = runs / "greedy"
    assert main(["run", *RUN_ARGS, "--temperature", "0", "--out", str(out)]) == 0
    assert main(["verify", str(out)]) == 0
    return out


@pytest.fixture(scope="module", params=list(DEGENERATE))
def degenerate_run(request, runs) -> tuple[str, Path]:
    out = runs / request.param.replace(" ", "-")
    assert main(["run", *RUN_ARGS, *DEGENERATE[request.param][0], "--out", str(out)]) == 0
    return request.param, out


def test_a_degenerate_setting_is_decoded_and_judged_as_greedy(degenerate_run, greedy_run, capsys):
    name, run = degenerate_run
    # Decoded as greedy: every sample of every method is the T = 0 run's tokens.
    assert outputs(run) == outputs(greedy_run) and len(outputs(run)) == 4
    code, printed = cli(capsys, "verify", run)
    assert code == 0, printed
    words = " ".join(printed.split())  # the console wraps the table's cells and the summary
    assert "(degenerate)" in words and "so decoded and judged as greedy; 2/2 prompts token-identical" in words
    (verdict,) = strict_loads((run / "verdicts.json").read_text())["verdicts"]
    assert (verdict["method"], verdict["mode"], verdict["verdict"]) == ("orthrus", "greedy", "PASS")
    assert "sampling" not in verdict and verdict["greedy"]["identical"] == verdict["greedy"]["prompts"] == 2
    reason = DEGENERATE[name][1]
    assert (
        verdict["degenerate"].startswith("degenerate sampling settings") and reason in verdict["degenerate"]
    )
    assert verdict["reason"].startswith(verdict["degenerate"]) and reason in verdict["summary"]
    assert verdict["accuracy"]["test"] == "exact McNemar"  # the greedy accuracy comparison
    # The report says so, and compare holds the run to greedy's zero tolerance.
    (table,) = verify_tables(load_runs([run])[0], strict_loads((run / "verdicts.json").read_text()))
    assert table.rows[0][4] == "greedy (degenerate)" and reason in table.rows[0][6]
    code, printed = cli(capsys, "compare", greedy_run, run, "--no-timing-gate")
    assert code == 0 and "| orthrus | greedy token identity | – | 2/2 prompts identical |" in printed, printed
    assert "(greedy in both)" in printed  # a setting that changes nothing is listed, not refused


def test_mostly_one_token_data_is_verified_without_a_crash(runs, capsys):
    """top-p 0.3 samples, but the tiny family's distributions leave one token at nearly every position: here
    at every one, so every sequence has log-probability 0 (scipy's Anderson-Darling refused such data)."""
    out = runs / "top-p-0.3"
    code, printed = cli(capsys, "run", *RUN_ARGS, "--temperature", "1", "--top-p", "0.3", "--out", out)
    assert code == 0, printed
    code, printed = cli(capsys, "verify", out, "--t2-samples", "20", "--t2-depth", "2")
    assert code == 0, printed
    (verdict,) = strict_loads((out / "verdicts.json").read_text())["verdicts"]
    assert (verdict["mode"], verdict["verdict"]) == ("sampling", "PASS") and "degenerate" not in verdict
    tests = {t["name"]: t for t in verdict["sampling"]["tests"]}
    assert "no evidence of a difference" in tests["T4 log-prob AD"]["detail"]
    assert all(0 <= t["pvalue"] <= 1 for t in tests.values())


def test_every_json_a_run_and_verify_write_is_standard(greedy_run, degenerate_run, tmp_path):
    """Every .json file and .jsonl line of the runs above, after verify, parses strictly; and where the project
    holds non-finite floats (a measurement, a statistic) they are written as null or "inf", never as tokens."""
    assert (degenerate_run[1] / "verdicts.json").exists()  # verified by the test above
    checked = 0
    for run in (greedy_run, degenerate_run[1]):
        names = {p.name for p in run.rglob("*.json*")}
        assert names == {"run.json", "records.jsonl", "verdicts.json"}, names
        for path in sorted(run.rglob("*.json*")):
            text = path.read_text()
            lines = text.splitlines() if path.suffix == ".jsonl" else [text]
            for line in lines:
                strict_loads(line)
                checked += 1
    assert checked == 2 * (1 + 1 + 4)  # run.json, verdicts.json and 4 records (2 methods x 2 samples) per run
    record = {"tokens_per_s": math.nan, "tpot_s": math.inf, "nested": [{"x": -math.inf}], "ok": 1.5}
    assert strict_loads(record_line(record).decode()) == {
        "tokens_per_s": None,
        "tpot_s": None,
        "nested": [{"x": None}],
        "ok": 1.5,
    }
    path = tmp_path / "statistics.json"
    write_json(path, {"z": math.inf, "p": math.nan, "bound": [-math.inf, 0.5]})
    assert strict_loads(path.read_text()) == {"z": "inf", "p": None, "bound": ["-inf", 0.5]}
    assert strict_loads(json_text({"v": math.nan})) == {"v": None}
