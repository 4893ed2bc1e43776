"""Memory plans of the registry's methods (the arithmetic is orthrus_core.memory's): for `orthrus-bench inspect
MODEL --context N` from configs alone, and for `run` and the lm-eval adapter from the decoders they loaded.

    target = plan_target("qwen3-8b", "bfloat16")          # a named Qwen3 shape, or a checkpoint's config
    decoding = decoding_for("eagle3:tree=chain", target)   # the method on the meta device, its draft's shape
    memory.plan(target.model, decoding, context=40960, rows=1, device="cuda")

What a method costs its decoder and its drafter say (`Decoder.memory_decoding`, orthrus_core.loop.Drafter's
cost methods): nothing here names a method or tests a class. A method whose drafter reads a draft checkpoint
has its module say, with `meta_drafter(target, options) -> (drafter, source)`, its drafter on the meta target
with the draft's shape found without loading a weight: the draft's own shape where its config is at hand (a
local directory: `draft=`, or the target's sibling directory), the public draft's published shape for the
public bases (checkpoints.PUBLIC_DRAFT_SHAPES), and otherwise its config for the target at the public drafts'
sizes; `source` says which (harness/methods/eagle3.py, dflash.py). The others are built as make_decoder builds
them, on the meta target.
"""

from __future__ import annotations

from dataclasses import dataclass

from orthrus_core import memory
from orthrus_core.memory import Decoding

from . import BACKEND, backend_of, resolve_options
from .checkpoints import QWEN3_SHAPES
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
    spec, module, options = resolve_options(spec)
    name, label = spec.name, str(spec)
    if backend_of(spec) != BACKEND:
        raise ValueError(
            f"{label}: decoded by {backend_of(spec)}, which plans its own memory (its kv_cache_gib and "
            "gpu_memory_utilization options) and refuses at start what does not fit; not planned here"
        )
    try:
        if hasattr(module, "meta_drafter"):  # its drafter reads a checkpoint: the draft's shape, no weight
            drafter, source = module.meta_drafter(target, options)
            return Decoding(label, drafter=drafter, source=source)
        # The other methods read no checkpoint: their own build, on the meta target (no engine: nothing runs).
        return module.build(Target(target.model, target.path, None, None), spec, options).memory_decoding()
    except ValueError as exc:
        if not str(exc).startswith(name):
            exc.args = (f"{label}: {exc}", *exc.args[1:])
        raise


def default_methods(target: PlanTarget) -> list[str]:
    """The batched methods that run on this target: each whose module's `runs_on(model)`, where it has one,
    says so (orthrus needs a diffusion view)."""
    from . import BATCHED

    return [m for m in BATCHED if getattr(resolve_options(m)[1], "runs_on", lambda model: True)(target.model)]


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
            decoder.memory_decoding(),
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
