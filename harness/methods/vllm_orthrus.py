"""`vllm-orthrus`: Orthrus in vLLM. vLLM loads the Orthrus checkpoint as it is published (architecture OrthrusLM:
Qwen3 with the diffusion view's projections beside the AR view's, weights once) and drafts each step's block
[bonus, MASK x (K - 1)] in one pass of the target's diffusion view over the target's own KV cache, through DFlash's
speculative method (harness/methods/vllm_orthrus_model.py says how, vllm_plugin.py registers it). K is the
checkpoint's block size or `block_size=`; every block's K - 1 drafts are verified by vLLM's AR pass."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from orthrus_core.checkpoint import read_json
from orthrus_core.jsonfile import write_json

from . import vllm

OPTIONS = {
    "block_size": (int, None),  # None: the checkpoint's
    **vllm.ENGINE_OPTIONS,
}


def draft_view(directory: str | os.PathLike, cache: Path | None = None) -> Path:
    """The directory vLLM builds the draft from: the checkpoint's config with architecture
    DFlashOrthrusDiffusionView and the mask token as DFlash's, and an empty weights file (the draft's weights are
    the target's), written once per config into `cache`/vllm/."""
    from safetensors.torch import save_file

    from .vllm_plugin import DRAFT_ARCHITECTURE

    raw = read_json(Path(directory) / "config.json")
    config = {k: v for k, v in raw.items() if k != "auto_map"}
    config["architectures"] = [DRAFT_ARCHITECTURE]
    # DFlash's proposer always has the target keep some layers' states for the draft; the diffusion view reads
    # none, so the fewest: one layer's.
    config["dflash_config"] = {
        "mask_token_id": raw["mask_token_id"],
        "target_layer_ids": [0],
        "causal": False,
    }
    text = json.dumps(config, sort_keys=True)
    out = (
        Path(cache or vllm.CACHE) / "vllm" / f"orthrus-draft-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    )

    def write(tmp: Path) -> None:
        save_file({}, tmp / "model.safetensors", metadata={"format": "pt"})
        write_json(tmp / "config.json", config)

    return vllm.published(out, write)


def build(target, label, options):
    directory, model = Path(target.path), target.model
    if not model.has_diffusion_view:
        raise vllm.VLLMError(
            f"{label}: {directory} is not an Orthrus checkpoint (architectures {model.config.architectures}); "
            "vllm-orthrus drafts with the target's own diffusion view: give --model an Orthrus checkpoint"
        )
    block_size = options["block_size"] or model.block_size
    if block_size < 2:
        raise ValueError(f"{label}: block_size must be >= 2, got {block_size}")
    from .vllm_plugin import version_problem

    if problem := version_problem(vllm.import_vllm().__version__):
        raise vllm.VLLMError(f"{label}: {problem}")
    speculation = vllm.Speculation(
        dict(
            method="dflash",
            model=str(draft_view(directory)),
            num_speculative_tokens=block_size - 1,
            # at T > 0 drafts sampled from the diffusion view's q and verified against it, as `orthrus` drafts
            # (vLLM's default takes the argmax and verifies a one-hot q: lossless too, fewer drafts accepted)
            draft_sample_method="probabilistic",
        ),
        draft_forwards_per_step=1,  # one diffusion pass per step; its K/V lives in the target's cache
    )
    options = dict(options, block_size=block_size)
    return vllm.build(target, label, options, speculation, model_dir=directory)
