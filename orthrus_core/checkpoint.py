"""Checkpoint I/O in the official Hugging Face format of chiennv/Orthrus-Qwen3-*, without remote code.

Format: `config.json` (`model_type: qwen3`; `architectures: ["OrthrusLM"]` plus `block_size` and
`mask_token_id` for Orthrus, `["Qwen3ForCausalLM"]` for a plain Qwen3, which loads AR-only; Qwen2 weights, such
as Fast-dLLM v2's, load AR-only too; an `auto_map` entry is ignored: no remote code is ever run) and
safetensors weights, one file or shards listed in `model.safetensors.index.json`, with the tensor names of
`OrthrusForCausalLM.state_dict()`. With tied embeddings `lm_head.weight` is usually absent; where it is stored
anyway (Qwen/Qwen3-1.7B's index maps it to a shard) it is ignored, as transformers ties it. The stop tokens are
generation_config.json's `eos_token_id` when there is one (what transformers' generate stops on: Qwen3 and
SDAR list both <|im_end|> and <|endoftext|> there), else config.json's.

Everything is validated before any weight is read: architecture, Orthrus fields, every tensor name and shape;
every JSON file parses and every safetensors file is as long as its header says (a truncated download is
reported before loading, naming the file and how to fetch it again: `CorruptFileError`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import Qwen2Config, Qwen3Config

from .jsonfile import write_json
from .model import OrthrusForCausalLM

ORTHRUS_ARCHITECTURES = {"OrthrusLM"}
# Plain Qwen3 weights, loaded without a diffusion view; SDAR (JetLM/SDAR-*-Chat) is Qwen3 weights decoded as a
# block-diffusion LM (block_diffusion.py), its remote code not run.
AR_ARCHITECTURES = {"Qwen3ForCausalLM", "SDARForCausalLM"}
# Qwen2 weights; Fast-dLLM v2 (Efficient-Large-Model/Fast_dLLM_v2_*) is Qwen2.5 fine-tuned into a block-diffusion
# LM, its config a Qwen2 one plus `bd_size`, its remote code not run either.
QWEN2_ARCHITECTURES = {"Qwen2ForCausalLM", "Fast_dLLM_QwenForCausalLM"}
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
GENERATION_CONFIG = "generation_config.json"
# What a decoder needs from a hub repository; everything else (remote code, READMEs, other formats) stays.
HUB_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.jinja", "tokenizer*")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the problem and what to do."""


class CorruptFileError(CheckpointError):
    """A checkpoint file that cannot be read at all: truncated or damaged weights, a JSON file that does not
    parse, an index naming shards that are not there. Raised even where load problems are collected
    (formats.describe), as nothing else about the checkpoint can be trusted."""


def refetch_hint(path: str | os.PathLike, names: list[str] | None = None) -> str:
    """What to do about a damaged checkpoint file (or the files `names` next to it): fetch it again (from its
    repository when it sits in the hub cache), or write it again."""
    path = Path(path)
    parts, it = path.parts, "them" if names and len(names) > 1 else "it"
    for i, part in enumerate(parts[:-3]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            repo = part.removeprefix("models--").replace("--", "/")
            folder = "/".join(parts[i + 3 : -1])
            files = " ".join(f"{folder}/{n}" if folder else n for n in names or [path.name])
            return (
                f"re-download {it}: `hf download {repo} {files} --force-download` (or delete {it} from the "
                f"Hugging Face hub cache, the snapshot link and its blob, and run again to fetch {it})"
            )
    files = " ".join(names or [path.name])
    return (
        f"re-download {it} (for a hub checkpoint: `hf download <owner/name> {files} --local-dir "
        f"{path.parent}`) or save the checkpoint again"
    )


def read_json(path: str | os.PathLike, hint: str | None = None) -> dict:
    """A checkpoint's JSON file (config.json, an index, ...), which must hold an object; a file that does not
    parse is a CorruptFileError naming it, where it breaks and `hint` (default: fix it or fetch it again)."""
    path = Path(path)
    hint = hint or f"the file is damaged or was edited by hand: fix it, or {refetch_hint(path)}"
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorruptFileError(f"{path}: not valid JSON (not UTF-8 text: byte {e.start}); {hint}") from None
    except json.JSONDecodeError as e:
        raise CorruptFileError(
            f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); {hint}"
        ) from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"{path}: expected a JSON object, found a {type(value).__name__}; {hint}")
    return value


def check_safetensors(path: str | os.PathLike) -> None:
    """A safetensors file's header parses and its tensor data is exactly as long as the header says: the
    format is an 8-byte little-endian header length, the JSON header (`data_offsets` per tensor, relative to
    the end of the header), then the data. safetensors may only notice a short file when a tensor is read."""
    path = Path(path)

    def corrupt(problem: str) -> CorruptFileError:
        return CorruptFileError(
            f"{path}: {problem}; the file is incomplete or damaged (an interrupted download or copy?): "
            f"{refetch_hint(path)}"
        )

    try:
        size = path.stat().st_size
        if size < 8:
            raise corrupt(f"truncated: {size} bytes, too short for a safetensors header")
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if length > size - 8:
                raise corrupt(
                    f"truncated or corrupt safetensors header: its length field says {length} bytes, but only "
                    f"{size - 8} follow"
                )
            raw = f.read(length)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise corrupt(f"corrupt safetensors header (not valid JSON: {e})") from None
    if not isinstance(header, dict):
        raise corrupt("corrupt safetensors header (not a JSON object)")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]
        ):
            raise corrupt(f"corrupt safetensors header (tensor {name!r} has no valid data_offsets)")
        end = max(end, offsets[1])
    expected = 8 + length + end
    if size < expected:
        raise corrupt(
            f"truncated: the tensor data is {expected - size} bytes shorter than its header says (the file is "
            f"{size} bytes, the header needs {expected})"
        )
    if size > expected:
        raise corrupt(
            f"corrupt: {size - expected} bytes follow the last tensor its header lists (the file is {size} "
            f"bytes, the header accounts for {expected})"
        )


@contextmanager
def open_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> Iterator:
    """`safe_open` after `check_safetensors`; whatever safetensors still rejects, opening the file or reading a
    tensor, is a CorruptFileError naming the file."""
    check_safetensors(path)
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            yield f
    except SafetensorError as e:
        raise CorruptFileError(
            f"{path}: not a readable safetensors file ({e}): the file is damaged; {refetch_hint(path)}"
        ) from None


def resolve(
    path_or_id: str | os.PathLike, revision: str | None = None, patterns: tuple[str, ...] = HUB_PATTERNS
) -> Path:
    """A local checkpoint directory, or a hub id downloaded (or found in the local hub cache): the files
    matching `patterns` (draft heads in the EAGLE format need "*.bin" too). A hub id may name its revision as
    `owner/name@revision` (how run.json names a hub snapshot)."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_id)
    if revision is None and "@" in name and not path.exists():
        name, revision = name.split("@", 1)
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise CheckpointError(
            f"{str(path_or_id)!r} is not a checkpoint directory (and not a hub id of the form owner/name)"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=list(patterns)))
    except Exception as e:  # offline, unknown repo, gated, ...: all end the same way for the user
        raise CheckpointError(
            f"{name!r} is not a local directory and could not be fetched from the Hugging Face hub "
            f"({type(e).__name__}: {e}). Pass a local checkpoint directory, or check the id and your network "
            "(HF_HUB_OFFLINE, HF_TOKEN)."
        ) from e


def load_config(directory: str | os.PathLike) -> tuple[Qwen3Config | Qwen2Config, bool]:
    """Read and validate config.json -> (config, has_diffusion_view)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"no config.json in {directory}")
    raw = read_json(path)
    raw.pop("auto_map", None)  # points at remote code we deliberately do not run
    archs = set(raw.get("architectures") or [])
    if archs & QWEN2_ARCHITECTURES:
        # model_type names the attention flavour the model builds (Fast-dLLM v2 calls it "Fast_dLLM_Qwen").
        config = Qwen2Config.from_dict({**raw, "model_type": "qwen2"})
        config.eos_token_id = eos_token_id(directory, raw)
        return config, False
    if archs & ORTHRUS_ARCHITECTURES:
        orthrus = True
    elif archs & AR_ARCHITECTURES:
        orthrus = False
    else:
        raise CheckpointError(
            f"{path}: unknown architecture {sorted(archs) or 'none given'}; supported: "
            f"{sorted(ORTHRUS_ARCHITECTURES)} (Orthrus) and "
            f"{sorted(AR_ARCHITECTURES | QWEN2_ARCHITECTURES)} (load AR-only)"
        )
    config = Qwen3Config.from_dict(raw)
    config.eos_token_id = eos_token_id(directory, raw)
    if orthrus:
        for key in ("block_size", "mask_token_id"):
            value = getattr(config, key, None)
            if not isinstance(value, int) or isinstance(value, bool):
                raise CheckpointError(f"{path}: an OrthrusLM config needs an integer {key!r}, got {value!r}")
        if config.block_size < 2:
            raise CheckpointError(f"{path}: block_size must be >= 2, got {config.block_size}")
        if not 0 <= config.mask_token_id < config.vocab_size:
            raise CheckpointError(
                f"{path}: mask_token_id {config.mask_token_id} is outside the vocabulary [0, {config.vocab_size})"
            )
    return config, orthrus


def eos_token_id(directory: str | os.PathLike, config: dict) -> int | list[int] | None:
    """What generation stops on: generation_config.json's eos_token_id (an id or a list) when it has one,
    else config.json's."""
    path = Path(directory) / GENERATION_CONFIG
    generation = read_json(path) if path.is_file() else {}
    return generation.get("eos_token_id", config.get("eos_token_id"))


def weight_files(directory: Path) -> dict[str, Path]:
    """tensor name -> the safetensors file holding it."""
    index = directory / INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not (
            isinstance(weight_map, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items())
        ):
            raise CorruptFileError(
                f"{index}: no valid weight_map (an object mapping tensor names to shard files); the file is "
                f"damaged: {refetch_hint(index)}"
            )
        missing = sorted({f for f in weight_map.values() if not (directory / f).is_file()})
        if missing:
            raise CorruptFileError(
                f"{index} lists shard files that are not there: {missing}; the download is incomplete: "
                + refetch_hint(index, missing)
            )
        return {name: directory / f for name, f in weight_map.items()}
    single = directory / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {directory}")
    with open_safetensors(single) as f:
        return dict.fromkeys(f.keys(), single)


def expected_shapes(config: Qwen3Config, orthrus: bool) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = OrthrusForCausalLM(config, diffusion_view=orthrus)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        del shapes["lm_head.weight"]
    return shapes


def tensor_headers(files: dict[str, Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of every tensor, from the safetensors headers alone (no weight is read)."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for file in set(files.values()):
        with open_safetensors(file) as f:
            for name in f.keys():
                if files.get(name) == file:
                    tensor = f.get_slice(name)
                    out[name] = (tuple(tensor.get_shape()), tensor.get_dtype())
    return out


def tied_lm_head_stored(config, files: dict[str, Path]) -> bool:
    """A tied checkpoint that stores lm_head.weight anyway (Qwen/Qwen3-1.7B): the stored copy is ignored."""
    return bool(config.tie_word_embeddings) and "lm_head.weight" in files


def check_tensors(directory: Path, config, orthrus: bool, files: dict[str, Path]) -> None:
    """Every tensor the config implies is there with its shape, and nothing else."""
    actual = {name: shape for name, (shape, _) in tensor_headers(files).items()}
    expected = expected_shapes(config, orthrus)
    if tied_lm_head_stored(config, files):
        expected["lm_head.weight"] = expected["model.embed_tokens.weight"]
    check_shapes(f"the weights in {directory} do not match its config.json", actual, expected)


def check_shapes(
    what: str,
    actual: dict[str, tuple[int, ...]],
    expected: dict[str, tuple[int, ...]],
    hint: str = "check that config.json belongs to these weights, e.g. hidden size, layers, vocabulary, "
    "tie_word_embeddings",
) -> None:
    """Raise a CheckpointError listing missing, unexpected and mis-shaped tensors, if there are any."""
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    wrong = [
        f"{n}: expected {expected[n]}, found {actual[n]}"
        for n in sorted(set(expected) & set(actual))
        if expected[n] != actual[n]
    ]
    problems = []
    for title, items in (
        ("missing tensors", missing),
        ("unexpected tensors", unexpected),
        ("shape mismatches", wrong),
    ):
        if items:
            shown = "\n    ".join(items[:12]) + (
                f"\n    ... and {len(items) - 12} more" if len(items) > 12 else ""
            )
            problems.append(f"  {title} ({len(items)}):\n    {shown}")
    if problems:
        raise CheckpointError(f"{what}:\n" + "\n".join(problems) + f"\n({hint})")


def load_model(
    path_or_id: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    revision: str | None = None,
) -> OrthrusForCausalLM:
    """Load an Orthrus (or plain Qwen3) checkpoint for inference, in `dtype` on `device`."""
    directory = resolve(path_or_id, revision)
    config, orthrus = load_config(directory)
    files = weight_files(directory)
    check_tensors(directory, config, orthrus, files)
    if tied_lm_head_stored(config, files):
        del files["lm_head.weight"]

    device = torch.device(device)
    state = {}
    for file in sorted(set(files.values())):
        with open_safetensors(file, device) as f:
            for name in f.keys():
                if files.get(name) == file:
                    state[name] = f.get_tensor(name).to(dtype)
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    with torch.device("meta"):
        model = OrthrusForCausalLM(config, diffusion_view=orthrus)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    # The RoPE frequencies, non-persistent buffers no state dict holds, are still on the meta device.
    model.model.rotary_emb.place_frequencies(device)
    model.name_or_path = str(path_or_id)
    return model.eval()


def save_model(
    model: OrthrusForCausalLM,
    directory: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write config.json and safetensors (sharded with an index above `max_shard_bytes`) in the official format."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = Qwen3Config.from_dict(model.config.to_dict())
    config.architectures = ["OrthrusLM"] if model.has_diffusion_view else ["Qwen3ForCausalLM"]
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        del state["lm_head.weight"]
    config.dtype = str(next(iter(state.values())).dtype).removeprefix("torch.")

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    names = (
        [SINGLE_FILE]
        if len(shards) == 1
        else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    )
    # Everything is written under temporary names first, so a failure leaves any earlier checkpoint intact.
    staged: dict[str, Path] = {}
    for name, shard in zip(names, shards, strict=True):
        staged[name] = directory / f".{name}.partial"
        save_file(shard, staged[name], metadata={"format": "pt"})
    if len(shards) > 1:
        weight_map = {t: name for name, shard in zip(names, shards, strict=True) for t in shard}
        total = sum(t.numel() * t.element_size() for t in state.values())
        staged[INDEX_FILE] = directory / f".{INDEX_FILE}.partial"
        write_json(staged[INDEX_FILE], {"metadata": {"total_size": total}, "weight_map": weight_map})
    staged["config.json"] = directory / ".config.json.partial"
    config.to_json_file(staged["config.json"], use_diff=False)
    for stale in [
        directory / SINGLE_FILE,
        directory / INDEX_FILE,
        *directory.glob("model-*-of-*.safetensors"),
    ]:
        if stale.name not in staged:
            stale.unlink(missing_ok=True)
    for name, path in staged.items():
        os.replace(path, directory / name)
    return directory
