"""The results store: append-only, resumable after any stop, never accepting a half-written line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from synthetic_runs import generation_record, run_info

from harness.records import (
    BATCH_FIELDS,
    LATER_FIELDS,
    REQUIRED_FIELDS,
    TELEMETRY_FIELDS,
    BatchFields,
    ErrorRecord,
    GenerationRecord,
    TelemetryFields,
)
from harness.store import RECORDS, RunInfo, StoreError, add_compiles, load, load_run, open_run, read_records


def unit(item: str, turns: int = 1, method: str = "ar"):
    return [generation_record(item_id=f"s/{item}", method=method, turn=t, turns=turns) for t in range(turns)]


def test_units_round_trip_into_a_dataframe(tmp_path):
    store = open_run(tmp_path, run_info(), resume=False)
    store.write_unit(unit("a"))
    store.write_unit(unit("b", turns=2))
    store.close()
    df = load(tmp_path)
    assert list(df.item_id) == ["s/a", "s/b", "s/b"] and list(df.turn) == [0, 0, 1]


def test_an_existing_run_needs_resume_and_the_same_configuration(tmp_path):
    open_run(tmp_path, run_info(), resume=False).close()
    with pytest.raises(StoreError, match="--resume"):
        open_run(tmp_path, run_info(), resume=False)
    with pytest.raises(StoreError, match="different configuration"):
        open_run(tmp_path, run_info(config_hash="other"), resume=True)
    with pytest.raises(
        StoreError, match="holds a whole run, and this resume asks for shard 1/2 .* without --shard"
    ):
        open_run(tmp_path, run_info(shard=[1, 2]), resume=True)


@pytest.mark.parametrize(
    "tail",
    [
        b'{"suite": "s", "item_id": "s/c", "met',  # killed inside a line
        json.dumps(unit("c", turns=2)[0].to_json()).encode() + b"\n",  # killed between the turns of one unit
        json.dumps(unit("c", turns=2)[0].to_json()).encode() + b"\n" + b'{"suite"',
    ],
)
def test_resume_drops_a_partial_unit_and_keeps_every_complete_one(tmp_path, tail):
    store = open_run(tmp_path, run_info(), resume=False)  # a run still "running": its writer stopped
    store.write_unit(unit("a"))
    store.write_unit(unit("b", turns=2))
    store.close()
    with open(tmp_path / RECORDS, "ab") as f:
        f.write(tail)
    assert [r["item_id"] for r in read_records(tmp_path)] == ["s/a", "s/b", "s/b"]  # readers skip the tail

    resumed = open_run(tmp_path, run_info(), resume=True)
    assert resumed.done == {("s", "s/a", "ar", 0), ("s", "s/b", "ar", 0)}
    resumed.write_unit(unit("c", turns=2))
    resumed.close()
    lines = (tmp_path / RECORDS).read_text().splitlines()
    assert [json.loads(line)["item_id"] for line in lines] == ["s/a", "s/b", "s/b", "s/c", "s/c"]


def test_records_are_written_flat_and_read_back_as_written(tmp_path):
    telemetry = TelemetryFields(
        **{**dict.fromkeys(TELEMETRY_FIELDS), "ar_forward_count": 2, "diffusion_forward_count": 0}
    )
    batch = {**dict.fromkeys(BATCH_FIELDS, 0), "batch_continuous": False, "batch_shared_telemetry": True}
    records = [
        generation_record(item_id="s/a", telemetry=telemetry),
        generation_record(item_id="s/b"),  # --no-telemetry: no telemetry field at all
        generation_record(item_id="s/d", batch=BatchFields(**batch)),  # a batched run
        ErrorRecord(
            suite="s", item_id="s/c", method="ar", method_name="ar", lossless=True, sample=0, turn=0, turns=1,
            error="RuntimeError: boom", traceback="...", context_tokens=None,
        ),
    ]  # fmt: skip
    store = open_run(tmp_path, run_info(), resume=False)
    for record in records:
        store.write_unit([record])
    store.close()
    a, b, d, c = read_records(tmp_path)
    names = [f.name for f in dataclasses.fields(GenerationRecord)]
    assert names[-1] == "batch"
    names = names[:-1]
    at = names.index("telemetry")
    assert list(a) == [*names[:at], *TELEMETRY_FIELDS, *names[at + 1 :]]  # flat, in the schema's order
    assert list(d) == [*names[:at], *names[at + 1 :], *BATCH_FIELDS]
    assert a["ar_forward_count"] == 2 and a["status"] == "ok" and a["error"] is None
    assert list(b) == [*names[:at], *names[at + 1 :]]
    assert [k for k in c if k not in LATER_FIELDS] == list(REQUIRED_FIELDS["error"]) and c[
        "status"
    ] == "error"
    assert set(REQUIRED_FIELDS["ok"]) == set(b) - set(LATER_FIELDS)


def test_a_line_that_is_not_a_record_is_named(tmp_path):
    store = open_run(tmp_path, run_info(), resume=False)
    store.write_unit(unit("a"))
    store.close()
    broken = {k: v for k, v in unit("b")[0].to_json().items() if k not in ("output_ids", "wall_s")}
    with open(tmp_path / RECORDS, "a") as f:
        f.write(json.dumps(broken) + "\n")
    with pytest.raises(StoreError, match="line 2: not an orthrus-bench record .*output_ids, wall_s"):
        read_records(tmp_path)


def test_compiles_add_up_over_sessions_and_shards():
    first = {"ar": {"warmup": {"count": 2, "seconds": 1.5, "by_kind": {"cudagraph": 1, "flex_attention": 1}}}}
    second = {
        "ar": {"warmup": {"count": 1, "seconds": 0.5, "by_kind": {"cudagraph": 1}}},
        "pld": {"generations": {"count": 1, "seconds": 2.0, "by_kind": {"static_pass": 1}}},
    }
    assert add_compiles(first, None, second) == {
        "ar": {"warmup": {"count": 3, "seconds": 2.0, "by_kind": {"cudagraph": 2, "flex_attention": 1}}},
        "pld": {"generations": {"count": 1, "seconds": 2.0, "by_kind": {"static_pass": 1}}},
    }
    assert add_compiles(None, None) is None  # runs from before compiles were recorded
    assert (
        RunInfo.from_dict({"config": {}}).compiles is None
        and "compiles" not in RunInfo(config={}, config_hash="h").to_dict()
    )


@pytest.mark.parametrize(
    "overrides", [{}, {"temperature": 0.7, "max_new_tokens": 9}, {"top_k": 5, "top_p": 0.5}]
)
def test_run_json_gives_the_generation_settings_the_run_used(overrides):
    """RunInfo.generation (what every reader checks records against, torch-free) is RunSpec.generation."""
    from harness.run.spec import RunSpec
    from harness.suites.config import read_suite_file
    from harness.suites.suite import load_suite, suite_files_dir

    spec = RunSpec(suites=["tiny-math"], **overrides)
    used = spec.generation(load_suite("tiny-math").generation)
    raw = read_suite_file(suite_files_dir() / "tiny-math.toml")
    info = RunInfo(config=spec.config(), config_hash="h", suites={"tiny-math": {"config": raw}})
    assert info.generation("tiny-math") == {
        k: getattr(used, k) for k in ("temperature", "top_k", "top_p", "max_new_tokens")
    }


def test_files_written_before_backend_was_named_so_read_as_now(tmp_path):
    """Before issue 39 a record and a run.json method entry named whose engine decoded it `engine`: read back,
    both say `backend` (the run.json's engine_config too), and a record of a backend other than its method's is
    still refused."""
    info = run_info(methods=("vllm-ar",))
    info.methods["vllm-ar"] = {"engine": "vllm", "engine_config": {"engine": "vllm", "version": "0"}}
    open_run(tmp_path, info, resume=False).close()
    record = generation_record(item_id="s/a", method="vllm-ar", method_name="vllm-ar").to_json()
    old = {("engine" if k == "backend" else k): ("vllm" if k == "backend" else v) for k, v in record.items()}
    (tmp_path / RECORDS).write_text(json.dumps(old) + "\n")
    (read,) = read_records(tmp_path)
    assert read["backend"] == "vllm" and "engine" not in read and list(read) == list(record)
    run = load_run(tmp_path)
    assert run.methods["vllm-ar"] == {"backend": "vllm", "engine_config": {"backend": "vllm", "version": "0"}}
    with open(tmp_path / RECORDS, "a") as f:
        f.write(json.dumps({**old, "item_id": "s/b", "engine": "orthrus-bench"}) + "\n")
    with pytest.raises(StoreError, match="its backend is orthrus-bench, the run's vllm-ar ran in vllm"):
        read_records(tmp_path)


COMMITTED_RUNS = sorted(
    path.parent for path in (Path(__file__).resolve().parents[1] / "results").rglob("run.json")
)


@pytest.mark.parametrize("run", COMMITTED_RUNS, ids=lambda p: p.parent.name + "/" + p.name)
def test_every_committed_run_reads_whole_under_todays_schema(run):
    """The committed reference runs, written by older versions of the schema (before `backend`, the config hash,
    telemetry on batched records ...), read back whole: every record good, checked against its run.json."""
    records = read_records(run)
    lines = (run / RECORDS).read_text().splitlines()
    assert len(records) == len(lines) > 0
    assert {r["backend"] for r in records if "backend" in r} <= {"orthrus-bench", "vllm"}
