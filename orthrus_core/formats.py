"""What a checkpoint directory holds, read from its config files and tensor headers alone (no weight is
loaded): its format, shapes, dtype, parameter counts, block size and mask token, stop tokens, and the
problem its loader would raise. `orthrus-bench inspect` prints it, so a checkpoint can be checked before a
long run.

Formats: targets `orthrus` (OrthrusLM: Qwen3 plus a diffusion view), `qwen3`, `sdar` (Qwen3 weights decoded
as a block-diffusion LM), `qwen2`, `fast-dllm-v2` (Qwen2 weights, block diffusion); drafts `eagle3` (a head,
recognised by its `fc` and `midlayer.*` tensors) and `dflash` (a DFlashDraftModel). Nothing here runs remote
code.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import dflash, eagle3
from .checkpoint import (
    CheckpointError,
    CorruptFileError,
    check_shapes,
    check_tensors,
    eos_token_id,
    load_config,
    open_safetensors,
    read_json,
    resolve,
    tensor_headers,
    weight_files,
)
from .tokenizer import TOKENIZER_FILES

TARGET_FORMATS = ("orthrus", "qwen3", "sdar", "qwen2", "fast-dllm-v2")
DRAFT_FORMATS = ("eagle3", "dflash")


@dataclass
class CheckpointInfo:
    path: str
    format: str | None  # one of TARGET_FORMATS or DRAFT_FORMATS; None when not recognised
    architectures: list[str]
    model_type: str | None
    dtype: str | None  # the stored floating-point weights' (the most common one)
    layers: int | None
    hidden_size: int | None
    vocab_size: int | None
    parameters: dict[str, int] = field(default_factory=dict)  # "total", and per view where there are two
    block_size: int | None = None
    mask_token_id: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    tokenizer: bool = False
    reads_target_states: list[int] | None = (
        None  # drafts: the target hidden states (EAGLE-3) or layers (DFlash)
    )
    problems: list[str] = field(default_factory=list)  # what loading would raise (a draft: against `target`)

    @property
    def is_draft(self) -> bool:
        return self.format in DRAFT_FORMATS

    def to_dict(self) -> dict:
        return asdict(self)


def _ids(value) -> list[int]:
    return [] if value is None else ([value] if isinstance(value, int) else list(value))


def _count(shapes) -> int:
    total = 0
    for shape in shapes:
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def _dtype(dtypes: list[str]) -> str | None:
    floating = [d for d in dtypes if d.lower() in ("f32", "f16", "bf16", "float32", "float16", "bfloat16")]
    if not floating:
        return None
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    common = Counter(floating).most_common(1)[0][0]
    return names.get(common, common.removeprefix("torch."))


def target_format(architectures: list[str], raw: dict) -> str | None:
    archs = set(architectures)
    if "OrthrusLM" in archs:
        return "orthrus"
    if "SDARForCausalLM" in archs:
        return "sdar"
    if "Qwen3ForCausalLM" in archs:
        return "qwen3"
    if "Fast_dLLM_QwenForCausalLM" in archs or "bd_size" in raw:
        return "fast-dllm-v2"
    if "Qwen2ForCausalLM" in archs:
        return "qwen2"
    return None


def describe(path_or_id: str | os.PathLike, target: str | os.PathLike | None = None) -> CheckpointInfo:
    """The checkpoint at `path_or_id` as the loaders see it. For a draft, `target` (a target checkpoint) adds
    the problems of drafting for it."""
    directory = resolve(path_or_id, patterns=eagle3.HUB_PATTERNS)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"no config.json in {directory}: not a Hugging Face checkpoint directory")
    raw = read_json(config_path)
    info = CheckpointInfo(
        path=str(directory),
        format=None,
        architectures=list(raw.get("architectures") or []),
        model_type=raw.get("model_type"),
        dtype=raw.get("torch_dtype") or raw.get("dtype"),
        layers=raw.get("num_hidden_layers"),
        hidden_size=raw.get("hidden_size"),
        vocab_size=raw.get("vocab_size"),
        tokenizer=any((directory / f).is_file() for f in TOKENIZER_FILES),
    )
    eagle_file = next((directory / n for n in eagle3.WEIGHT_FILES if (directory / n).is_file()), None)
    if eagle_file is not None and eagle3.is_eagle3_head(eagle3.read_weights(eagle_file, meta=True)):
        _describe_eagle3(info, raw, eagle_file, target)
    elif dflash.ARCHITECTURE in info.architectures:
        _describe_dflash(info, raw, directory, target)
    else:
        _describe_target(info, raw, directory)
    return info


def _describe_target(info: CheckpointInfo, raw: dict, directory: Path) -> None:
    info.format = target_format(info.architectures, raw)
    info.block_size = raw.get("block_size") or raw.get("bd_size")
    info.mask_token_id = raw.get("mask_token_id")
    info.stop_token_ids = _ids(eos_token_id(directory, raw))
    try:  # the loader's own checks, in its order: what `load_model` would raise
        config, orthrus = load_config(directory)
        files = weight_files(directory)
        headers = tensor_headers(files)
        info.dtype = _dtype([d for _, d in headers.values()]) or info.dtype
        shapes = {n: s for n, (s, _) in headers.items()}
        info.parameters["total"] = _count(shapes.values())
        if orthrus:
            diffusion_only = _count(s for n, s in shapes.items() if "_diff." in n)
            info.parameters["ar_view"] = info.parameters["total"] - diffusion_only
            info.parameters["diffusion_view_only"] = diffusion_only
        check_tensors(directory, config, orthrus, files)
    except CorruptFileError:  # a file that cannot be read: nothing to describe
        raise
    except CheckpointError as e:
        info.problems.append(str(e))


def _target_config(target):
    config, _ = load_config(resolve(target))
    return config


def _describe_eagle3(info: CheckpointInfo, raw: dict, weights: Path, target) -> None:
    info.format = "eagle3"
    state = eagle3.read_weights(weights, meta=True)
    info.dtype = _dtype([str(t.dtype).removeprefix("torch.") for t in state.values()]) or info.dtype
    info.parameters["total"] = _count(tuple(t.shape) for t in state.values())
    config = eagle3.head_config(raw, state)
    target_config = _target_config(target) if target is not None else None
    if target_config is not None:
        info.reads_target_states = eagle3.aux_layers(config, target_config.num_hidden_layers)
        info.problems += eagle3.fit_problems(config, eagle3.read_weights(weights), target_config)
    elif getattr(config, "eagle_config", None):
        info.reads_target_states = eagle3.aux_layers(config, 0)
    try:  # the heads are built with their target's width
        target_hidden = target_config.hidden_size if target_config is not None else config.hidden_size
        eagle3.check_head_shapes(weights.parent, config, eagle3.complete_state(config, state), target_hidden)
    except CheckpointError as e:
        info.problems.append(str(e))


def _describe_dflash(info: CheckpointInfo, raw: dict, directory: Path, target) -> None:
    info.format = "dflash"
    info.block_size = raw.get("block_size")
    info.mask_token_id = (raw.get("dflash_config") or {}).get("mask_token_id")
    target_config = _target_config(target) if target is not None else None
    num_target_layers = target_config.num_hidden_layers if target_config else raw.get("num_target_layers")
    config = dflash.draft_config(raw, num_target_layers or 0)
    if num_target_layers or (raw.get("dflash_config") or {}).get("target_layer_ids"):
        info.reads_target_states = config.dflash_config["target_layer_ids"]
    if target_config is not None:
        info.problems += dflash.fit_problems(raw, config, target_config)
    weights = directory / dflash.WEIGHTS
    if not weights.is_file():
        info.problems.append(f"no {dflash.WEIGHTS} in {directory}")
        return
    headers = tensor_headers({name: weights for name in _safetensors_names(weights)})
    info.dtype = _dtype([d for _, d in headers.values()]) or info.dtype
    info.parameters["total"] = _count(s for s, _ in headers.values())
    try:
        check_shapes(
            f"the DFlash weights in {directory} do not match its config.json",
            {n: s for n, (s, _) in headers.items()},
            dflash.expected_shapes(config),
        )
    except CheckpointError as e:
        info.problems.append(str(e))


def _safetensors_names(path: Path) -> list[str]:
    with open_safetensors(path) as f:
        return list(f.keys())
