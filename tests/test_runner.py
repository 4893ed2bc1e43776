"""The suite runner end to end on the tiny family, on CPU: records, provenance, resume, failures, shards."""

from __future__ import annotations

import dataclasses
import json

import pytest

from harness.cli import main
from harness.records import unit_key
from harness.report.summary import summarize
from harness.run.runner import execute, prepare
from harness.run.shards import merge
from harness.run.spec import RunError, RunSpec
from harness.store import RECORDS, RETRIED, load, load_run, read_records, save_run
from orthrus_core.engine import bucket
from orthrus_core.params import SamplingParams

SPEC = dict(
    suites=["tiny-math", "tiny-chat"], methods=["ar", "orthrus"], limit=2, max_new_tokens=24, warmup=1
)


@pytest.fixture(scope="module")
def prepared():
    return prepare(RunSpec(**SPEC))


def failing(decoder, monkeypatch, error):
    """`decoder` whose generations raise error(request) where that is an exception, after its decode admitted
    the request (as an OOM mid-generation would); the others go on."""
    decode = decoder.decode

    def patched(next_request, *args, **kwargs):
        for done in decode(next_request, *args, **kwargs):
            exc = error(done.request)
            if exc is not None:
                raise exc
            yield done

    monkeypatch.setattr(decoder, "decode", patched)


def keys(records):
    return sorted((r["suite"], r["item_id"], r["method"], r["sample"], r["turn"]) for r in records)


def test_a_run_records_every_generation_with_provenance(prepared, tmp_path):
    out = execute(RunSpec(**SPEC), tmp_path / "run", prepared=prepared, progress=False)
    records = read_records(out)
    # 2 math items x 1 turn + 2 chat items x 2 turns, by 2 methods
    assert len(records) == (2 + 4) * 2
    assert all(r["status"] == "ok" for r in records)
    for r in records:
        assert r["new_tokens"] == len(r["output_ids"]) <= 24
        assert r["prompt_tokens"] == len(r["prompt_ids"]) and r["context_bucket"] == 1024
        assert r["wall_s"] > 0 and r["ttft_s"] > 0 and r["ar_forward_count"] == r["ar_forwards"]
        assert (r["score_status"] is None) == (r["turn"] < r["turns"] - 1)
        # One emission offset per cycle (AR: per token after the first), since the first token, in order
        offsets = r["emit_offsets_s"]
        assert len(offsets) == r["ar_forwards"] and offsets == sorted(offsets)
        assert all(0 <= t <= r["decode_s"] for t in offsets)
    orthrus = [r for r in records if r["method"] == "orthrus"]
    assert all(r["draft_forwards"] == len(r["accepted"]) > 0 for r in orthrus)

    run = load_run(out)
    assert run.status == "complete" and run.finished >= run.started and run.engine == "eager"
    for key in ("git", "versions", "hardware", "suites", "methods", "models", "seeds", "command"):
        assert getattr(run, key), key
    assert run.models[0]["weights"]["model.safetensors"]
    assert run.suites["tiny-math"]["data_origin"].startswith("builtin")
    assert run.methods["orthrus"]["lossless"] is True
    assert run.methods["orthrus"]["outside_engine"] is None  # its draft pass is the engine's
    for r in records:  # the cache bucket each generation ran in: its positions, rounded up
        assert r["prompt_tokens"] + r["new_tokens"] <= r["kv_capacity"] == bucket(r["kv_capacity"])
    # Eager on a CPU compiles nothing, in warm-up or in a generation (tests/test_warmup.py: where it does)
    assert all(r["compiles"] == 0 for r in records)
    nothing = {"count": 0, "seconds": 0.0, "by_kind": {}}
    assert run.compiles == {m: {"warmup": nothing, "generations": nothing} for m in ("ar", "orthrus")}

    table = summarize(records).set_index("method")
    assert table.loc["orthrus", "identical_to_ar"] == 1.0
    assert table.loc["orthrus", "tau"] > 1.5
    assert table.loc["ar", "speedup_vs_ar"] == 1.0
    assert len(load(out)) == len(records)


def test_sampled_generations_have_their_own_seeds_and_replay_from_them(prepared, tmp_path):
    """Each (item, sample, turn) has its own hashed seed, the same for every method, recorded with the
    generation: verify treats generations as independent draws, and a user can replay any one."""
    spec = RunSpec(**{**SPEC, "temperature": 1.0, "samples": 2})
    records = read_records(execute(spec, tmp_path / "run", prepared=prepared, progress=False))
    by_method: dict[str, dict] = {}
    for r in records:
        by_method.setdefault(r["method"], {})[(r["item_id"], r["sample"], r["turn"])] = r["seed"]
    ar, orthrus = by_method["ar"], by_method["orthrus"]
    assert ar == orthrus and len(set(ar.values())) == len(ar) == (2 + 4) * 2
    first = next(r for r in records if r["method"] == "orthrus" and r["turn"] == 0)
    replay = prepared.decoders["orthrus"].generate(
        first["prompt_ids"], 24, SamplingParams(temperature=1.0), seed=first["seed"], stop_token_ids=None
    )
    assert replay.tokens[: len(first["output_ids"])] == first["output_ids"]  # the suite's stops may cut it


def test_resume_after_a_crash_loses_and_repeats_nothing(prepared, tmp_path, monkeypatch):
    out = tmp_path / "run"
    full = keys(
        read_records(execute(RunSpec(**SPEC), tmp_path / "straight", prepared=prepared, progress=False))
    )

    calls = {"n": 0}

    def crashing(request):
        calls["n"] += 1
        return KeyboardInterrupt() if calls["n"] == 3 else None  # Ctrl-C or kill -9 mid-generation

    with monkeypatch.context() as patch:
        failing(prepared.decoders["orthrus"], patch, crashing)
        with pytest.raises(KeyboardInterrupt):
            execute(RunSpec(**SPEC), out, prepared=prepared, progress=False)
    assert load_run(out).status == "interrupted"
    with open(out / RECORDS, "a") as f:
        f.write('{"suite": "tiny-math", "item_id": "tiny-math/math-1", "met')  # a torn last line
    done_before = len(read_records(out))
    assert 0 < done_before < len(full)

    with pytest.raises(RunError, match="--resume"):
        execute(RunSpec(**SPEC), out, prepared=prepared, progress=False)
    # What an earlier session on a GPU could have left in run.json
    earlier = {"warmup": {"count": 3, "seconds": 1.5, "by_kind": {"cudagraph": 3}}}
    save_run(out, dataclasses.replace(load_run(out), compiles={"orthrus": earlier}))
    execute(RunSpec(**SPEC), out, prepared=prepared, resume=True, progress=False)
    assert keys(read_records(out)) == full
    assert all(json.loads(line) for line in (out / RECORDS).read_text().splitlines())
    run = load_run(out)
    assert run.status == "complete"
    # The sessions' compiles add up (this one's, eager on a CPU, are none)
    nothing = {"count": 0, "seconds": 0.0, "by_kind": {}}
    assert run.compiles == {
        "orthrus": {"warmup": earlier["warmup"], "generations": nothing},
        "ar": {"warmup": nothing, "generations": nothing},
    }


def test_a_failing_generation_is_recorded_and_the_run_goes_on(prepared, tmp_path, monkeypatch):
    def oom(request):
        return RuntimeError("CUDA out of memory (simulated)") if len(request.prompt_ids) % 2 else None

    with monkeypatch.context() as patch:
        failing(prepared.decoders["orthrus"], patch, oom)
        records = read_records(execute(RunSpec(**SPEC), tmp_path / "run", prepared=prepared, progress=False))
    errors = [r for r in records if r["status"] == "error"]
    assert errors and all("out of memory" in r["error"] and r["method"] == "orthrus" for r in errors)
    assert sum(r["method"] == "ar" and r["status"] == "ok" for r in records) == 6
    assert "forward" not in vars(prepared.target.model)  # telemetry let go of the model
    assert summarize(records).set_index("method").loc["orthrus", "errors"] == len(errors)

    # --resume alone keeps the errors; --retry-failed runs those units again and keeps the old error records.
    out = tmp_path / "run"
    assert (
        read_records(execute(RunSpec(**SPEC), out, prepared=prepared, resume=True, progress=False)) == records
    )
    with pytest.raises(RunError, match="--resume"):
        execute(RunSpec(**SPEC), out, prepared=prepared, retry_failed=True, progress=False)
    retried = read_records(
        execute(RunSpec(**SPEC), out, prepared=prepared, resume=True, retry_failed=True, progress=False)
    )
    assert {unit_key(r) for r in retried} == {unit_key(r) for r in records}
    assert all(r["status"] == "ok" for r in retried) and len(retried) > len(records)
    set_aside = [json.loads(line) for line in (out / RETRIED).read_text().splitlines()]
    assert set_aside == errors


def test_shards_merge_into_the_whole_run(prepared, tmp_path):
    whole = keys(
        read_records(execute(RunSpec(**SPEC), tmp_path / "whole", prepared=prepared, progress=False))
    )
    parts = []
    for i in range(2):
        shard_prepared = prepare(RunSpec(**SPEC), shard=(i, 2))
        parts.append(
            execute(
                RunSpec(**SPEC), tmp_path / f"s{i}", prepared=shard_prepared, shard=(i, 2), progress=False
            )
        )
    merged = merge(parts, tmp_path / "merged")
    assert keys(read_records(merged)) == whole
    with pytest.raises(RunError, match="cover"):
        merge(parts[:1], tmp_path / "half")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "ar,nonsense"], "nonsense"),
        (["--suite", "no-such-suite"], "no suite named"),
        (["--shard", "3/2"], "--shard"),
        (["--methods", "ar,ar"], "twice"),
    ],
)
def test_bad_input_fails_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["run", "--limit", "1", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


class NvmlError(Exception):
    pass


def test_telemetry_faults_never_fail_a_generation(prepared, tmp_path, monkeypatch):
    """A generation that raises leaves an error record and no running NVML thread; NVML failing mid-run, or
    never giving a handle, leaves its fields None with the reason, never a failed generation."""
    import dataclasses
    import threading

    from test_telemetry import FakeNvml, fake_gpu_handle

    import harness.run.telemetry as telemetry_module

    monkeypatch.setattr(telemetry_module, "nvml_handle", fake_gpu_handle)
    spec = RunSpec(**{**SPEC, "suites": ["tiny-math"]})
    threads = threading.active_count()
    for batch_size in (None, 2):  # alone, and in a batch whose other requests are being measured
        with monkeypatch.context() as patch:
            failing(
                prepared.decoders["orthrus"], patch, lambda r: RuntimeError("CUDA out of memory (simulated)")
            )
            records = read_records(
                execute(
                    dataclasses.replace(spec, batch_size=batch_size),
                    tmp_path / f"a{batch_size}",
                    prepared=dataclasses.replace(prepared, nvml=FakeNvml()),
                )
            )
        assert {r["status"] for r in records if r["method"] == "orthrus"} == {"error"}
        assert all(
            r["power_mean_w"] == 250 for r in records if r["method"] == "ar"
        )  # the sampler still works
        assert threading.active_count() == threads  # no sampler thread left behind by the failures
        assert "step" not in vars(prepared.target.engine)  # the timer let go of the engine

    flaky = FakeNvml()
    power = flaky.nvmlDeviceGetPowerUsage
    flaky.nvmlDeviceGetPowerUsage = lambda h: (
        power(h) if flaky.calls < 3 else (_ for _ in ()).throw(NvmlError("GPU is lost"))
    )
    records = read_records(execute(spec, tmp_path / "b", prepared=dataclasses.replace(prepared, nvml=flaky)))
    assert all(r["status"] == "ok" for r in records)
    failed = [r for r in records if r["nvml_error"] is not None]
    assert failed and all(
        r["nvml_error"] == "NvmlError: GPU is lost" and r["power_mean_w"] is None for r in failed
    )

    absent = FakeNvml()
    absent.nvmlDeviceGetHandleByUUID = lambda uuid: (_ for _ in ()).throw(NvmlError("NotSupported"))
    records = read_records(execute(spec, tmp_path / "c", prepared=dataclasses.replace(prepared, nvml=absent)))
    assert all(r["status"] == "ok" and r["nvml_error"] == "NvmlError: NotSupported" for r in records)
    assert threading.active_count() == threads
