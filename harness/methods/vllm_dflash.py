"""`vllm-dflash`: a DFlash drafter in vLLM (one drafter pass per step proposes `num_speculative_tokens`, by
default the drafter's block size less one). The drafter is the one `dflash` finds (checkpoints.py) or `draft=`,
checked here as the project's loader checks it."""

from __future__ import annotations

from orthrus_core.checkpoint import resolve
from orthrus_core.dflash import load_dflash

from . import vllm
from .checkpoints import draft_checkpoint

OPTIONS = {
    "num_speculative_tokens": (int, None),  # None: the drafter's block size - 1
    "draft": (str, None),  # hub id or directory; default: the known drafter for the target (checkpoints.py)
    **vllm.ENGINE_OPTIONS,
}


def build(target, label, options):
    directory = resolve(draft_checkpoint("dflash", target, options["draft"]))
    draft = load_dflash(directory, target.model)  # the project's checks: a DFlash drafter for this target
    block_size = int(draft.config.block_size)
    k = options["num_speculative_tokens"] or block_size - 1
    if not 1 <= k <= block_size - 1:
        raise ValueError(
            f"{label}: num_speculative_tokens must be in 1..{block_size - 1} (block size - 1), got {k}"
        )
    dtype_bytes = target.model.lm_head.weight.element_size()
    speculation = vllm.Speculation(
        dict(method="dflash", model=str(directory), num_speculative_tokens=k),
        draft_forwards_per_step=1,
        draft_kv_bytes_per_position=vllm.kv_bytes_per_position(draft.config, dtype_bytes),
    )
    del draft
    options = dict(options, draft=options["draft"] or str(directory), num_speculative_tokens=k)
    return vllm.build(target, label, options, speculation, {"draft": str(directory)})
