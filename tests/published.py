"""Checkpoints built from the published config files in ../shared/checkpoint-configs (SOURCES.md there):
each config as published except the layers cut (and, where `narrow`, the widths shrunk, vocabulary and
token ids kept), random weights with the published tensor names, shapes and dtype.

Tensor names and shapes come from sources independent of the project's loaders: transformers' own
Qwen3ForCausalLM for Qwen3-shaped targets (checked against SDAR's published weight_map), chiennv2000/orthrus'
modeling code for the diffusion view's `*_diff` tensors, the layout a third party read off
AngelSlim/Qwen3-1.7B_eagle3's pytorch_model.bin for EAGLE-3 heads, and z-lab/dflash's model code for DFlash.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3ForCausalLM

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Narrow widths: what the tests decode in float32 (the vocabulary and every token id stay the published ones).
NARROW = dict(
    hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16
)


def published(configs: Path, repo: str, file: str = "config.json") -> dict:
    return json.loads((configs / repo.replace("/", "__") / file).read_text())


def cut(raw: dict, layers: int, narrow: bool) -> dict:
    """The config with `layers` layers (and the per-layer lists cut to match), narrowed if asked."""
    raw = {**raw, "num_hidden_layers": layers}
    if "layer_types" in raw:
        raw["layer_types"] = raw["layer_types"][:layers]
    if "max_window_layers" in raw:
        raw["max_window_layers"] = min(raw["max_window_layers"], layers)
    return {**raw, **NARROW} if narrow else raw


def _random(shape, dtype, generator) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.ones(shape, dtype=torch.bool)
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    # 0.3 (not 0.02): spread-out logits, so greedy outputs vary and ties are rare at narrow widths.
    scale = 0.3 if shape[-1] <= NARROW["intermediate_size"] else 0.02
    n = 1
    for d in shape:
        n *= d
    if n <= CHUNK:
        return torch.empty(shape, dtype=torch.float32).normal_(0, scale, generator=generator).to(dtype)
    # Published widths: a random chunk repeated (the loaders and decoders care about names, shapes and dtype,
    # not about every weight being drawn independently, and drawing billions of them takes minutes).
    chunk = torch.empty(CHUNK + 7, dtype=torch.float32).normal_(0, scale, generator=generator).to(dtype)
    return (
        chunk.repeat(-(-n // chunk.numel()))[:n].view(shape).clone()
    )  # its own storage: torch.save writes all


CHUNK = 1 << 20


def qwen3_shapes(raw: dict, *, orthrus: bool, stored_lm_head: bool) -> dict[str, tuple[int, ...]]:
    """Qwen3 tensor names and shapes as transformers' Qwen3ForCausalLM has them, plus Orthrus' diffusion view
    (chiennv2000/orthrus src/model.py: `{q,k,v,o}_proj_diff`, `{q,k}_norm_diff`, shaped as their AR twins)."""
    config = Qwen3Config.from_dict({k: v for k, v in raw.items() if k not in ("auto_map", "architectures")})
    with torch.device("meta"):
        shapes = {n: tuple(t.shape) for n, t in Qwen3ForCausalLM(config).state_dict().items()}
    if raw.get("tie_word_embeddings") and not stored_lm_head:
        del shapes["lm_head.weight"]
    if orthrus:
        for name in list(shapes):
            for part in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"):
                if f"self_attn.{part}.weight" in name:
                    shapes[name.replace(f"{part}.weight", f"{part}_diff.weight")] = shapes[name]
    return shapes


def write_target(
    directory: Path,
    raw: dict,
    *,
    orthrus: bool = False,
    stored_lm_head: bool = False,
    weight_map: dict[str, str] | None = None,
    extra_files: dict[str, dict] | None = None,
    tokenizer: Path | None = None,
    seed: int = 0,
) -> Path:
    """A target checkpoint: config.json as given, random weights in its dtype, sharded as `weight_map` (the
    published index, cut to the layers kept) or in one model.safetensors, other JSON files as given, and the
    tokenizer files of `tokenizer` (a directory)."""
    directory.mkdir(parents=True, exist_ok=True)
    dtype = DTYPES[raw.get("torch_dtype") or raw.get("dtype") or "bfloat16"]
    shapes = qwen3_shapes(raw, orthrus=orthrus, stored_lm_head=stored_lm_head)
    g = torch.Generator().manual_seed(seed)
    tensors = {name: _random(shape, dtype, g) for name, shape in shapes.items()}
    if weight_map is None:
        save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    else:
        kept = {n: f for n, f in weight_map.items() if n in tensors}
        assert set(kept) == set(tensors), sorted(set(tensors) ^ set(kept))  # the published names, exactly
        for file in sorted(set(kept.values())):
            save_file(
                {n: tensors[n] for n, f in kept.items() if f == file},
                directory / file,
                metadata={"format": "pt"},
            )
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                 "weight_map": kept}  # fmt: skip
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    if tokenizer is not None:
        for file in tokenizer.iterdir():
            shutil.copy(file, directory / file.name)
    for name, content in (extra_files or {}).items():
        (directory / name).write_text(json.dumps(content, indent=2))
    (directory / "config.json").write_text(json.dumps(raw, indent=2))
    return directory


def write_eagle3(directory: Path, raw: dict, *, dtype: str, seed: int = 0) -> Path:
    """An EAGLE-3 head in AngelSlim's layout (pytorch_model.bin: fc, midlayer.*, norm, lm_head over the draft
    vocabulary, d2t, t2d; no embedding)."""
    directory.mkdir(parents=True, exist_ok=True)
    H, I, V = raw["hidden_size"], raw["intermediate_size"], raw["vocab_size"]
    D, heads, kv, draft = (
        raw["head_dim"],
        raw["num_attention_heads"],
        raw["num_key_value_heads"],
        raw["draft_vocab_size"],
    )
    shapes = {
        "fc.weight": (H, 3 * H),
        "midlayer.self_attn.q_proj.weight": (heads * D, 2 * H),
        "midlayer.self_attn.k_proj.weight": (kv * D, 2 * H),
        "midlayer.self_attn.v_proj.weight": (kv * D, 2 * H),
        "midlayer.self_attn.o_proj.weight": (H, heads * D),
        "midlayer.mlp.gate_proj.weight": (I, H),
        "midlayer.mlp.up_proj.weight": (I, H),
        "midlayer.mlp.down_proj.weight": (H, I),
        "midlayer.hidden_norm.weight": (H,),
        "midlayer.input_layernorm.weight": (H,),
        "midlayer.post_attention_layernorm.weight": (H,),
        "norm.weight": (H,),
        "lm_head.weight": (draft, H),
    }
    g = torch.Generator().manual_seed(seed)
    state = {n: _random(s, DTYPES[dtype], g) for n, s in shapes.items()}
    # The draft vocabulary: `draft` target ids, ascending; d2t[i] = target id - i; t2d marks them.
    ids = torch.randperm(V, generator=g)[:draft].sort().values
    state["d2t"] = ids - torch.arange(draft)
    state["t2d"] = torch.zeros(V, dtype=torch.bool)
    state["t2d"][ids] = True
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps(raw, indent=2))
    return directory


DFLASH_LAYER = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "self_attn.q_norm",
                "self_attn.k_norm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm",
                "post_attention_layernorm")  # fmt: skip


def write_dflash(directory: Path, raw: dict, *, seed: int = 0) -> Path:
    """A DFlash drafter in z-lab's layout (model.safetensors: layers.N.*, fc over the target layers' states,
    hidden_norm, norm; no embedding or lm_head)."""
    directory.mkdir(parents=True, exist_ok=True)
    H, I, D = raw["hidden_size"], raw["intermediate_size"], raw["head_dim"]
    q, kv = raw["num_attention_heads"] * D, raw["num_key_value_heads"] * D
    per_layer = {
        "self_attn.q_proj": (q, H), "self_attn.k_proj": (kv, H), "self_attn.v_proj": (kv, H),
        "self_attn.o_proj": (H, q), "self_attn.q_norm": (D,), "self_attn.k_norm": (D,), "mlp.gate_proj": (I, H),
        "mlp.up_proj": (I, H), "mlp.down_proj": (H, I), "input_layernorm": (H,), "post_attention_layernorm": (H,),
    }  # fmt: skip
    shapes = {
        f"layers.{i}.{n}.weight": per_layer[n] for i in range(raw["num_hidden_layers"]) for n in DFLASH_LAYER
    }
    targets = len(
        (raw.get("dflash_config") or {}).get("target_layer_ids") or [None] * raw["num_hidden_layers"]
    )
    shapes.update({"fc.weight": (H, targets * H), "hidden_norm.weight": (H,), "norm.weight": (H,)})
    g = torch.Generator().manual_seed(seed)
    dtype = DTYPES[raw.get("dtype") or raw.get("torch_dtype") or "bfloat16"]
    save_file({n: _random(s, dtype, g) for n, s in shapes.items()}, directory / "model.safetensors",
              metadata={"format": "pt"})  # fmt: skip
    (directory / "config.json").write_text(json.dumps(raw, indent=2))
    return directory
