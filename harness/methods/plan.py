"""Memory plans of the registry's methods (the arithmetic is orthrus_core.memory's): for `orthrus-bench inspect
MODEL --context N` from configs alone, and for `run` and the lm-eval adapter from the decoders they loaded.

    target = plan_target("qwen3-8b", "bfloat16")          # a named Qwen3 shape, or a checkpoint's config
    decoding = decoding_for("eagle3:tree=chain", target)   # the method on the meta device, its draft's shape
    memory.plan(target.model, decoding, context=40960, rows=1, device="cuda")

A method that reads a draft checkpoint is planned with the draft's own shape where its config is at hand (a
local directory: `draft=`, or the target's sibling directory), with the public draft's published shape for the
public bases (checkpoints.PUBLIC_DRAFT_SHAPES), and otherwise with `eagle3_config` / `dflash_config` for the
target at the public drafts' sizes; `Decoding.source` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orthrus_core import memory
from orthrus_core.memory import Decoding

from . import BACKEND, backend_of, resolve_options
from .checkpoints import PUBLIC_DRAFT_SHAPES, PUBLIC_DRAFTS, QWEN3_SHAPES, find_draft
from .target import Target, torch_dtype


@dataclass
class PlanTarget:
    """A target on the meta device: its model (shapes and dtypes, no memory), the path or name drafts are
    looked up by, and what it is, in words."""

    model: object
    path: str
    what: str


def named_shape(name: str):
    """The Qwen3Config of a named Qwen3 shape (QWEN3_SHAPES: `qwen3-8b`) as its Orthrus conversion has it
    (chiennv/Orthrus-Qwen3-*: the same shape with a diffusion view), or None for any other name."""
    from transformers import Qwen3Config

    shape = QWEN3_SHAPES.get(str(name).lower())
    return None if shape is None else Qwen3Config(**shape, architectures=["OrthrusLM"])


def plan_target(model: str, dtype) -> PlanTarget:
    """`model`, a named Qwen3 shape or a checkpoint (directory or hub id: its config only), on the meta device in
    `dtype`, as `load_target` would load it (an Orthrus checkpoint with both views)."""
    from orthrus_core.checkpoint import load_config, resolve

    dtype = torch_dtype(dtype)
    config = named_shape(model)
    if config is not None:
        what = f"{model}: a named Qwen3 shape (Qwen/{model.title()}'s config with Orthrus' diffusion view)"
        return PlanTarget(memory.meta_target(config, dtype, True), str(model), what)
    directory = resolve(model)
    config, orthrus = load_config(directory)
    what = f"{directory}: {'Orthrus (both views loaded)' if orthrus else 'AR only'}"
    return PlanTarget(memory.meta_target(config, dtype, orthrus), str(directory), what)


def decoding_for(spec: str, target: PlanTarget) -> Decoding:
    """The method `spec` on the meta target, as make_decoder would build it (its options resolved and checked),
    its draft's shape found without loading a weight. A ValueError says why it cannot run on this target."""
    from orthrus_core.dflash import DFlashDrafter
    from orthrus_core.eagle3 import Eagle3Drafter

    name, module, options, label = resolve_options(spec)
    if backend_of(spec) != BACKEND:
        raise ValueError(
            f"{label}: decoded by {backend_of(spec)}, which plans its own memory (its kv_cache_gib and "
            "gpu_memory_utilization options) and refuses at start what does not fit; not planned here"
        )
    model = target.model
    if name == "eagle3":
        _, shape = module.drafting(options)
        config, with_embed, source = eagle3_shape(target, options["draft"])
        head = memory.meta_eagle3(config, model, with_embed)
        return Decoding(label, drafter=Eagle3Drafter(head, model, *shape), source=source)
    if name == "dflash":
        config, source = dflash_shape(target, options["draft"])
        drafter = DFlashDrafter(memory.meta_dflash(config, model), model, options["block_size"])
        return Decoding(label, drafter=drafter, source=source)
    # The other methods read no checkpoint: their own build, on the meta target (no engine: nothing runs).
    try:
        decoder = module.build(Target(model, target.path, None, None), label, options)
    except ValueError as exc:
        if not str(exc).startswith(name):
            exc.args = (f"{label}: {exc}", *exc.args[1:])
        raise
    return decoding_of(decoder)


def decoding_of(decoder) -> Decoding:
    """A loaded decoder (harness.methods.base.Decoder) as the planner sees it."""
    from .ar_hf import HFDecoder
    from .base import LoopDecoder
    from .diffusion import BlockDiffusionDecoder
    from .orthrus import OfficialLoopDecoder

    c = decoder.config
    if isinstance(decoder, LoopDecoder):
        draft = decoder.checkpoints.get("draft")
        return Decoding(
            decoder.label, drafter=decoder.drafter, source=f"loaded from {draft}" if draft else ""
        )
    if isinstance(decoder, HFDecoder):
        return Decoding(decoder.label, kind=f"hf-{c['cache']}")
    if isinstance(decoder, OfficialLoopDecoder):
        return Decoding(decoder.label, kind="official", block_size=c["block_size"])
    if isinstance(decoder, BlockDiffusionDecoder):
        return Decoding(decoder.label, kind="diffusion", block_size=c["block_size"], layout=c["layout"])
    return Decoding(decoder.label)  # a decoder of the loop's shape without a drafter: plain AR


def _draft_directory(method: str, target: PlanTarget, override: str | None):
    """(the draft's local directory or None, the hub id or None) for `method` on `target`, without fetching a
    weight: a hub id other than the public drafts has its config files fetched (or read from the hub cache)."""
    from orthrus_core.checkpoint import resolve

    found = find_draft(method, target.path, override)
    if found is None:
        return None, None
    if Path(found).expanduser().is_dir():
        return Path(found).expanduser(), None
    if found in PUBLIC_DRAFTS[method].values():
        return None, found
    return resolve(found, patterns=("*.json",)), found


def eagle3_shape(target: PlanTarget, override: str | None):
    """(head config, whether it carries its own embedding, where the shape came from) for EAGLE-3 on `target`."""
    from orthrus_core import eagle3
    from orthrus_core.checkpoint import read_json

    t = target.model.config
    directory, hub_id = _draft_directory("eagle3", target, override)
    draft_vocab = PUBLIC_DRAFT_SHAPES["eagle3"]["draft_vocab_size"]
    if directory is not None:
        raw = read_json(directory / "config.json")
        weights = next((directory / n for n in eagle3.WEIGHT_FILES if (directory / n).is_file()), None)
        if weights is not None:
            state = eagle3.read_weights(weights, meta=True)
            source = f"{directory}'s config and weights"
            return eagle3.head_config(raw, state), "embed_tokens.weight" in state, source
        raw = dict(raw, head_dim=raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"])
        state = {"midlayer.self_attn.q_proj.weight": _rows(raw)}
        return eagle3.head_config(raw, state), False, f"{hub_id or directory}'s config"
    config = eagle3.eagle3_config(t, min(draft_vocab, t.vocab_size))
    if hub_id is not None:
        source = (
            f"{hub_id}'s published shape: the target's dimensions, a {draft_vocab}-token draft vocabulary, no "
            "embedding of its own"
        )
    else:
        source = (
            f"no EAGLE-3 head is known for {target.path}: eagle3_config for the target, with the public heads' "
            f"{draft_vocab}-token draft vocabulary"
        )
    return config, False, source


def _rows(raw: dict):
    """A stand-in for the q projection's weight (head_config reads head_dim from its rows)."""
    import torch

    return torch.empty(raw["head_dim"] * raw["num_attention_heads"], 0, device="meta")


def dflash_shape(target: PlanTarget, override: str | None):
    """(drafter config, where the shape came from) for DFlash on `target`."""
    from orthrus_core import dflash
    from orthrus_core.checkpoint import read_json

    t = target.model.config
    directory, hub_id = _draft_directory("dflash", target, override)
    if directory is not None:
        raw = read_json(directory / "config.json")
        return dflash.draft_config(raw, t.num_hidden_layers), f"{hub_id or directory}'s config"
    public = PUBLIC_DRAFT_SHAPES["dflash"]
    mask = getattr(t, "mask_token_id", None)
    config = dflash.dflash_config(
        t, public["num_layers"], public["block_size"], t.vocab_size - 1 if mask is None else mask
    )
    shape = f"{public['num_layers']} layers, block size {public['block_size']}, the target's dimensions"
    if hub_id is not None:
        return config, f"{hub_id}'s published shape: {shape}"
    return config, (
        f"no DFlash drafter is known for {target.path}: dflash_config for the target at the public drafters' "
        f"{shape}"
    )


def default_methods(target: PlanTarget) -> list[str]:
    """The batched methods that run on this target (orthrus needs a diffusion view)."""
    from . import BATCHED

    return [m for m in BATCHED if m != "orthrus" or target.model.has_diffusion_view]


def plan_loaded(
    target: Target,
    decoders: list,
    *,
    context: int,
    rows: int,
    prompt_tokens: int | None = None,
    sampling=None,
    device: str | None = None,
) -> list[memory.MethodPlan]:
    """The plan of every loaded decoder on its loaded target (`run`'s pre-flight, the lm-eval adapter): its
    drafter's real weights, its target's engine; `rows` for the batched methods, 1 for the others. A decoder of
    another engine (vLLM) plans its own memory, and refused at start what does not fit: it is not planned here."""
    device = device or str(target.model.lm_head.weight.device)
    return [
        memory.plan(
            target.model,
            decoding_of(decoder),
            context=context,
            rows=rows if decoder.batched else 1,
            device=device,
            engine=target.engine.mode,
            prompt_tokens=prompt_tokens,
            sampling=sampling,
        )
        for decoder in decoders
        if decoder.backend == BACKEND
    ]
