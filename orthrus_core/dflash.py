"""DFlash (z-lab/dflash): a small block-diffusion drafter conditioned on the target's hidden states, with chain
verification.

Drafter (public format `DFlashDraftModel`, e.g. z-lab/Qwen3-8B-DFlash-b16): a few Qwen3-style layers (q/k
norms, RoPE, non-causal attention); the target's hidden states after layers `target_layer_ids` are
concatenated, projected by `fc` and normed by `hidden_norm` into one context row per committed token, and in
every draft layer these rows are turned into extra keys and values by that layer's own k/v projections (with
k_norm) in front of the block's. Queries come only from the block. The block is [root, MASK x (B-1)] embedded
with the target's embeddings; the drafter's final `norm` then the target's lm_head give logits, and block row
i predicts block position i (no shift), so rows 1..B-1 give B-1 greedy drafts, whatever the temperature.

The draft cache keeps the context rows only: each cycle writes the new context rows and the block, then
commits the context rows (DFlash's `crop(start)`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import (
    Qwen3MLP,
    Qwen3RMSNorm,
    rotate_half,
)

from .attention import Visibility, attend
from .checkpoint import CheckpointError, check_shapes, open_safetensors, read_json, resolve
from .engine import row_bucket
from .host import upload
from .jsonfile import write_json
from .loop import CachedDrafter, Proposal
from .memory import PassBytes, activations, expanded_kv_bytes, masked_pass_bytes, rope_bytes
from .model import KVCache, OrthrusForCausalLM, head_dim
from .rope import Qwen3Rotary

ARCHITECTURE = "DFlashDraftModel"
WEIGHTS = "model.safetensors"


def build_target_layer_ids(num_target_layers: int, num_draft_layers: int) -> list[int]:
    """DFlash's default: layers spread evenly from 1 to L-3 (L // 2 for a single draft layer)."""
    L, n = num_target_layers, num_draft_layers
    if n == 1:
        return [L // 2]
    return [round(1 + i * (L - 4) / (n - 1)) for i in range(n)]


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, D] rotated by cos/sin [B, T, D]."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


class DFlashAttention(nn.Module):
    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.head_dim = head_dim(config)
        n, n_kv, H = config.num_attention_heads, config.num_key_value_heads, config.hidden_size
        self.q_proj = nn.Linear(H, n * self.head_dim, bias=False)
        self.k_proj = nn.Linear(H, n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(H, n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n * self.head_dim, H, bias=False)
        self.q_norm = Qwen3RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = Qwen3RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(self, x, context, cos, sin, visible, kv_context):
        """x [B, Q, H] block rows, context [B, C, H] new context rows; cos/sin for the C + Q positions; what the
        block rows see of the keys kv_context returns: `visible` (orthrus_core.attention)."""
        B, Q, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, Q, -1, self.head_dim)).transpose(1, 2)
        rows = torch.cat([context, x], dim=1)
        k = self.k_norm(self.k_proj(rows).view(B, rows.shape[1], -1, self.head_dim)).transpose(1, 2)
        v = self.v_proj(rows).view(B, rows.shape[1], -1, self.head_dim).transpose(1, 2)
        # Keys sit at every new position (context rows, then the block); queries only at the block's.
        q, k = rope(q, cos[:, -Q:], sin[:, -Q:]), rope(k, cos, sin)
        keys, values = kv_context(k, v)
        out = attend(q, keys, values, visible)
        return self.o_proj(out.transpose(1, 2).reshape(B, Q, -1))


class DFlashLayer(nn.Module):
    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.self_attn = DFlashAttention(config)
        self.mlp = Qwen3MLP(config)
        self.input_layernorm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x, context, cos, sin, visible, kv_context):
        x = x + self.self_attn(self.input_layernorm(x), context, cos, sin, visible, kv_context)
        return x + self.mlp(self.post_attention_layernorm(x))


class DFlashDraftModel(nn.Module):
    def __init__(self, config: Qwen3Config):
        super().__init__()
        self.config = config
        self.target_layer_ids = list(config.dflash_config["target_layer_ids"])
        self.mask_token_id = config.dflash_config["mask_token_id"]
        self.block_size = config.block_size
        H = config.hidden_size
        self.layers = nn.ModuleList(DFlashLayer(config) for _ in range(config.num_hidden_layers))
        self.fc = nn.Linear(len(self.target_layer_ids) * H, H, bias=False)
        self.hidden_norm = Qwen3RMSNorm(H, eps=config.rms_norm_eps)
        self.norm = Qwen3RMSNorm(H, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen3Rotary(config)

    @property
    def capture(self) -> tuple[int, ...]:
        """The target features, as `output_hidden_states` indices (the output of layer l is index l + 1)."""
        return tuple(i + 1 for i in self.target_layer_ids)

    def forward(self, block_embeds, features, positions, visible, kv_context):
        """block_embeds [B, Q, H], features [B, C, n H] of the new context rows, positions [B or 1, C + Q]
        (context rows first), kv_context(layer, k, v) -> keys/values; -> normed hidden states [B, Q, H]."""
        context = self.hidden_norm(self.fc(features))
        cos, sin = self.rotary_emb(block_embeds, positions)
        x = block_embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, context, cos, sin, visible, lambda k, v, i=i: kv_context(i, k, v))
        return self.norm(x)


class DFlashDrafter(CachedDrafter):
    """DFlash for every active row at once. A row's new context rows are padded to the batch's most; the block
    sits after the padding in the draft cache but at the row's own positions, and its visibility hides the
    padding from it. `pending` per row: target features of committed tokens not in the draft cache yet."""

    def __init__(self, draft: DFlashDraftModel, target: OrthrusForCausalLM, block_size: int | None = None):
        self.draft, self.target = draft, target
        self.block_size = draft.block_size if block_size is None else block_size
        if self.block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {self.block_size}")
        self.capture = draft.capture
        self.cache_config, self.extra = draft.config, self.block_size

    @property
    def max_nodes(self) -> int:
        return self.block_size

    def admit(self, b, prompt, features):
        """The prompt's context rows go into row b's draft cache now, alone (the drafter's prefill: one pass
        with a block whose drafts are not used), so that a cycle pads every row's new rows to a few."""
        T, K = len(prompt), self.block_size
        block = torch.full((1, K), self.draft.mask_token_id, dtype=torch.long, device=prompt.device)
        row = self.draft_cache.row(b)
        kv = lambda i, k, v: row.extend(i, k, v, start=0)  # noqa: E731
        positions = torch.arange(T + K, device=prompt.device)[None]
        every = torch.ones(1, K, T + K, dtype=torch.bool, device=prompt.device)  # the context and the block
        visible = Visibility.after([0], K, "whole", prompt.device, window=every)
        self.draft(self.target.model.embed_tokens(block), features[None], positions, visible, kv)
        self.draft_cache.lengths.append(T)
        self.pending.append(features.new_empty(0, features.shape[1]))  # not a view: the prompt's go now

    def accept(self, counts, tokens, features):
        self.pending = [features[b, :n] for b, n in enumerate(counts)]

    def propose(self, roots, params, generators):
        active, K, cache, static = roots.shape[0], self.block_size, self.draft_cache, self.engine.static
        # Over several rows the pass is ragged (FlexAttention on a GPU, compiled per shape): it runs over the
        # engine's row bucket of the active rows (padding rows bring no context rows and write at slot 0 of an
        # unused row of the draft cache), and its window is as wide as the most padding a row can have before its
        # block (K, a row admitted since the last cycle) plus the block, whatever this cycle's. A static engine
        # runs it so at one row too, its new context rows padded to the most a row can bring (K): one shape per
        # row bucket, its inputs tensors.
        R = row_bucket(active, cache.rows)
        pending = self.pending + [self.pending[0][:0]] * (R - active)
        roots = torch.cat([roots, roots.new_zeros(R - active)])
        lengths = cache.lengths + [0] * (R - active)
        n = [len(f) for f in pending]
        features = pending[0].new_zeros(R, K if static else max(n), pending[0].shape[-1])
        for b, f in enumerate(pending):
            features[b, : n[b]] = f
        committed = [c + k for c, k in zip(lengths, n, strict=True)]  # and the new context rows
        starts, new = upload([lengths, n], roots.device)
        inputs = (roots, features, starts, new, None if static else committed)
        ragged, rows = R > 1 or static, R if static else active
        fixed = (self.draft, self.target, cache.k[:, :R], cache.v[:, :R], K, ragged, rows)
        drafts = self.engine.run(draft_block, inputs, fixed)
        cache.lengths = committed[:active]  # keep the context rows, drop the padding and the block
        return Proposal(torch.cat([roots[:active, None], drafts[:active]], 1), [K - 1] * active, 1)


def draft_block(roots, features, starts, new, prefix, draft, target, k_cache, v_cache, K: int, ragged: bool,
                rows: int):  # fmt: skip
    """One DFlash pass over R rows: each row's new context rows (features [R, M, F], `new` [R] of them real,
    written from slot `starts` [R] on) then its block [root, MASK x (K-1)] after the padding, at the row's own
    positions -> the greedy drafts [rows, K-1] of the first `rows` rows. The block sees its row's committed and
    new context rows and itself, not the padding between them: one length (`ragged` False, one row, no padding)
    sees a whole block; otherwise a window of 2K after the row's prefix. `prefix`: the rows' committed lengths
    as host ints (eager), or None (a static pass: from the tensors)."""
    R, M = features.shape[:2]
    device = roots.device
    block = torch.full((R, K), draft.mask_token_id, dtype=torch.long, device=device)
    block[:, 0] = roots
    offsets = torch.arange(M + K, device=device)
    slots = starts[:, None] + offsets
    committed = starts + new
    positions = torch.cat([slots[:, :M], committed[:, None] + offsets[:K]], 1)
    pad = (M - new)[:, None, None]
    columns = torch.arange(2 * K if ragged else K, device=device)
    window = ((columns >= pad) & (columns < pad + K)).expand(R, K, -1)
    visible = Visibility.after(committed if prefix is None else prefix, K, "pattern" if ragged else "whole",
                               device, window=window)  # fmt: skip
    embeds = target.model.embed_tokens(block)
    hidden = draft(embeds, features, positions, visible, KVCache.view(k_cache, v_cache).scatter(slots))
    return target.lm_head(hidden[:rows, 1:]).argmax(-1)

    # Its cost (orthrus_core.loop.Drafter; its cache and pending features are CachedDrafter's).

    def prefill_bytes(self, sizing):
        """`admit`: one pass of the block over the prompt's T context rows and itself (fc output, hidden_norm,
        the context and block rows)."""
        dc, K, T, b = self.draft.config, self.block_size, sizing.prompt_tokens, sizing.itemsize
        rows = 3 * (T + K) * dc.hidden_size * b
        workspace = activations(dc, K, b, kv_tokens=T + K) + rows + rope_bytes(dc, T + K, b)
        return workspace + (expanded_kv_bytes(dc, 1, T + K, b) if sizing.fp32_cuda else 0)

    def draft_pass_bytes(self, sizing, verify):
        """`propose`'s pass: the block over the pending features (fc output, hidden_norm, the context and block
        rows) under a mask over the draft cache; the target's lm_head over the block, in the model dtype."""
        dc, K, R, b = self.draft.config, self.block_size, sizing.rows, sizing.itemsize
        mask = masked_pass_bytes(dc, R, K, sizing.capacity + self.extra, b, sizing.cuda, sizing.fp32_cuda)
        workspace = activations(dc, R * K, b, kv_tokens=2 * R * K) + R * K * sizing.features * b
        workspace += 3 * 2 * R * K * dc.hidden_size * b + mask
        return PassBytes(workspace, R * (K - 1) * sizing.config.vocab_size * b)


# ---------------------------------------------------------------------------------------------- checkpoints


def dflash_config(
    target_config: Qwen3Config,
    num_layers: int,
    block_size: int,
    mask_token_id: int,
    target_layer_ids: list[int] | None = None,
) -> Qwen3Config:
    """A drafter config with the target's dimensions (as the public drafters have)."""
    t = target_config
    L = t.num_hidden_layers
    return Qwen3Config(
        architectures=[ARCHITECTURE],
        hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size,
        num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads,
        head_dim=head_dim(t),
        num_hidden_layers=num_layers,
        layer_types=["full_attention"] * num_layers,
        rms_norm_eps=t.rms_norm_eps,
        rope_parameters=dict(t.rope_parameters),
        max_position_embeddings=t.max_position_embeddings,
        vocab_size=t.vocab_size,
        tie_word_embeddings=False,
        block_size=block_size,
        num_target_layers=L,
        dflash_config={
            "mask_token_id": mask_token_id,
            "target_layer_ids": target_layer_ids or build_target_layer_ids(L, num_layers),
        },
    )


def draft_config(raw: dict, num_target_layers: int) -> Qwen3Config:
    """The drafter's config, with `dflash_config` filled in (DFlash's default layers where it has none)."""
    raw = {k: v for k, v in raw.items() if k != "auto_map"}  # remote code is never run
    config = Qwen3Config.from_dict(raw)
    extra = raw.get("dflash_config") or {}
    layer_ids = extra.get("target_layer_ids") or build_target_layer_ids(
        raw.get("num_target_layers", num_target_layers), config.num_hidden_layers
    )
    config.dflash_config = {"mask_token_id": extra.get("mask_token_id"), "target_layer_ids": layer_ids}
    return config


def fit_problems(raw: dict, config: Qwen3Config, target_config) -> list[str]:
    """What stops this drafter from drafting for a target with `target_config` (empty: it fits)."""
    t, problems = target_config, []
    if not isinstance(raw.get("block_size"), int) or raw["block_size"] < 2:
        problems.append(f"block_size must be an integer >= 2, got {raw.get('block_size')!r}")
    mask_id = config.dflash_config["mask_token_id"]
    if not isinstance(mask_id, int) or not 0 <= mask_id < t.vocab_size:
        problems.append(
            f"dflash_config.mask_token_id {mask_id!r} is not a token of the target [0, {t.vocab_size})"
        )
    if config.vocab_size != t.vocab_size:
        problems.append(f"vocabulary {config.vocab_size} != the target's {t.vocab_size}")
    if config.hidden_size != t.hidden_size:
        problems.append(f"hidden size {config.hidden_size} != the target's {t.hidden_size}")
    layer_ids = config.dflash_config["target_layer_ids"]
    if not all(0 <= i < t.num_hidden_layers for i in layer_ids):
        problems.append(
            f"target_layer_ids {layer_ids} are not layers of the target (0..{t.num_hidden_layers - 1})"
        )
    return problems


def load_dflash(
    path_or_id: str | os.PathLike, target: OrthrusForCausalLM, *, revision: str | None = None
) -> DFlashDraftModel:
    """Load a DFlash drafter for `target`, in the target's dtype and device, validated against both."""
    directory = resolve(path_or_id, revision)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"no config.json in {directory}")
    raw = read_json(config_path)
    if ARCHITECTURE not in (raw.get("architectures") or []):
        raise CheckpointError(
            f"{config_path}: architectures {raw.get('architectures')} is not a DFlash drafter ({ARCHITECTURE})"
        )
    config = draft_config(raw, target.config.num_hidden_layers)
    problems = fit_problems(raw, config, target.config)
    if problems:
        raise CheckpointError(
            f"{directory}: this DFlash drafter does not fit the target: " + "; ".join(problems)
        )
    if not (directory / WEIGHTS).is_file():
        raise CheckpointError(f"no {WEIGHTS} in {directory}")
    with open_safetensors(directory / WEIGHTS) as f:
        actual = {n: tuple(f.get_slice(n).get_shape()) for n in f.keys()}
    check_shapes(
        f"the DFlash weights in {directory} do not match its config.json", actual, expected_shapes(config)
    )
    p = target.lm_head.weight
    with open_safetensors(directory / WEIGHTS, p.device) as f:
        state = {n: f.get_tensor(n).to(p.dtype) for n in f.keys()}
    draft = DFlashDraftModel(config).to(dtype=p.dtype, device=p.device)
    draft.load_state_dict(state, strict=True)
    draft.name_or_path = str(path_or_id)
    return draft.eval()


def expected_shapes(config: Qwen3Config) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {n: tuple(v.shape) for n, v in DFlashDraftModel(config).state_dict().items()}


def save_dflash(
    draft: DFlashDraftModel, directory: str | os.PathLike, *, dtype: torch.dtype | None = None
) -> Path:
    """Write config.json and model.safetensors in the public format (no embedding, no lm_head)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {n: v.detach().to(dtype or v.dtype).contiguous().cpu() for n, v in draft.state_dict().items()}
    c = draft.config
    config = {
        "architectures": [ARCHITECTURE],
        "model_type": "qwen3",
        "block_size": draft.block_size,
        "num_target_layers": c.num_target_layers,
        "dflash_config": {"mask_token_id": draft.mask_token_id, "target_layer_ids": draft.target_layer_ids},
        "num_hidden_layers": c.num_hidden_layers,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": head_dim(c),
        "layer_types": ["full_attention"] * c.num_hidden_layers,
        "rope_theta": c.rope_parameters["rope_theta"],
        "rms_norm_eps": c.rms_norm_eps,
        "max_position_embeddings": c.max_position_embeddings,
        "vocab_size": c.vocab_size,
        "hidden_act": "silu",
        "attention_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": str(state["fc.weight"].dtype).removeprefix("torch."),
    }
    write_json(directory / "config.json", config)
    save_file(state, directory / WEIGHTS, metadata={"format": "pt"})
    return directory
