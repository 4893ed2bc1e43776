"""The decode engines (orthrus_core.engine) compute what eager computes, a pass over rows of different lengths
computes what each row computes alone, and the baselines beside them decode what AR decodes."""

from __future__ import annotations

import time
import types

import pytest
import torch
from conftest import random_model, random_prompts

from harness.methods import make_decoder
from harness.methods.target import Target, load_target
from orthrus_core.attention import Visibility
from orthrus_core.compiled import compilations
from orthrus_core.engine import (
    Engine,
    EngineError,
    bucket,
    check_engine,
    row_bucket,
    static_pass,
)
from orthrus_core.loop import Request, decode, generate
from orthrus_core.model import KVCache
from orthrus_core.official_loop import generate_orthrus_dynamic_cache
from orthrus_core.params import GREEDY, SamplingParams
from orthrus_core.tree import ancestors

# ------------------------------------------------------------------------------ compile against eager, R rows


def micro_prompts() -> list[list[int]]:
    """Four prompts of 6 to 13 tokens that repeat themselves (prompt lookup finds drafts)."""
    return [p + p[:3] for p in random_prompts(4, seed=4, min_len=3, max_len=10)]


LIMITS = [16, 11, 16, 6]  # rows leave at different times: a batch of 4 shrinks through the row buckets
SAMPLED = SamplingParams(temperature=1.0, top_p=0.9)


def outputs(engine, drafter, rows, params) -> list[list[int]]:
    prompts = micro_prompts()
    queue = [
        Request(p, n, [], None if params.greedy else torch.Generator().manual_seed(10 + i), key=i)
        for i, (p, n) in enumerate(zip(prompts, LIMITS, strict=True))
    ]
    queue.reverse()
    done = decode(engine, drafter, lambda: queue.pop() if queue else None, rows, params, continuous=True)
    results = {d.request.key: d.result.tokens for d in done}
    return [results[i] for i in range(len(prompts))]


def test_compiled_decoding_is_token_identical_to_eager_for_every_batched_method(micro):
    """Every batched method, greedy and seeded-sampled, at R = 4, 2 and 1 on one compile engine (autotuning
    off: inductor's default kernels; autotuning takes minutes per shape) against eager alone (R = 1). R = 4 runs
    first: the engine's cache keeps the most rows asked for, so the smaller batches meet shapes it compiled."""
    target, drafters = micro
    eager = Engine(target)
    compiled = Engine(target, "compile", autotune=False)
    before, t0 = compilations(), time.perf_counter()
    for params in (GREEDY, SAMPLED):
        for name, drafter in drafters.items():
            reference = outputs(eager, drafter, 1, params)
            for rows in (4, 2, 1):
                assert outputs(eager, drafter, rows, params) == reference, (name, rows, params)
                assert outputs(compiled, drafter, rows, params) == reference, (name, "compile", rows, params)
            if params.greedy:  # every method is lossless: AR's tokens
                assert reference == outputs(eager, None, 1, GREEDY), name
    graphs = compilations() - before
    print(f"compile against eager: {graphs} graphs, {time.perf_counter() - t0:.0f} s")
    assert graphs > 0  # the static passes were compiled, not run eager
    (cache,) = compiled.caches.values()  # one cache for every decode, with the most rows asked for
    assert cache.rows == 4


# ------------------------------------------------------------------------------------------ one pass, R rows


def prefilled(engine, prompts, rows=None) -> KVCache:
    cache = engine.new_cache(rows or len(prompts), 64)
    for b, p in enumerate(prompts):
        engine.prefill(cache, b, torch.tensor(p))
        cache.lengths.append(len(p))
    return cache


def alone(model, prompt, block, **options) -> torch.Tensor:
    """The pass over `block` [T] after `prompt` in a cache of its own (the model's plain pass)."""
    cache = model.new_cache(64)
    model(torch.tensor([prompt]), 0, cache)
    return model(block[None], len(prompt), cache, **options)[0]


def tree_options(prompt, parents) -> dict:
    """A row's tree pass alone: positions after the prompt by depth; the prefix plus each node's ancestors."""
    anc = ancestors(parents)
    visible = Visibility.after([len(prompt)], len(parents), "pattern", window=anc[None])
    return dict(positions=(len(prompt) + anc.sum(-1) - 1)[None], visible=visible)


# Three rows of different lengths; each row its own block, and its own tree over that block.
BLOCKS = torch.tensor([[7, 8, 9, 10], [11, 12, 13, 14], [15, 16, 17, 18]])
PARENTS = torch.tensor([[-1, 0, 0, 1], [-1, 0, 1, 2], [-1, 0, 0, 0]])
KINDS = ["ar", "diffusion", "tree"]


def step_options(kind) -> dict:
    anc = ancestors(PARENTS)
    return {"ar": {}, "diffusion": dict(diffusion=True), "tree": dict(depth=anc.sum(-1) - 1, ancestors=anc)}[
        kind
    ]


def expected(model, prompt, b, kind):
    options = {"ar": {}, "diffusion": dict(diffusion=True), "tree": tree_options(prompt, PARENTS[b])}[kind]
    return alone(model, prompt, BLOCKS[b], **options)


@pytest.fixture(scope="module")
def ragged():
    model = random_model(seed=4)
    prompts = random_prompts(3, seed=5, min_len=3, max_len=20)
    assert len({len(p) for p in prompts}) == 3
    return model, prompts


@pytest.mark.parametrize("kind", KINDS)
def test_a_step_over_ragged_rows_computes_what_each_row_computes_alone(ragged, kind):
    model, prompts = ragged
    engine = Engine(model)
    cache = prefilled(engine, prompts)
    out = engine.step(cache, BLOCKS, **step_options(kind))
    for b, p in enumerate(prompts):
        torch.testing.assert_close(out[b], expected(model, p, b, kind), rtol=1e-5, atol=1e-5)
    assert cache.lengths == [len(p) for p in prompts]  # a step does not move the lengths


@pytest.mark.parametrize("kind", KINDS)
def test_the_static_pass_with_padding_rows_computes_what_each_row_computes_alone(ragged, kind, monkeypatch):
    """static_pass over 4 rows, the fourth a padding row (what a static engine runs for 3 active rows): each
    real row's logits are its own alone and its K/V land where eager writes them. Then the same through a static
    engine's own padding (row_bucket), its pass run uncompiled."""
    model, prompts = ragged
    eager = prefilled(Engine(model), prompts)
    eager_out = Engine(model).step(eager, BLOCKS, **step_options(kind))
    static = KVCache(model.config, 4, eager.capacity)
    static.copy_rows_from(prefilled(Engine(model), prompts))
    assert row_bucket(3, 4) == 4
    ids = torch.cat([BLOCKS, torch.zeros(1, 4, dtype=torch.long)])
    slots = torch.tensor([len(p) for p in prompts] + [0])[:, None] + torch.arange(4)
    options = step_options(kind)
    positions = (
        slots if kind != "tree" else slots[:, :1] + torch.cat([options["depth"], torch.zeros(1, 4)]).long()
    )
    anc = None if kind != "tree" else torch.cat([options["ancestors"], torch.eye(4, dtype=torch.bool)[None]])
    got = static_pass(ids, slots, positions, anc, model, static.k, static.v, kind == "diffusion", ())
    for b, p in enumerate(prompts):
        torch.testing.assert_close(got[b], expected(model, p, b, kind), rtol=1e-5, atol=1e-5)
        end = len(p) + 4
        torch.testing.assert_close(static.k[:, b, :, :end], eager.k[:, b, :, :end])
        torch.testing.assert_close(static.v[:, b, :, :end], eager.v[:, b, :, :end])

    monkeypatch.setattr("orthrus_core.engine.Compiled", lambda fn, kind: fn)  # the static path, uncompiled
    engine = Engine(model, "compile", autotune=False)
    engine.new_cache(4, 64)  # the engine's cache holds 4 rows: 3 active rows run as a bucket of 4
    cache = prefilled(engine, prompts, rows=3)
    assert cache.rows == 4
    out = engine.step(cache, BLOCKS, **options)
    assert out.shape == eager_out.shape
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-5)


def test_rows_leave_in_place_and_the_cache_grows_to_the_next_bucket(ragged):
    model, prompts = ragged
    engine = Engine(model)
    cache = prefilled(engine, prompts)
    row2, address = cache.k[:, 2].clone(), cache.k.data_ptr()
    cache.keep([0, 2])  # row 1 leaves; row 2 moves down into its place
    assert cache.lengths == [len(prompts[0]), len(prompts[2])] and cache.rows == 3
    assert torch.equal(cache.k[:, 1], row2) and cache.k.data_ptr() == address  # the buffers stay
    assert engine.grow(cache, cache.capacity) is cache
    grown = engine.grow(cache, 300)  # grown to the next capacity bucket, the rows kept
    assert grown.capacity == 384 and torch.equal(grown.k[:, 1, :, : cache.capacity], row2)
    assert grown.lengths == cache.lengths


@pytest.mark.parametrize("diffusion", [False, True])
def test_the_static_pass_computes_the_eager_pass(diffusion):
    """Writing K/V at slot tensors and attending over the whole (zeroed) cache under the slot mask gives the
    eager pass's logits and cache contents, for AR steps, blocks and a tree's own mask."""
    model = random_model(seed=1)
    prompt = torch.tensor([random_prompts(1, seed=7, min_len=20)[0]])
    eager = model.new_cache(64)
    model(prompt, 0, eager)
    static = model.new_cache(64)
    static.k.zero_(), static.v.zero_()
    model(prompt, 0, static)
    start, block = prompt.shape[1], prompt[:, :5]
    expected = model(block, start, eager, diffusion=diffusion)
    slots = torch.arange(start, start + 5)[None]
    got = static_pass(block, slots, slots, None, model, static.k, static.v, diffusion, ())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(static.k[:, :, :, : start + 5], eager.k[:, :, :, : start + 5])
    parents = torch.tensor([-1, 0, 1, 0, 3])  # node 3 is not a descendant of node 1
    options = tree_options(prompt[0].tolist(), parents)
    assert not options["visible"].dense(64)[0, 0, 3, start + 1]
    expected = model(block, start, eager, **options)
    got = static_pass(
        block, slots, options["positions"], ancestors(parents)[None], model, static.k, static.v, False, ()
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_engines_are_refused_where_they_cannot_run(monkeypatch):
    with pytest.raises(EngineError, match="cudagraph needs a CUDA device.*--engine compile or eager"):
        check_engine("cudagraph", "cpu")
    with pytest.raises(EngineError, match="unknown engine 'fast'"):
        check_engine("fast", "cpu")
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(EngineError, match="needs a C\\+\\+ compiler.*apt-get install -y g\\+\\+"):
        check_engine("compile", "cpu")
    assert check_engine("auto", "cpu") == "eager"


def test_a_static_engine_runs_only_on_its_own_cache():
    model = random_model(seed=0, num_hidden_layers=1)
    engine = Engine(model, "compile", autotune=False)
    cache = engine.new_cache(2, 300)
    assert cache.capacity == bucket(300) == 384 and cache.rows == 2
    assert engine.new_cache(1, 300) is cache  # the same buffers, with the most rows asked for
    assert engine.new_cache(4, 300).rows == 4
    foreign = KVCache(model.config, 1, 384)
    foreign.lengths = [1]
    with pytest.raises(EngineError, match="its own cache"):
        engine.step(foreign, torch.zeros(1, 1, dtype=torch.long))
    eager = Engine(model)
    cache = eager.new_cache(1, 10)
    cache.lengths = [3]
    with pytest.raises(ValueError, match="2 rows of ids for a cache with 1 active rows"):
        eager.step(cache, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="cache capacity 256 < 259 positions needed"):
        eager.step(cache, torch.zeros(1, 256, dtype=torch.long))


def test_buckets_grow_by_at_most_half_and_hold_what_is_asked():
    sizes = [bucket(n) for n in range(1, 50_000, 97)]
    assert all(s >= n for s, n in zip(sizes, range(1, 50_000, 97), strict=True))
    distinct = sorted(set(sizes))
    assert distinct[:5] == [256, 384, 512, 768, 1024]
    assert all(b / a <= 1.5 for a, b in zip(distinct, distinct[1:], strict=False))
    assert [row_bucket(r, 8) for r in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    assert row_bucket(5, 6) == 6  # never more rows than the cache holds


@pytest.mark.parametrize("block_size", [2, 5, 16])
def test_the_dynamic_cache_orthrus_equals_ar(block_size):
    model = random_model(seed=3)
    engine = Engine(model)
    for prompt in random_prompts(6, seed=5):
        ar = generate(engine, None, prompt, 40)
        dynamic = generate_orthrus_dynamic_cache(model, prompt, 40, block_size=block_size)
        assert dynamic.tokens == ar.tokens and dynamic.stop_reason == ar.stop_reason
        assert dynamic.ar_forwards == dynamic.draft_forwards == dynamic.cycles


def test_the_baseline_methods_decode_as_ar_and_refuse_what_they_cannot():
    target = Target.of(random_model(seed=0, num_hidden_layers=1), "micro")
    prompts = random_prompts(3, seed=2, min_len=3)
    ar = [make_decoder("ar", target).generate(p, 16).tokens for p in prompts]
    for spec in ("ar-hf:cache=static", "orthrus:cache=dynamic"):
        decoder = make_decoder(spec, target)
        assert [decoder.generate(p, 16).tokens for p in prompts] == ar, spec
        assert not decoder.batched
    official = make_decoder("orthrus:cache=dynamic", target)
    assert official.greedy_only and make_decoder("orthrus", target).batched
    with pytest.raises(ValueError, match="decodes greedily only"):
        official.generate(prompts[0], 4, SamplingParams(temperature=1.0), seed=0)
    with pytest.raises(ValueError, match="cache must be one of static, dynamic"):
        make_decoder("orthrus:cache=paged", target)


def test_load_target_installs_the_engine_it_is_asked_for():
    target = load_target(None, engine="auto")
    assert target.engine.mode == "eager" and target.engine.model is target.model  # eager on a CPU
    with pytest.raises(EngineError, match="cudagraph"):
        load_target(None, engine="cudagraph")


@pytest.mark.parametrize("tied", [True, False])
def test_weight_bytes_counts_what_an_ar_step_streams(tied):
    from harness.bench.engine_bench import weight_bytes

    model = random_model(tie_word_embeddings=tied)
    embed = model.model.embed_tokens.weight
    assert (model.lm_head.weight is embed) == tied
    # Streamed: every AR-view tensor but the input embedding, whose rows are only gathered; lm_head reads all of
    # its weight, which under tied embeddings is the embedding (listed under both names, counted once).
    streamed = {
        name: p
        for name, p in model.named_parameters(remove_duplicate=False)
        if "_diff" not in name and name != "model.embed_tokens.weight"
    }
    assert "lm_head.weight" in streamed and not any("_diff" in name for name in streamed)
    naive = sum(p.numel() for name, p in model.named_parameters() if "_diff" not in name)  # tied once
    for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
        model = model.to(dtype)
        assert weight_bytes(model) == size * sum(p.numel() for p in streamed.values())
        assert size * naive - weight_bytes(model) == (0 if tied else size * embed.numel())


def test_the_bench_random_model_has_clear_greedy_decisions():
    """Unit norms (init_weights), not N(0, 0.02) ones: logits spread over nats, a clear argmax, varied output."""
    from harness.bench.engine_bench import random_model as bench_model

    model = bench_model("small", torch.float32, "cpu")
    assert all(
        (p == 1).all()
        for name, p in model.named_parameters()
        if name.endswith("norm.weight") or "norm_diff" in name
    )
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, model.config.vocab_size - 1, (64,), generator=g)
    with torch.inference_mode():
        logits = model(ids[None], 0, KVCache(model.config, 1, 64, dtype=torch.float32, device="cpu"))[0]
    at = logits[[7, 15, 31, 63]]
    top2 = at.topk(2, dim=-1).values
    assert (at.std(dim=-1) > 0.5).all(), at.std(dim=-1)  # nats: N(0, 0.02) norms give 0.006
    assert (top2[:, 0] - top2[:, 1] > 0.05).all(), top2  # far above float32 (and bf16) rounding of the logits
    tokens = make_decoder("ar", Target.of(model, "random small")).generate(ids[:32].tolist(), 32).tokens
    assert len(tokens) == 32 and len(set(tokens)) >= 16, tokens  # N(0, 0.02) norms: two tokens, repeated


def test_a_generation_that_compiled_is_run_again_before_it_is_recorded(monkeypatch):
    """A request decoded alone whose decode compiled is decoded again, from a fresh request with the same seed,
    and the record's measure is the second decode's, which still says that the first one compiled."""
    import dataclasses

    from harness.run import runner
    from orthrus_core.loop import Request

    counts = iter([0, 1, 1, 1])  # the first decode compiles (0 -> 1), the second does not
    monkeypatch.setattr(runner, "compilations", lambda: next(counts))
    seeds = []

    def decode(next_request):  # one request's decode, as a decoder's `decode` yields it
        request = next_request()
        seeds.append(request.generator)
        yield types.SimpleNamespace(request=request)

    class Telemetry:
        def open(self):
            pass

        def admit(self, key):
            pass

        def finish(self, key):
            return {"measured": len(seeds)}

        def close(self):
            pass

    meter = runner.Meter(Telemetry(), torch.device("cpu"))
    fresh = lambda request: dataclasses.replace(request, generator=7)  # noqa: E731 (the seed made again)
    request = Request([1, 2], 4, generator=7)
    (done,) = meter.rerunning(meter.measured(decode), fresh)(lambda: request)
    assert seeds == [7, 7] and done.request is not request  # decoded twice, the second time anew
    measure = meter.measures[id(done.request)]
    assert measure.telemetry == {"measured": 2}  # the second decode's
    assert measure.compiles == 1  # the record says its first attempt compiled


def test_a_capture_measures_its_graph_pool_after_the_caches_emptying(monkeypatch):
    """torch.cuda.graph empties the allocator's cache as it starts: after a 32K prefill that frees gigabytes of
    cached blocks, reading the reserved bytes before it would subtract them from the pool (a negative pool, a
    peak understated by GBs). Faked: 3 GB cached and freed by the capture's emptying, a 200 MB pool."""
    import contextlib

    from orthrus_core import engine as engine_module

    state = {"reserved": 10 << 30, "cached": 3 << 30}

    def empty_cache():
        state["reserved"] -= state["cached"]
        state["cached"] = 0

    @contextlib.contextmanager
    def graph(g, pool=None):
        empty_cache()  # what torch.cuda.graph.__enter__ does
        yield
        state["reserved"] += 200 << 20  # the graph's intermediates, in its pool

    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", object)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: state["reserved"])
    monkeypatch.setattr(torch.cuda, "graph", graph)
    captured = engine_module._Graph.__new__(engine_module._Graph)
    captured.run = lambda: torch.zeros(2)
    captured._capture(None, torch.device("cuda"))
    assert captured.pool_bytes == 200 << 20
