"""One vLLM engine alive at a time (harness.run.runner: `prepare`, `decode_all`'s phases): vLLM methods played by
a stand-in that logs its engine's start and close and every decode, decoding by the project's `ar` in this process
(a real engine costs half a minute to start; tests/test_vllm.py runs them). Every run is held to the same rule:
at most one engine alive, a vLLM method decoding (warm-up included) only while its own engine is alive, the
project's methods only while none is, and none left alive however the run ends."""

from __future__ import annotations

import pytest

import harness.run.runner as runner
from harness.method_spec import MethodSpec
from harness.methods import backend_of, make_decoder
from harness.methods.base import Decoder
from harness.run.runner import execute, prepare
from harness.run.spec import RunSpec
from harness.store import load_run, read_records

VLLM = ["vllm-ar", "vllm-dflash"]
SPEC = dict(
    suites=["tiny-math", "tiny-chat"],
    # the vLLM methods listed first and between the project's
    methods=["vllm-ar", "ar", "vllm-dflash", "orthrus"],
    limit=2,
    max_new_tokens=12,
    warmup=1,
)


class StandIn(Decoder):
    """A vLLM method's decoder without vLLM: an engine that is started and closed (each change logged, as
    VLLMDecoder starts one engine at most and closes only a running one), decoding by the project's `ar`."""

    def __init__(self, target, label: str, ar: Decoder, log: list):
        super().__init__(target, MethodSpec.of(label), {})
        self.ar, self.log, self.running = ar, log, False

    def start(self) -> None:
        if not self.running:
            self.running = True
            self.log.append(("start", self.label))

    def close(self) -> None:
        if self.running:
            self.running = False
            self.log.append(("close", self.label))

    def decode(self, next_request, *args, **kwargs):
        self.log.append(("decode", self.label))
        yield from self.ar.decode(next_request, *args, **kwargs)


def logged(decoder: Decoder, log: list) -> Decoder:
    """A decoder of the project's engine whose decodes (its warm-up's too) are logged."""
    decode = decoder.decode

    def each(next_request, *args, **kwargs):
        log.append(("decode", decoder.label))
        yield from decode(next_request, *args, **kwargs)

    decoder.decode = each
    return decoder


def lifetimes(log: list) -> set:
    """Replays `log`, asserting the rule of the module docstring; -> the engines alive at its end."""
    alive = set()
    for event, label in log:
        if event == "start":
            assert not alive, f"{label} started while {alive} was alive"
            alive.add(label)
        elif event == "close":
            alive.remove(label)
        else:
            own = {label} if backend_of(label) == "vllm" else set()
            assert alive == own, f"{label} decoded beside {alive}"
    return alive


@pytest.fixture(scope="module")
def run():
    """The run prepared with the stand-ins, and the log: what prepare did is in it."""
    log = []

    def made(label, target):
        if backend_of(label) == "vllm":
            return StandIn(target, label, make_decoder("ar", target), log)
        return logged(make_decoder(label, target), log)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "make_decoder", made)
        prepared = prepare(RunSpec(**SPEC))
    return prepared, log


def outputs(records: list[dict]) -> dict:
    return {(r["method"], r["item_id"], r["turn"]): r["output_ids"] for r in records}


def test_prepare_starts_and_closes_each_vllm_engine_in_turn(run):
    """What vLLM refuses fails in prepare: each engine started once there, and shut down before the next."""
    prepared, log = run
    assert log == [
        ("start", "vllm-ar"),
        ("close", "vllm-ar"),
        ("start", "vllm-dflash"),
        ("close", "vllm-dflash"),
    ]


def test_a_run_decodes_the_vllm_methods_each_in_its_own_phase_after_the_projects(run, tmp_path):
    prepared, log = run
    del log[:]
    records = read_records(execute(RunSpec(**SPEC), tmp_path / "run", prepared=prepared, progress=False))
    assert lifetimes(log) == set()
    assert [e for e in log if e[0] != "decode"] == [
        ("start", "vllm-ar"),
        ("close", "vllm-ar"),
        ("start", "vllm-dflash"),
        ("close", "vllm-dflash"),
    ]
    # The project's methods: a warm-up each, then interleaved item by item as before (each turn a decode: 2 math
    # items of 1 turn, 2 chat items of 2); then each vLLM method's warm-up and its units
    turns, units = (1, 1, 2, 2), 6
    interleaved = [m for t in turns for m in ("ar", "orthrus") for _ in range(t)]
    expected = ["ar", "orthrus", *interleaved] + ["vllm-ar"] * (1 + units) + ["vllm-dflash"] * (1 + units)
    assert [label for event, label in log if event == "decode"] == expected
    assert all(r["status"] == "ok" for r in records) and len(records) == 4 * units
    got = outputs(records)
    for (method, item, turn), ids in got.items():
        assert ids == got[("ar", item, turn)], (method, item, turn)
    assert {r["backend"] for r in records if r["method"] in VLLM} == {"vllm"}


def test_a_batched_run_keeps_the_listed_order_one_engine_at_a_time(run, tmp_path):
    prepared, log = run
    del log[:]
    spec = RunSpec(**{**SPEC, "batch_size": 2})
    records = read_records(execute(spec, tmp_path / "run", prepared=prepared, progress=False))
    assert lifetimes(log) == set()
    order = [label for _, label in log]
    assert [label for i, label in enumerate(order) if label not in order[:i]] == SPEC["methods"]
    assert all(r["status"] == "ok" and r["batch_size"] == 2 for r in records)


def test_an_interrupted_run_closes_its_engine_and_its_resume_starts_only_the_unfinished_ones(
    run, tmp_path, monkeypatch
):
    prepared, log = run
    out = tmp_path / "run"
    straight = read_records(
        execute(RunSpec(**SPEC), tmp_path / "straight", prepared=prepared, progress=False)
    )
    del log[:]
    stand_in = prepared.decoders["vllm-dflash"]
    decode, calls = stand_in.decode, []

    def interrupted(next_request, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C in the middle of vllm-dflash's units (its warm-up was the first)
            raise KeyboardInterrupt
        yield from decode(next_request, *args, **kwargs)

    monkeypatch.setattr(stand_in, "decode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        execute(RunSpec(**SPEC), out, prepared=prepared, progress=False)
    assert lifetimes(log) == set() and log[-1] == ("close", "vllm-dflash")
    assert load_run(out).status == "interrupted"

    monkeypatch.undo()
    del log[:]
    execute(RunSpec(**SPEC), out, prepared=prepared, resume=True, progress=False)
    assert lifetimes(log) == set()
    assert [e for e in log if e[0] != "decode"] == [("start", "vllm-dflash"), ("close", "vllm-dflash")]
    assert {label for _, label in log} == {"vllm-dflash"}  # the finished methods: not even a warm-up
    records = read_records(out)
    assert outputs(records) == outputs(straight) and load_run(out).status == "complete"
