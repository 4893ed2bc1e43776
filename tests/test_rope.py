"""RoPE frequencies stay float32 through every path that makes a model in a low-precision dtype: built and
moved (`.to`, `.half`, `.bfloat16`, `.to_empty`), loaded from a checkpoint, quantized, the drafters loaded for
a bfloat16 target, ar-hf's transformers model, the memory planner's meta models. A bfloat16 pass near position
40960 then rotates by transformers' float32 frequencies, rounded to bfloat16 once at the end."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

from harness.bench.engine_bench import random_model
from harness.methods import make_decoder
from harness.methods.dflash import meta_draft
from harness.methods.eagle3 import meta_head
from harness.methods.target import load_target
from orthrus_core.checkpoint import load_model, save_model
from orthrus_core.dflash import DFlashDraftModel
from orthrus_core.eagle3 import Eagle3Head
from orthrus_core.memory import drafter_modules, meta_target
from orthrus_core.micro import micro_config, micro_model
from orthrus_core.model import OrthrusForCausalLM

LONG = torch.arange(40960 - 16, 40960)[None]  # positions where a bfloat16 frequency is tens of radians off


def rope_errors(rotary: nn.Module, reference_class: type[nn.Module]) -> list[str]:
    """How `rotary` differs from transformers' own (`reference_class` built from its config, in float32 on the
    CPU): its frequency buffers, and the bfloat16 cos/sin of a pass at LONG positions."""
    reference = reference_class(rotary.config)
    errors = []
    for name, expected in reference.named_buffers():
        got = getattr(rotary, name)
        if got.dtype != torch.float32 or not torch.equal(got.cpu(), expected):
            errors.append(f"{name}: {got.dtype}, max error {(got.cpu().float() - expected).abs().max():.3g}")
    x = torch.zeros(1, dtype=torch.bfloat16, device=rotary.inv_freq.device)
    for got, expected, what in zip(rotary(x, LONG), reference(x.float(), LONG), ("cos", "sin"), strict=True):
        if got.dtype != torch.bfloat16 or not torch.equal(got.cpu(), expected.to(torch.bfloat16)):
            errors.append(f"{what}: max error {(got.cpu().float() - expected).abs().max():.3g}")
    return errors


def test_a_transformers_rotary_cast_to_bfloat16_is_off_at_long_context():
    """What the project's rotary embeddings prevent: transformers' own, moved to bfloat16, loses its
    frequencies' precision and rotates a token near 40K by a visibly different angle."""
    cast = Qwen3RotaryEmbedding(micro_config()).to(torch.bfloat16)
    errors = rope_errors(cast, Qwen3RotaryEmbedding)
    assert errors[0].startswith("inv_freq: torch.bfloat16") and any(e.startswith("cos") for e in errors)
    cos, _ = cast(torch.zeros(1, dtype=torch.bfloat16), LONG)
    reference, _ = Qwen3RotaryEmbedding(micro_config())(torch.zeros(1), LONG)
    assert (cos.float() - reference).abs().max() > 0.5


@pytest.mark.parametrize(
    "move",
    [
        lambda m: m.to(torch.bfloat16),
        lambda m: m.to(dtype=torch.bfloat16, device="cpu"),
        lambda m: m.bfloat16(),
        lambda m: m.half().bfloat16(),
        lambda m: m.to_empty(device="cpu").bfloat16(),
    ],
    ids=["to", "to-dtype-device", "bfloat16", "half-then-bfloat16", "to_empty"],
)
def test_a_model_moved_to_a_low_precision_dtype_keeps_float32_rope(move):
    model = move(OrthrusForCausalLM(micro_config()))
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert rope_errors(model.model.rotary_emb, Qwen3RotaryEmbedding) == []


def test_a_move_to_another_device_computes_the_frequencies_there():
    """A model built on the meta device (as the loaders build one) and materialised on the CPU: the frequencies
    are computed for the new device, not copied from the old one (whose meta tensors hold no values)."""
    with torch.device("meta"):
        model = OrthrusForCausalLM(micro_config()).bfloat16()
    assert model.model.rotary_emb.inv_freq.is_meta and model.model.rotary_emb.inv_freq.dtype == torch.float32
    model.to_empty(device="cpu")
    assert rope_errors(model.model.rotary_emb, Qwen3RotaryEmbedding) == []


def test_a_cast_on_the_same_device_keeps_the_frequency_tensors():
    """Compiled passes and captured CUDA graphs may hold the buffers: a cast or a move to where they are already
    must not replace them."""
    model = OrthrusForCausalLM(micro_config()).bfloat16()
    frequencies = dict(model.model.rotary_emb.named_buffers())
    model.to("cpu").to(torch.bfloat16).half().float()
    assert all(getattr(model.model.rotary_emb, n) is t for n, t in frequencies.items())


def test_the_engine_benchmarks_random_model_keeps_float32_rope():
    model = random_model("small", torch.bfloat16, "cpu")
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert rope_errors(model.model.rotary_emb, Qwen3RotaryEmbedding) == []


def test_a_saved_model_loaded_in_bfloat16_keeps_float32_rope(tmp_path):
    save_model(micro_model(), tmp_path / "micro")
    model = load_model(tmp_path / "micro", dtype=torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert rope_errors(model.model.rotary_emb, Qwen3RotaryEmbedding) == []


def test_every_model_of_a_bfloat16_quantized_run_keeps_float32_rope():
    """The run's path: the tiny family's target loaded and quantized, its EAGLE-3 head and DFlash drafter loaded
    for it (and quantized), and ar-hf's transformers model over the target's tensors."""
    target = load_target(None, "bfloat16", "cpu", engine="eager", quantize="int8-channel")
    assert target.model.lm_head.weight.dtype == torch.bfloat16
    assert rope_errors(target.model.model.rotary_emb, Qwen3RotaryEmbedding) == []
    (head,) = drafter_modules(make_decoder("eagle3", target).drafter, target.model)
    (draft,) = drafter_modules(make_decoder("dflash", target).drafter, target.model)
    assert isinstance(head, Eagle3Head) and isinstance(draft, DFlashDraftModel)
    assert head.fc.weight.dtype == draft.fc.weight.dtype == torch.bfloat16
    assert rope_errors(head.rotary_emb, LlamaRotaryEmbedding) == []
    assert rope_errors(draft.rotary_emb, Qwen3RotaryEmbedding) == []
    hf_model = make_decoder("ar-hf", target).hf_model
    assert rope_errors(hf_model.model.rotary_emb, Qwen3RotaryEmbedding) == []

    # The drafters' own constructors, moved as a trainer or a caller would move them.
    moved_head = Eagle3Head(head.config, target.model.config.hidden_size, nn.Embedding(4096, 256))
    assert rope_errors(moved_head.to(torch.bfloat16).rotary_emb, LlamaRotaryEmbedding) == []
    assert rope_errors(DFlashDraftModel(draft.config).half().rotary_emb, Qwen3RotaryEmbedding) == []

    # The memory planner's meta models: every shape and dtype as loaded, the frequencies float32.
    meta = [
        meta_target(target.model.config, torch.bfloat16).model.rotary_emb,
        meta_head(head.config, target.model).rotary_emb,
        meta_draft(draft.config, target.model).rotary_emb,
    ]
    assert all(r.inv_freq.is_meta and r.inv_freq.dtype == torch.float32 for r in meta)
