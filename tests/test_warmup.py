"""Warm-up compiles every pass shape a run reaches before its first timed generation, run.json and the records
count the compiles, and the report says where a generation still compiled. The CUDA route is rehearsed on a CPU
(orthrus_core.rehearsal), so graphs are really compiled and captured, as on a GPU."""

from __future__ import annotations

from harness.methods import make_decoder
from harness.methods.base import SHAPE_TOKENS, LoopDecoder
from harness.methods.target import Target
from harness.report.page import build_report
from harness.run.runner import execute
from harness.run.spec import RunSpec
from harness.store import load_run, read_records
from orthrus_core import loop
from orthrus_core.engine import bucket
from orthrus_core.rehearsal import rehearsal

# Tiny-code items whose first turns (116, 91, 92 and 102 prompt tokens, + 140 new + the AR step's one node)
# need two cache buckets, 384 (the first) and 256; each answer stops after a few tokens.
SPEC = dict(suites=["tiny-code"], methods=["ar"], max_new_tokens=140, warmup=1)


def test_a_loop_decoder_warms_up_every_bucket_only_where_its_passes_compile(model, monkeypatch):
    """Eager on a CPU: the repeats alone, as before. Compiling (here the rehearsed CUDA route): the repeats in a
    bucket the run needs, then one decode per (capacity bucket, row bucket) of short requests reserving it."""
    decodes = []

    def decode(engine, drafter, next_request, rows, params, *, continuous, rule):
        requests = list(iter(next_request, None))
        decodes.append((rows, [(len(r.prompt_ids), r.max_new_tokens, r.capacity) for r in requests]))
        return iter(())

    monkeypatch.setattr(loop, "decode", decode)
    prompt = list(range(1, 300))
    positions = [100, 300, 120]  # prompt + max_new_tokens of each first turn: buckets 256, 384, 256
    eager = make_decoder("ar", Target.of(model, "random", engine="eager"))
    eager.warm_up(prompt, 32, repeats=2, rows=3, positions=positions)
    assert decodes == [(3, [(299, 32, None)] * 3)] * 2
    decodes.clear()
    with rehearsal():
        static = make_decoder("ar", Target.of(model, "random"))
        static.warm_up(prompt, 32, repeats=1, rows=3, positions=positions)
    # A prompt that leaves the bucket room for the request's tokens and the AR step's one node
    short = 256 - SHAPE_TOKENS - 1
    assert decodes == [
        (3, [(256 - 32 - 1, 32, 256)] * 3),
        *[(3, [(short, SHAPE_TOKENS, 256)] * count) for count in (1, 2, 3)],
        *[(3, [(299, SHAPE_TOKENS, 384)] * count) for count in (1, 2, 3)],
    ]


def test_warm_up_compiles_every_shape_a_batched_run_reaches(tmp_path):
    """Three rows, four items: the first batch runs 3 rows in the 384 bucket, the second 1 row in the 256."""
    with rehearsal():
        out = execute(RunSpec(**SPEC, limit=4, batch_size=3), tmp_path / "run", progress=False)
    records = read_records(out)
    assert [bucket(r["prompt_tokens"] + 140 + 1) for r in records] == [384, 256, 256, 256]
    compiles = load_run(out).compiles["ar"]
    # One AR step graph per (capacity bucket, row bucket): 256 and 384 by 1, 2 and 3 rows
    assert compiles["warmup"]["by_kind"]["cudagraph"] == 6 and compiles["warmup"]["seconds"] > 0
    assert compiles["generations"] == {"count": 0, "seconds": 0.0, "by_kind": {}}
    assert [r["compiles"] for r in records] == [0, 0, 0, 0]


def test_a_generation_that_compiled_says_so_and_the_report_notes_it(tmp_path, monkeypatch):
    """Warm-up defeated: alone, the generation compiles and is run again (its time the rerun's); batched, the
    records of the batch that compiled hold it in their times. Both say so, and so does the report."""
    monkeypatch.setattr(LoopDecoder, "warm_up", lambda self, *args, **kwargs: None)
    with rehearsal():
        alone = execute(RunSpec(**SPEC, limit=1), tmp_path / "alone", progress=False)
        batched = execute(RunSpec(**SPEC, limit=2, batch_size=2), tmp_path / "batched", progress=False)
    for out in (alone, batched):
        # Batched: both rows were in the batch when it compiled
        assert all(r["compiles"] > 0 for r in read_records(out))
        compiles = load_run(out).compiles["ar"]
        assert compiles["warmup"]["count"] == 0 and compiles["generations"]["by_kind"]["cudagraph"] > 0

    text = build_report([str(alone), str(batched)], tmp_path / "report").markdown()
    assert (
        f"{alone}: 1 record(s) of ar met a pass shape warm-up had not compiled" in text
        and "each was run again before it was recorded, so their times are the reruns'" in text
    )
    assert f"{batched}: 2 record(s) of ar met a pass shape warm-up had not compiled" in text
    assert "batched, so their times include the compilation" in text
