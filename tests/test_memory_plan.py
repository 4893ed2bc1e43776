"""Memory planned before a run (orthrus_core.memory, harness.methods.plan): the meta-device weight count is the
loaded model's, the KV figures are the caches the engine and the drafters allocate, the plan bounds the peak
torch's CPU allocator records for a real decode (and stays close to it), `inspect --context` plans a named
shape offline, and `run` and the lm-eval adapter refuse, before generating, what does not fit."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import random_model, two_layer_micro_config
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from harness.cli import main
from harness.methods import load_target, make_decoder
from harness.methods.plan import decoding_for, plan_loaded, plan_target
from harness.options import OptionError
from harness.paths import default_model
from harness.run.runner import prepare
from harness.run.spec import RunSpec
from orthrus_core import memory
from orthrus_core.checkpoint import load_model, save_model
from orthrus_core.engine import Engine, bucket
from orthrus_core.loop import Request
from orthrus_core.model import OrthrusForCausalLM
from orthrus_core.params import SamplingParams

LOOP_METHODS = ("ar", "orthrus", "eagle3", "eagle3:tree=chain:depth=3", "dflash", "pld")


def storage_bytes(module, skip=()) -> int:
    """What a module's tensors really occupy: every distinct storage once (tied and shared weights too)."""
    seen = {t.untyped_storage().data_ptr() for t in skip}
    sizes = {}
    for t in (*module.parameters(), *module.buffers()):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            sizes[ptr] = t.untyped_storage().nbytes()
    return sum(sizes.values())


@pytest.fixture(scope="module")
def tiny():
    """The embedded tiny family, loaded (float32, CPU), with its meta twin from the same config files."""
    return load_target(None), plan_target(str(default_model()), "float32")


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("diffusion_view", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_meta_weight_count_is_the_loaded_models(tmp_path, tied, diffusion_view, dtype):
    model = random_model(tie_word_embeddings=tied)
    if not diffusion_view:
        model = OrthrusForCausalLM(two_layer_micro_config(tie_word_embeddings=tied), diffusion_view=False)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path, dtype=getattr(torch, dtype))
    meta = memory.meta_target(loaded.config, getattr(torch, dtype), loaded.has_diffusion_view)
    assert memory.weight_bytes(meta) == memory.weight_bytes(loaded) == storage_bytes(loaded)
    plan = memory.plan(meta, memory.Decoding("ar"), context=100)
    assert plan.weights_total == storage_bytes(loaded)
    assert plan.weights.get("diffusion view", 0) == memory.diffusion_view_bytes(loaded)
    assert (memory.diffusion_view_bytes(loaded) > 0) == diffusion_view


@pytest.mark.parametrize("method", ["eagle3", "dflash"])
def test_a_drafters_meta_weights_are_its_loaded_ones_less_what_it_shares(tiny, method):
    """The head reads the target's embedding (EAGLE-3) or embedding and lm_head (DFlash): counted once."""
    target, meta = tiny
    decoder = make_decoder(method, target)
    module = decoder.drafter.head if method == "eagle3" else decoder.drafter.draft
    real = storage_bytes(module, skip=[*target.model.parameters(), *target.model.buffers()])
    (loaded,) = plan_loaded(target, [decoder], context=64, rows=1)
    planned = memory.plan(meta.model, decoding_for(method, meta), context=64)
    assert loaded.weights["drafter"] == planned.weights["drafter"] == real
    assert planned.weights_total == loaded.weights_total == storage_bytes(target.model) + real
    assert "models/tiny/" + method in planned.source


@pytest.mark.parametrize("method", LOOP_METHODS)
def test_the_kv_figures_are_the_caches_the_engine_and_the_drafter_allocate(tiny, method):
    target, meta = tiny
    rows, context = 3, 700
    decoder = make_decoder(method, target)
    plan = memory.plan(meta.model, decoding_for(method, meta), context=context, rows=rows)
    nodes = decoder.drafter.max_nodes if decoder.drafter else 1
    engine = Engine(target.model, "eager")
    cache = engine.new_cache(rows, context + nodes)
    assert (plan.needed, plan.capacity, plan.kv) == (context + nodes, cache.capacity, cache.nbytes)
    assert plan.capacity == bucket(context + nodes) and plan.kv_needed < plan.kv
    if hasattr(decoder.drafter, "cache_config"):  # EAGLE-3's and DFlash's own caches
        decoder.drafter.bind(engine, cache)
        assert plan.drafter_state["draft cache"] == decoder.drafter.draft_cache.nbytes
        decoder.drafter.release()
    # inspect (meta, from the config files) and run (the loaded decoders) plan the same bytes
    (loaded,) = plan_loaded(target, [decoder], context=context, rows=rows)
    for key in ("weights", "kv", "drafter_state", "phases", "capacity", "pass_tokens"):
        assert getattr(loaded, key) == getattr(plan, key), key
    assert plan.total >= plan.weights_total + plan.kv + plan.drafter_state_total


def allocator_peak(fn) -> int:
    """The most bytes torch's CPU allocator held at once while fn ran, beyond what it held before."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []

    def walk(node):
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        for child in node.children:
            walk(child)

    for root in prof.profiler.kineto_results.experimental_event_tree():
        walk(root)
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize(
    "method, rows, prompt, new, sampling",
    [
        ("ar", 1, 1000, 2, None),  # the prefill of a long prompt is the largest pass
        ("orthrus", 4, 40, 6, SamplingParams(1.0, 0, 0.9)),  # 4 rows x 8-token passes, sampled with top-p
        ("eagle3", 2, 40, 4, None),  # a 60-node tree verify pass, the head's cache and features
    ],
)
def test_the_plan_bounds_the_allocators_peak_of_a_real_decode(tiny, method, rows, prompt, new, sampling):
    target, _ = tiny
    decoder = make_decoder(method, target)  # fresh: its first decode allocates every cache inside the profile
    g = torch.Generator().manual_seed(1)
    requests = [Request(torch.randint(10, 4000, (prompt,), generator=g).tolist(), new) for _ in range(rows)]
    params = sampling or SamplingParams()
    peak = allocator_peak(
        lambda: list(decoder.decode(lambda: requests.pop() if requests else None, params, rows=rows))
    )
    (plan,) = plan_loaded(
        target, [decoder], context=prompt + new, rows=rows, prompt_tokens=prompt, sampling=sampling
    )
    # The weights were loaded before: what the decode allocated is the rest of the plan, which bounds it.
    assert peak <= plan.need(loaded=True) <= 1.5 * peak, (peak, plan.to_dict())


def test_inspect_plans_a_named_shape_offline(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["inspect", "qwen3-8b", "--context", "40960", "--dtype", "bf16", "--memory", "141"]
    methods = ["--methods", "ar,orthrus,eagle3,dflash,pld"]
    assert main(argv + methods) == 0
    out = capsys.readouterr().out
    for method in ("ar", "orthrus", "eagle3", "dflash", "pld"):
        assert f"  {method}  fits: " in out
    assert "AngelSlim/Qwen3-8B_eagle3's published shape" in out and "z-lab/Qwen3-8B-DFlash-b16" in out
    assert "the bucket of 40961 (40960 + 1 scratch)" in out

    assert main(argv + methods + ["--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    by = {m["label"]: m for m in plan["methods"]}
    per_position = 36 * 8 * 128 * 2 * 2  # layers x KV heads x head dim x bf16 x (K, V)
    ar = by["ar"]
    assert ar["kv_needed"] == 40961 * per_position and ar["kv"] == 49152 * per_position  # ~6.0 GB -> 7.2 GB
    assert 16.3e9 < ar["weights"]["target"] < 16.5e9  # Qwen3-8B's 8.19B parameters in bf16
    assert ar["weights"]["diffusion view"] == 36 * 2 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 2 * 128)
    assert by["eagle3"]["drafter_state"]["draft cache"] == (49152 + 70) * 8 * 128 * 2 * 2  # one layer
    assert by["dflash"]["weights"]["drafter"] > 1.9e9  # 5 Qwen3-8B layers and fc, no embedding or lm_head
    assert all(m["fits"] and m["total"] < 141 * 2**30 * 0.9 for m in plan["methods"])

    assert main(argv[:-1] + ["8"] + methods) == 1
    out = capsys.readouterr().out
    assert "  ar  does not fit: " in out and "> 7.20 GiB" in out


def test_inspect_says_which_method_cannot_run(capsys, tmp_path):
    save_model(OrthrusForCausalLM(two_layer_micro_config(), diffusion_view=False), tmp_path / "plain")
    argv = ["inspect", str(tmp_path / "plain"), "--context", "64", "--memory", "1", "--methods", "ar,orthrus"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "  ar  fits" in out and "cannot run: orthrus needs a checkpoint with a diffusion view" in out


def test_run_refuses_what_does_not_fit_before_generating(monkeypatch):
    free = 4 * 2**20  # 4 MiB free: the tiny family is loaded, its eagle3 cache and passes do not fit
    monkeypatch.setattr("harness.options.free_memory", lambda device: free)
    monkeypatch.setattr("harness.methods.base.LoopDecoder.generate", lambda *a, **k: pytest.fail("generated"))
    spec = RunSpec(suites=["tiny-math"], methods=["ar", "eagle3"], limit=2, max_new_tokens=512, batch_size=4)
    with pytest.raises(OptionError) as refused:
        prepare(spec)
    message = str(refused.value)
    for words in ("ar does not fit on cpu", "4 row(s) of up to", "beyond its weights, which are loaded",
                  "3.60 MiB a run may take (90% of the 4.00 MiB free)", "KV cache", "no drafter state",
                  "workspace", "Lower --batch-size or --max-new-tokens"):  # fmt: skip
        assert words in message, message


def test_the_lm_eval_adapter_refuses_what_does_not_fit(monkeypatch):
    from lm_eval.api.instance import Instance

    from harness.lm_eval.adapter import OrthrusLM

    lm = OrthrusLM(method="eagle3", device="cpu", batch_size=2)
    monkeypatch.setattr("harness.options.free_memory", lambda device: 2**20)
    request = Instance(
        "generate_until", {}, ("Question: 1 + 1?", {"until": [], "temperature": 0.0, "max_gen_toks": 64}), 0
    )
    with pytest.raises(OptionError, match="eagle3 does not fit on cpu.*lower max_gen_toks or batch_size"):
        lm.generate_until([request, request])


def test_a_decode_lets_go_of_its_caches(tiny):
    """A drafter kept between generations drops the finished decode's caches, so the next decode's are not
    allocated beside them (the plan counts one of each)."""
    target, _ = tiny
    decoder = make_decoder("eagle3", target)
    decoder.generate([5, 6, 7, 8], 4)
    assert decoder.drafter.cache is None and decoder.drafter.draft_cache is None
    assert decoder.drafter.pending == []
