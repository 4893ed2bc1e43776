"""Batched decoding (orthrus_core.batch): every batched method gives each row its own batch-1 output, whatever
shares the batch, at B = 1, 2, 4, 8, static and continuous, with prompts of different lengths and rows that stop
at different times; sampled rows follow their own seeded streams; the runner records the batch context and the
report reads it."""

import json

import pytest
import torch
from conftest import heldout_prompts, random_model, random_prompts

from harness.cli import main
from harness.methods import load_target, make_decoder
from harness.paths import DEFAULT_MODEL
from harness.report.batch import batch_figures
from harness.report.page import build_report
from harness.report.runs import generations, load_runs
from harness.run.runner import execute
from harness.run.spec import RunError, RunSpec
from orthrus_core.batch import BatchKVCache, Request, decode_batch, target_pass
from orthrus_core.sampling import SamplingParams

BATCHED = ["ar", "orthrus", "pld", "eagle3:tree=chain", "dflash"]


@pytest.fixture(scope="module")
def tiny():
    return load_target(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def prompts(tiny):
    """Held-out tiny-family prompts of different lengths, a one-token prompt among them."""
    rendered = heldout_prompts(tiny.tokenizer, 5, 2)
    return rendered + [rendered[0][-1:]]


# Rows stop at different times: by their own stop token, or at limits from 1 (done at the prefill) to 20.
LIMITS = [20, 12, 1, 16, 7, 20, 10, 3]


def requests(prompts, generator_seed=None, device="cpu"):
    out = []
    for i, (p, limit) in enumerate(zip(prompts, LIMITS, strict=True)):
        g = None if generator_seed is None else torch.Generator(device).manual_seed(generator_seed + i)
        out.append(Request(p, limit, [4092], g, key=i))
    return out


def run_batch(decoder, reqs, batch_size, params=SamplingParams(), continuous=False):
    queue = list(reversed(reqs))
    done = decoder.generate_batch(
        lambda: queue.pop() if queue else None, batch_size, params, continuous=continuous
    )
    return {d.request.key: d for d in done}


@pytest.mark.parametrize("spec", BATCHED)
def test_every_row_is_its_own_batch_1_output(tiny, prompts, spec):
    decoder = make_decoder(spec, tiny)
    alone = [
        decoder.generate(p, n, stop_token_ids=[4092]).tokens for p, n in zip(prompts, LIMITS, strict=True)
    ]
    assert len({len(a) for a in alone}) > 3, "the rows should stop at different times"
    for batch_size, continuous in [(1, False), (2, False), (4, False), (8, False), (4, True)]:
        done = run_batch(decoder, requests(prompts), batch_size, continuous=continuous)
        assert sorted(done) == list(range(len(prompts)))
        for i, d in done.items():
            assert d.result.tokens == alone[i], f"{spec} B={batch_size} continuous={continuous}: row {i}"
            assert d.mean_rows <= batch_size
        if spec != "ar":  # ragged acceptance: rows of one batch accept different numbers of drafts
            assert len({n for d in done.values() for n in d.result.accepted}) > 1


@pytest.mark.parametrize("spec", ["ar", "orthrus", "pld"])
def test_sampled_rows_follow_their_own_seeded_streams(tiny, prompts, spec):
    """Each row draws from its own generator in the order its batch-1 decode draws, so a seeded row samples
    exactly what it samples alone (the sampling verdicts then apply per row as they do to batch-1 records)."""
    decoder = make_decoder(spec, tiny)
    params = SamplingParams(temperature=1.0, top_p=0.95)
    alone = [
        decoder.generate(p, n, temperature=1.0, top_p=0.95, seed=100 + i, stop_token_ids=[4092]).tokens
        for i, (p, n) in enumerate(zip(prompts, LIMITS, strict=True))
    ]
    done = run_batch(decoder, requests(prompts, generator_seed=100), 4, params, continuous=True)
    assert [done[i].result.tokens for i in range(len(prompts))] == alone
    if spec == "orthrus":  # sampled drafts leave the acceptance trace that verify audits
        assert any(done[i].result.acceptance_trace for i in done)


def test_a_pass_over_ragged_rows_computes_what_each_row_computes_alone():
    model = random_model(seed=4)
    prompts = random_prompts(3, seed=5, min_len=3, max_len=20)
    cache = BatchKVCache(model.config, 3, 64)
    for b, p in enumerate(prompts):
        model(torch.tensor([p]), 0, cache.row(b))
        cache.lengths[b] = len(p)
    block = torch.tensor([[7, 8, 9, 10]] * 3)
    batched = target_pass(model, cache, block)
    drafted = target_pass(model, cache, block, diffusion=True)
    for b, p in enumerate(prompts):
        alone = model.new_cache(64)
        model(torch.tensor([p]), 0, alone)
        torch.testing.assert_close(batched[b], model(block[:1], len(p), alone)[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            drafted[b], model(block[:1], len(p), alone, diffusion=True)[0], rtol=1e-5, atol=1e-5
        )
    row2 = cache.k[:, 2].clone()
    cache.keep([0, 2])  # row 1 leaves; row 2 moves down into its place
    assert cache.lengths == [len(prompts[0]), len(prompts[2])] and cache.rows == 2
    assert torch.equal(cache.k[:, 1], row2)
    cache.ensure(300)  # grown to the next capacity bucket, the rows kept
    assert cache.capacity == 384 and torch.equal(cache.k[:, 1, :, :64], row2)


def test_the_batch_shrinks_as_rows_finish_and_continuous_refills_them():
    model = random_model(seed=1)
    prompts = random_prompts(6, seed=2)
    limits = [2, 9, 4, 9, 1, 6]
    reqs = [Request(p, n, [], key=i) for i, (p, n) in enumerate(zip(prompts, limits, strict=True))]
    for continuous, expect_full in ((False, False), (True, True)):
        queue = list(reversed(reqs))
        done = list(
            decode_batch(model, None, lambda q=queue: q.pop() if q else None, 3, continuous=continuous)
        )
        rows = {d.request.key: d.mean_rows for d in done}
        assert sorted(rows) == list(range(6))
        # Static: the first batch's longest row ends alone; continuous keeps 3 rows busy while requests last.
        assert (rows[1] == 3.0) == expect_full
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        list(decode_batch(model, None, lambda: None, 0))


def test_a_batched_run_records_the_batch_and_the_report_sweeps_it(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = [
        "run",
        "--suite",
        "tiny-math",
        "--methods",
        "ar,orthrus",
        "--limit",
        "3",
        "--max-new-tokens",
        "16",
    ]
    assert main([*argv, "--batch-sizes", "1,3", "--continuous", "--warmup", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "batch sweep (continuous batching)" in printed
    records = [json.loads(line) for line in (out / "batch-3" / "records.jsonl").read_text().splitlines()]
    assert {r["batch_size"] for r in records} == {3} and all(r["batch_continuous"] for r in records)
    assert all(0 <= r["batch_admitted_s"] < r["batch_finished_s"] for r in records)
    run = json.loads((out / "batch-3" / "run.json").read_text())
    assert run["settings"]["batch_size"] == 3 and run["engine"] == "eager"
    assert json.loads((out / "batch-3" / "verdicts.json").read_text())["verdicts"][0]["verdict"] == "PASS"

    figures = batch_figures(generations(load_runs([out / "batch-1", out / "batch-3"])))
    assert set(zip(figures.method, figures.batch_size, strict=True)) == {
        ("ar", 1),
        ("ar", 3),
        ("orthrus", 1),
        ("orthrus", 3),
    }
    assert (figures.identical_to_smallest_b == 1.0).all()
    assert (figures[figures.method == "ar"].speedup_vs_ar == 1.0).all()
    orthrus = figures[figures.method == "orthrus"]
    assert (orthrus.kv_per_position_vs_ar == 1.0).all()  # it shares the target's cache ...
    assert (orthrus.kv_vs_ar > 1.0).all() and (orthrus.kv_scratch_positions == 16).all()  # ... plus its block
    report = build_report([str(out / "batch-1"), str(out / "batch-3")], tmp_path / "report")
    text = report.markdown()
    assert "## Batching" in text and "B=1 | B=3" in text and "figures/batch.png" in text
    assert "every run here was batched" in text


def test_batched_runs_refuse_what_cannot_batch(tmp_path):
    spec = dict(suites=["tiny-math"], limit=1, warmup=0)
    with pytest.raises(RunError, match="eagle3: tree drafts decode one prompt at a time"):
        execute(RunSpec(methods=["eagle3"], batch_size=2, **spec), tmp_path / "a", progress=False)
    with pytest.raises(RunError, match="batched decoding runs eager"):
        execute(
            RunSpec(methods=["ar"], batch_size=2, engine="compile", **spec), tmp_path / "b", progress=False
        )
    with pytest.raises(RunError, match="--continuous needs --batch-size"):
        execute(RunSpec(methods=["ar"], continuous=True, **spec), tmp_path / "c", progress=False)
    with pytest.raises(RunError, match="does not decode in batches"):
        execute(RunSpec(methods=["ar-hf"], batch_size=2, **spec), tmp_path / "d", progress=False)
    assert not any((tmp_path / name).exists() for name in "abcd")
    assert main(["run", "--batch-sizes", "0,2", "--out", str(tmp_path / "e")]) == 2
