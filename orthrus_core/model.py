"""The Orthrus dual-view model: a Qwen3 decoder with a second, "diffusion" view.

Every attention layer owns two sets of q/k/v/o projections and q/k norms: the autoregressive (AR) set of the
frozen base model and the diffusion set (`*_diff`). Everything else is shared by both views: token
embeddings, layer norms, MLPs, the final norm, lm_head, RoPE at absolute positions and the KV cache. A model
built without the diffusion view is a plain Qwen3 causal LM (weight names as in `modeling_qwen3.py`); with a
config of `model_type` "qwen2" it is a Qwen2 causal LM (q/k/v biases, no q/k norms), which is what Fast-dLLM v2
checkpoints are.

Two kinds of forward, both over a static KV cache (`KVCache`):

* AR view (`diffusion=False`): tokens at positions start..start+T-1 attend causally to the cached prefix and
  to each other; their K/V are written into the cache at those positions. Used for prefill, AR steps and the
  Orthrus verify pass.
* Diffusion view (`diffusion=True`): a block at positions start..start+T-1 attends to the cached AR prefix
  [0, start) and bidirectionally to the whole block. Its K/V go into the cache's scratch slots
  [start, start+T) beyond the committed length, which the verify pass at the same positions overwrites right
  after, so the committed cache only ever holds AR-view K/V (the O(1) memory overhead of the method) and no
  prefix is copied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn
from transformers import Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import (
    Qwen3MLP,
    Qwen3RMSNorm,
    apply_rotary_pos_emb,
)

from .attention import CAUSAL, Visibility, attend
from .host import upload
from .rope import Qwen3Rotary

# kv_context(k, v) -> (keys, values): what a layer's new queries attend to, given the new tokens' k and v.
KVContext = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class KVCache:
    """K/V of every layer for a batch of rows, shared by both views: k, v [layers, rows, kv_heads, capacity,
    head_dim]; `lengths` [R] (host ints) counts the committed positions of the R active rows, which are rows
    0..R-1 of the buffers. Row b's K/V are contiguous at slots 0..lengths[b]-1, so a token's slot is its RoPE
    position; rollback is setting a length. Batch size 1 is a cache of one row.

    Zeros, not garbage: a pass over rows of different lengths attends to slots a shorter row has not written,
    under a mask that gives them exactly zero weight, but a NaN left in one would still poison the sum."""

    def __init__(self, config: Qwen3Config, rows: int, capacity: int, *, dtype=None, device=None):
        self.k = torch.zeros(cache_shape(config, rows, capacity), dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.lengths: list[int] = []

    @classmethod
    def view(cls, k: torch.Tensor, v: torch.Tensor) -> KVCache:
        """A cache over existing buffers (a row of a batch's cache), empty."""
        cache = cls.__new__(cls)
        cache.k, cache.v, cache.lengths = k, v, []
        return cache

    @property
    def rows(self) -> int:
        """Rows the buffers hold (the most a batch over this cache can have)."""
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def row(self, b: int) -> KVCache:
        """Row b as a one-row cache (views: what a pass writes there lands in this cache)."""
        return KVCache.view(self.k[:, b : b + 1], self.v[:, b : b + 1])

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor, *, start: int):
        """Write k, v [B, kv_heads, T, D] at slots start..start+T-1 of rows 0..B-1 of `layer`; return the rows'
        whole buffers [B, kv_heads, capacity, D] (views, no copy): the pass's visibility says how many of their
        slots its queries see (orthrus_core.attention)."""
        B, end = k.shape[0], start + k.shape[2]
        self.k[layer, :B, :, start:end] = k
        self.v[layer, :B, :, start:end] = v
        return self.k[layer, :B], self.v[layer, :B]

    def scatter(self, slots: torch.Tensor) -> KVContext:
        """kv_context(layer, k, v) for a pass writing k, v [R, kv_heads, T, D] of rows 0..R-1 at `slots` [R, T]
        (each row its own); it returns the rows' whole buffers, as `extend` does."""
        R = slots.shape[0]
        return slot_writes(self.k[:, :R], self.v[:, :R], slots)

    def compact(self, b: int, start: int, keep: list[int]) -> None:
        """Row b keeps its nodes at slots start + keep (sorted offsets, an accepted tree path) as the slots
        start..start+len(keep)-1: the rollback of a tree verify pass (the length is the caller's)."""
        n = len(keep)
        src = upload(keep, self.k.device) + start
        self.k[:, b, :, start : start + n] = self.k[:, b, :, src]
        self.v[:, b, :, start : start + n] = self.v[:, b, :, src]

    def keep(self, rows: list[int]) -> None:
        """Only these active rows (ascending) stay, as rows 0..len(rows)-1: each kept row is moved down in
        place, one at a time (a source is never overwritten before it is read); the buffers stay where they are
        (an engine's captured passes read them at fixed addresses)."""
        for i, b in enumerate(rows):
            if b != i:
                self.k[:, i].copy_(self.k[:, b])
                self.v[:, i].copy_(self.v[:, b])
        self.lengths = [self.lengths[b] for b in rows]

    def copy_rows_from(self, other: KVCache) -> None:
        """The other cache's active rows and lengths (a cache grown for a longer request)."""
        R, C = len(other.lengths), min(self.capacity, other.capacity)
        self.k[:, :R, :, :C] = other.k[:, :R, :, :C]
        self.v[:, :R, :, :C] = other.v[:, :R, :, :C]
        self.lengths = list(other.lengths)


def slot_writes(k_buffers: torch.Tensor, v_buffers: torch.Tensor, slots: torch.Tensor) -> KVContext:
    """kv_context(layer, k, v) writing a pass's k, v [R, kv_heads, T, D] into buffers [layers, R, kv_heads,
    capacity, D] at `slots` [R, T], each row at its own; it returns the layer's whole buffers. One indexed
    assignment into the whole buffers (the layer an index too, not a view), which torch.compile performs in
    place: a write into a view of a pass's input (`k_buffers[layer]`) is made functional there, a copy of every
    layer's cache per pass and one more of the whole cache back into the buffers."""
    rows = torch.arange(slots.shape[0], device=slots.device)[:, None]

    def kv(layer, k, v):
        at = (torch.full_like(rows, layer), rows, slice(None), slots)
        k_buffers[at] = k.transpose(1, 2)
        v_buffers[at] = v.transpose(1, 2)
        return k_buffers[layer], v_buffers[layer]

    return kv


def cache_shape(config, rows: int, capacity: int) -> tuple[int, ...]:
    """K (or V) of every layer: [layers, rows, kv_heads, capacity, head_dim]."""
    return (config.num_hidden_layers, rows, config.num_key_value_heads, capacity, head_dim(config))


def head_dim(config: Qwen3Config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class Attention(nn.Module):
    def __init__(self, config: Qwen3Config, diffusion_view: bool):
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = head_dim(config)
        self.scaling = self.head_dim**-0.5
        q_out, kv_out = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        # Qwen2 (the base of Fast-dLLM v2) has q/k/v biases, an o_proj without one, and no q/k norms.
        qwen2 = config.model_type == "qwen2"
        qkv_bias, o_bias = (True, False) if qwen2 else (config.attention_bias, config.attention_bias)
        views = ["", "_diff"] if diffusion_view else [""]
        for suffix in views:
            setattr(self, f"q_proj{suffix}", nn.Linear(config.hidden_size, q_out, bias=qkv_bias))
            setattr(self, f"k_proj{suffix}", nn.Linear(config.hidden_size, kv_out, bias=qkv_bias))
            setattr(self, f"v_proj{suffix}", nn.Linear(config.hidden_size, kv_out, bias=qkv_bias))
            setattr(self, f"o_proj{suffix}", nn.Linear(q_out, config.hidden_size, bias=o_bias))
            for norm in ("q_norm", "k_norm"):
                module = nn.Identity() if qwen2 else Qwen3RMSNorm(self.head_dim, eps=config.rms_norm_eps)
                setattr(self, f"{norm}{suffix}", module)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, diffusion: bool):
        """x [B, T, H] -> q [B, heads, T, D], k and v [B, kv_heads, T, D], normed and rotated."""
        sfx = "_diff" if diffusion else ""
        B, T, _ = x.shape
        q = getattr(self, "q_norm" + sfx)(getattr(self, "q_proj" + sfx)(x).view(B, T, -1, self.head_dim))
        k = getattr(self, "k_norm" + sfx)(getattr(self, "k_proj" + sfx)(x).view(B, T, -1, self.head_dim))
        v = getattr(self, "v_proj" + sfx)(x).view(B, T, -1, self.head_dim)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, v

    def attend(self, q, k, v, visible, diffusion: bool) -> torch.Tensor:
        """Attention under `visible` (orthrus_core.attention) and the output projection of the chosen view."""
        out = attend(q, k, v, visible, self.scaling)
        B, _, T, _ = q.shape
        o_proj = self.o_proj_diff if diffusion else self.o_proj
        return o_proj(out.transpose(1, 2).reshape(B, T, -1))

    def forward(self, x, cos, sin, visible, diffusion: bool, kv_context: KVContext):
        q, k, v = self.project(x, cos, sin, diffusion)
        keys, values = kv_context(k, v)
        return self.attend(q, keys, values, visible, diffusion)


class DecoderLayer(nn.Module):
    def __init__(self, config: Qwen3Config, diffusion_view: bool):
        super().__init__()
        self.self_attn = Attention(config, diffusion_view)
        self.mlp = Qwen3MLP(config)
        self.input_layernorm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x, cos, sin, visible, diffusion, kv_context: KVContext):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, visible, diffusion, kv_context)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """`model.*` in checkpoints: embeddings, decoder layers, final norm and the rotary embedding."""

    def __init__(self, config: Qwen3Config, diffusion_view: bool):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(config, diffusion_view) for _ in range(config.num_hidden_layers)
        )
        self.norm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen3Rotary(config)


class OrthrusForCausalLM(nn.Module):
    """Qwen3 causal LM with an optional diffusion view (`config.block_size`, `config.mask_token_id`)."""

    def __init__(self, config: Qwen3Config, diffusion_view: bool = True):
        super().__init__()
        self.config = config
        self.model = Backbone(config, diffusion_view)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def has_diffusion_view(self) -> bool:
        return hasattr(self.model.layers[0].self_attn, "q_proj_diff")

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    def new_cache(self, capacity: int, rows: int = 1) -> KVCache:
        """A cache of `rows` rows on the model's device and dtype (decoders take theirs from an engine)."""
        p = self.lm_head.weight
        return KVCache(self.config, rows, capacity, dtype=p.dtype, device=p.device)

    def rope(self, x: torch.Tensor, positions: torch.Tensor):
        return self.model.rotary_emb(x, positions)

    def forward(
        self,
        input_ids: torch.Tensor,
        start: int,
        cache: KVCache,
        diffusion: bool = False,
        *,
        positions: torch.Tensor | None = None,
        visible=None,
        capture: Sequence[int] = (),
        logits_to_keep: int = 0,
    ):
        """input_ids [B, T] written at slots start..start+T-1 of rows 0..B-1 of `cache` -> float32 logits
        [B, T, V] (of the last `logits_to_keep` positions only, if > 0): every row at the same position (a
        prefill, a uniform batch; the decode loop's passes over rows of different lengths are
        orthrus_core.engine's).

        Reads cache positions [0, start) and writes [start, start+T); see the module docstring for what each
        view attends to. Does not move the cache's lengths: committing is the decoder's decision. A pass may give
        its own RoPE `positions` and `visible` (orthrus_core.attention: e.g. a block-causal prefill). With
        `capture` it returns (logits, features); see `run`.
        """
        B, T = input_ids.shape
        if start + T > cache.capacity:
            raise ValueError(f"cache capacity {cache.capacity} < {start + T} positions needed")
        if positions is None:
            positions = torch.arange(start, start + T, device=input_ids.device)[None]
        # AR queries see keys up to their own position; diffusion queries see the prefix and the whole block. From
        # position 0 (a prefill) that is SDPA's own is_causal: no [T, T] mask, a kernel that never builds it.
        if visible is None:
            if start == 0 and not diffusion:
                visible = CAUSAL
            else:
                shape = "whole" if diffusion else "causal"
                visible = Visibility.after([start] * B, T, shape, input_ids.device)
        return self.run(
            input_ids,
            positions,
            visible,
            diffusion,
            lambda i, k, v: cache.extend(i, k, v, start=start),
            capture=capture,
            logits_to_keep=logits_to_keep,
        )

    def run(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        visible,
        diffusion: bool,
        kv_context: Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        *,
        capture: Sequence[int] = (),
        logits_to_keep: int = 0,
    ):
        """The pass every use shares: input_ids [B, T] at `positions` [B or 1, T] -> float32 logits [B, T, V],
        or [B, logits_to_keep, V] for its last positions when logits_to_keep > 0 (transformers' name): a prefill
        needs the last position's, and the full-vocabulary logits of every prompt position would be the largest
        transient of a long prompt (T x V floats: 24 GB at 40K tokens with Qwen3's 151,936-token vocabulary).

        kv_context(layer, k, v) returns the keys and values the layer's queries attend to, given the new
        tokens' own (a cache write for decoding, the tokens themselves for a causal training pass, or the AR
        context concatenated with a block for diffusion training); `visible` says which of those keys each query
        sees (orthrus_core.attention: CAUSAL, ALL, a Visibility, or a trainer's boolean mask).

        `capture` lists hidden states by their index in transformers' `output_hidden_states` (0 = the
        embeddings, l + 1 = the output of layer l, the last one after the final norm), which is how drafters
        such as EAGLE-3 and DFlash name the target features they read; then the return value is
        (logits, features [B, T, len(capture) * H]) with the states concatenated in the order given.
        """
        if diffusion and not self.has_diffusion_view:
            raise ValueError("this model has no diffusion view (it was loaded as a plain AR model)")
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.rope(x, positions)
        n_layers = len(self.model.layers)
        states = {0: x} if 0 in capture else {}
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, visible, diffusion, partial(kv_context, i))
            if i + 1 in capture and i + 1 < n_layers:
                states[i + 1] = x
        x = self.model.norm(x)
        logits = self.lm_head(x[:, -logits_to_keep:] if logits_to_keep else x).float()
        if not capture:
            return logits
        states[n_layers] = x
        return logits, torch.cat([states[i] for i in capture], dim=-1)


@torch.no_grad()
def init_weights(model: OrthrusForCausalLM, std: float = 0.02, seed: int = 0) -> OrthrusForCausalLM:
    """Normal(0, std) for every projection and embedding, ones for norms: Qwen3's init, seeded. Drawn on the
    parameters' device (an 8B model drawn on a CPU and copied takes minutes)."""
    device = model.lm_head.weight.device
    g = torch.Generator(device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight") or "norm_diff" in name:
            p.fill_(1.0)
        elif name.endswith(".bias"):
            p.zero_()
        else:
            p.copy_(torch.randn(p.shape, generator=g, device=device) * std)
    return model


@torch.no_grad()
def copy_ar_to_diffusion(model: OrthrusForCausalLM) -> None:
    """Initialise every `*_diff` tensor from its AR counterpart (the method's starting point for training)."""
    params = dict(model.named_parameters())
    for name, p in params.items():
        if "_diff" in name:
            p.copy_(params[name.replace("_diff", "")])
