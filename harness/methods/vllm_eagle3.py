"""`vllm-eagle3`: an EAGLE-3 head in vLLM (chain drafts, `num_speculative_tokens` per step). The head is the one
`eagle3` finds (checkpoints.py: the tiny family's sibling, AngelSlim's for the public bases) or `draft=`, checked
here as the project's loader checks it, and for what vLLM needs more: vLLM gathers the target states a head reads
by a sorted set of layer ids, so a head must read three distinct states in ascending order."""

from __future__ import annotations

from orthrus_core.checkpoint import resolve
from orthrus_core.eagle3 import HUB_PATTERNS, aux_layers, layers_problem, load_eagle3

from . import vllm
from .checkpoints import draft_checkpoint

OPTIONS = {
    "num_speculative_tokens": (int, 3),
    "draft": (str, None),  # hub id or directory; default: the known head for the target (checkpoints.py)
    **vllm.ENGINE_OPTIONS,
}


def build(target, label, options):
    k = options["num_speculative_tokens"]
    if k < 1:
        raise ValueError(f"{label}: num_speculative_tokens must be >= 1, got {k}")
    directory = resolve(draft_checkpoint("eagle3", target, options["draft"]), patterns=HUB_PATTERNS)
    head = load_eagle3(directory, target.model)  # the project's checks: a head, and one for this target
    layers = aux_layers(head.config, target.model.config.num_hidden_layers)
    problem = layers_problem(layers)
    if problem:
        raise vllm.VLLMError(
            f"{label}: vLLM cannot run the EAGLE-3 head {directory}: it reads the target states {layers}, and "
            f"{problem}; vLLM gathers them by a sorted set of layer ids, so its fc would get other features "
            "than it takes. Rewrite it with orthrus_core.eagle3.with_distinct_layers (the same head reading "
            "distinct states) or train one that names three distinct layers in eagle_config"
        )
    dtype_bytes = target.model.lm_head.weight.element_size()
    speculation = vllm.Speculation(
        dict(method="eagle3", model=str(directory), num_speculative_tokens=k),
        draft_forwards_per_draft=1,
        draft_kv_bytes_per_position=vllm.kv_bytes_per_position(head.config, dtype_bytes),
    )
    del head
    options = dict(options, draft=options["draft"] or str(directory))
    return vllm.build(target, label, options, speculation, {"draft": str(directory)})
