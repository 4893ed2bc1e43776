"""The decode engines (orthrus_core.engine) compute what eager computes, and the baselines beside them decode
what AR decodes."""

from __future__ import annotations

import pytest
import torch
from conftest import random_model, random_prompts

from harness.bench.engine import weight_bytes
from harness.methods import Target, make_decoder
from harness.methods.target import load_target
from orthrus_core import generate_ar, generate_orthrus
from orthrus_core.engine import EngineError, bucket, check_engine, set_engine, static_pass
from orthrus_core.reference import generate_orthrus_dynamic_cache
from orthrus_core.sampling import SamplingParams


def test_compiled_decoding_is_token_identical_to_eager_greedy_and_sampled():
    # One layer keeps the compilation short; inductor's default kernels (autotuning takes minutes per shape).
    model = random_model(seed=2, num_hidden_layers=1)
    prompts = random_prompts(3, seed=4, min_len=3)
    sampled = SamplingParams(temperature=1.0, top_p=0.9)

    def decode():
        greedy = [(generate_ar(model, p, 24).tokens, generate_orthrus(model, p, 24).tokens) for p in prompts]
        draws = [
            generate_orthrus(model, p, 24, sampled, generator=torch.Generator().manual_seed(i)).tokens
            for i, p in enumerate(prompts)
        ]
        return greedy, draws

    eager = decode()
    set_engine(model, "compile", autotune=False)
    compiled = decode()
    assert compiled == eager
    assert all(ar == orthrus for ar, orthrus in compiled[0])


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
    slots = torch.arange(start, start + 5)
    got = static_pass(model, block, slots, slots[None], None, static.k, static.v, diffusion, ())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(static.k[:, :, :, : start + 5], eager.k[:, :, :, : start + 5])
    tree_mask = torch.ones(5, start + 5, dtype=torch.bool).tril(start)
    tree_mask[3, start + 1] = False  # node 3 is not a descendant of node 1
    expected = model(block, start, eager, mask=tree_mask)
    padded = torch.nn.functional.pad(tree_mask, (0, 64 - start - 5), value=False)
    got = static_pass(model, block, slots, slots[None], padded, static.k, static.v, False, ())
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
    model = set_engine(random_model(seed=0, num_hidden_layers=1), "compile", autotune=False)
    assert model.new_cache(300).capacity == bucket(300) == 384
    foreign = torch.zeros(1, 1, dtype=torch.long)
    from orthrus_core.model import KVCache

    with pytest.raises(EngineError, match="its own cache"):
        model(foreign, 1, KVCache(model.config, 384))


def test_buckets_grow_by_at_most_half_and_hold_what_is_asked():
    sizes = [bucket(n) for n in range(1, 50_000, 97)]
    assert all(s >= n for s, n in zip(sizes, range(1, 50_000, 97), strict=True))
    distinct = sorted(set(sizes))
    assert distinct[:5] == [256, 384, 512, 768, 1024]
    assert all(b / a <= 1.5 for a, b in zip(distinct, distinct[1:], strict=False))


@pytest.mark.parametrize("block_size", [2, 5, 16])
def test_the_dynamic_cache_orthrus_equals_ar(block_size):
    model = random_model(seed=3)
    for prompt in random_prompts(6, seed=5):
        ar = generate_ar(model, prompt, 40)
        dynamic = generate_orthrus_dynamic_cache(model, prompt, 40, block_size=block_size)
        assert dynamic.tokens == ar.tokens and dynamic.stop_reason == ar.stop_reason
        assert dynamic.ar_forwards == dynamic.draft_forwards == dynamic.cycles


def test_the_baseline_methods_decode_as_ar_and_refuse_what_they_cannot():
    target = Target(random_model(seed=0, num_hidden_layers=1), "micro")
    prompts = random_prompts(3, seed=2, min_len=3)
    ar = [make_decoder("ar", target).generate(p, 16).tokens for p in prompts]
    for spec in ("ar-hf:cache=static", "orthrus:cache=dynamic"):
        decoder = make_decoder(spec, target)
        assert [decoder.generate(p, 16).tokens for p in prompts] == ar, spec
    with pytest.raises(ValueError, match="decodes greedily only"):
        make_decoder("orthrus:cache=dynamic", target).generate(prompts[0], 4, temperature=1.0, seed=0)
    with pytest.raises(ValueError, match="cache must be one of static, dynamic"):
        make_decoder("orthrus:cache=paged", target)


def test_load_target_installs_the_engine_it_is_asked_for():
    assert load_target(None, engine="auto").model.engine is None  # eager on a CPU
    with pytest.raises(EngineError, match="cudagraph"):
        load_target(None, engine="cudagraph")


def test_weight_bytes_counts_the_ar_view_once():
    model = random_model()
    ar_params = sum(p.numel() for n, p in model.named_parameters() if "_diff" not in n)
    assert weight_bytes(model) == 4 * ar_params
    assert weight_bytes(model.to(torch.bfloat16)) == 2 * ar_params


def test_a_generation_that_compiled_is_run_again_before_it_is_recorded(monkeypatch):
    from harness.run import runner

    counts = iter([0, 1, 1, 1])  # the first call compiles (0 -> 1), the second does not
    monkeypatch.setattr(runner, "compilations", lambda: next(counts))
    calls = []

    class Decoder:
        def generate(self, prompt_ids, max_new_tokens, **kwargs):
            calls.append(kwargs["seed"])
            return "result"

    class Telemetry:
        def start(self):
            pass

        def stop(self):
            return {"measured": len(calls)}

    sink = []
    generate = runner._measured(Decoder(), Telemetry(), torch.device("cpu"), sink)
    assert generate([1, 2], 4, seed=7) == "result"
    assert calls == [7, 7] and len(sink) == 1 and sink[0][1] == {"measured": 2}
