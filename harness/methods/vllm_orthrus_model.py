"""Orthrus inside vLLM: the target that carries the diffusion view, and the draft that runs it.

Loaded in vLLM's worker processes through the project's plugin (harness/methods/vllm_plugin.py), never by the
harness itself. `vllm-orthrus` (harness/methods/vllm_orthrus.py) gives vLLM an Orthrus checkpoint as it is
published and asks for DFlash's speculative method, whose proposer already drafts a block [bonus, MASK x k] in one
non-causal pass; what it runs for that pass is `OrthrusDiffusionView`:

- `OrthrusForCausalLM` (architecture OrthrusLM) is vLLM's Qwen3 with each layer's diffusion projections beside
  its own (`self_attn.qkv_proj_diff`, `o_proj_diff`, `q_norm_diff`, `k_norm_diff`, loaded from the checkpoint's
  `*_diff` tensors by Qwen3's own loader). Its forward is Qwen3's: the AR view, the pass vLLM verifies with.
  `diffuse` is the diffusion view: the same embeddings, norms, MLPs and RoPE, the diffusion projections.
- `OrthrusDiffusionView` (architecture DFlashOrthrusDiffusionView, the draft vLLM builds for the method) owns no
  weights. Its attention layers share the target's KV cache (`kv_sharing_target_layer_name`, as Gemma4's MTP
  draft does), so the diffusion pass attends to the target's own K/V of the prefix; a sharing layer does not
  write K/V in vLLM 0.32, and the block's queries must see the block, so each layer writes its block's K/V into
  the target's cache first, with vLLM's own cache-update op, at the block's slots: the slots the next verify
  pass overwrites with AR K/V (the scratch write the project's engine makes, orthrus_core/orthrus.py), so the
  cache a later pass reads holds AR K/V only. The DFlash proposer samples block position i as the draft of
  position i; Orthrus drafts position i + 1 from position i, so the pass hands position i the state of i - 1.

Nothing in vLLM is patched. The versions this was checked against are SUPPORTED_VLLM; another vLLM is refused
when the model is built, naming them.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from vllm.model_executor.layers.attention.attention import Attention, unified_kv_cache_update
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import QKVParallelLinear, RowParallelLinear
from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM
from vllm.model_executor.models.qwen3_dflash import DFlashQwen3ForCausalLM

from .vllm_plugin import TARGET_ARCHITECTURE, check_version


class OrthrusForCausalLM(Qwen3ForCausalLM):
    """vLLM's Qwen3 with the diffusion view's projections in every layer (module docstring)."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        check_version()
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        config, quant = self.config, vllm_config.quant_config
        for i, layer in enumerate(self.model.layers):
            attn = layer.self_attn
            where = f"{prefix}{'.' if prefix else ''}model.layers.{i}.self_attn"
            attn.qkv_proj_diff = QKVParallelLinear(
                config.hidden_size,
                attn.head_dim,
                attn.total_num_heads,
                attn.total_num_kv_heads,
                bias=getattr(config, "attention_bias", False),
                quant_config=quant,
                prefix=f"{where}.qkv_proj_diff",
            )
            attn.o_proj_diff = RowParallelLinear(
                attn.total_num_heads * attn.head_dim,
                config.hidden_size,
                bias=False,
                quant_config=quant,
                prefix=f"{where}.o_proj_diff",
            )
            attn.q_norm_diff = RMSNorm(attn.head_dim, eps=config.rms_norm_eps)
            attn.k_norm_diff = RMSNorm(attn.head_dim, eps=config.rms_norm_eps)
            attn.attn.orthrus_model = weakref.ref(
                self
            )  # how the draft finds the target (OrthrusDiffusionView)

    def diffuse(self, input_ids: torch.Tensor, positions: torch.Tensor, attention: list[Attention]):
        """The diffusion view's hidden states (after the final norm) of `input_ids` at `positions`, layer l's
        attention through attention[l] (a layer sharing the target layer's cache)."""
        x, residual = self.model.embed_input_ids(input_ids), None
        for layer, shared in zip(self.model.layers, attention, strict=True):
            if residual is None:
                residual, x = x, layer.input_layernorm(x)
            else:
                x, residual = layer.input_layernorm(x, residual)
            x = diffusion_attention(layer.self_attn, shared, positions, x)
            x, residual = layer.post_attention_layernorm(x, residual)
            x = layer.mlp(x)
        x, _ = self.model.norm(x, residual)
        return x


def diffusion_attention(attn, shared: Attention, positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One layer's diffusion-view attention: Qwen3Attention.forward with the `_diff` projections and norms, the
    block's K/V written into the shared cache before the block attends (module docstring)."""
    qkv, _ = attn.qkv_proj_diff(x)
    q, k, v = qkv.split([attn.q_size, attn.kv_size, attn.kv_size], dim=-1)
    q = attn.q_norm_diff(q.view(*q.shape[:-1], -1, attn.head_dim)).view(q.shape)
    k = attn.k_norm_diff(k.view(*k.shape[:-1], -1, attn.head_dim)).view(k.shape)
    q, k = attn.rotary_emb(positions, q, k)
    unified_kv_cache_update(
        k.view(-1, shared.num_kv_heads, shared.head_size),
        v.view(-1, shared.num_kv_heads, shared.head_size_v),
        shared.layer_name,
    )
    out, _ = attn.o_proj_diff(shared(q, k, v))
    return out


def each_from_the_previous(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """x [T, H], blocks of `block_size` positions end to end -> position i of each block holds x at i - 1 (its
    first, which no draft is read from, the block's last); a tail shorter than a block (a padded batch's, which
    holds no request) as it is."""
    whole = x.shape[0] - x.shape[0] % block_size
    blocks = x[:whole].view(-1, block_size, x.shape[-1])
    return torch.cat([blocks.roll(1, dims=1).view(whole, -1), x[whole:]])


class _Layers(nn.Module):
    """`model` of the draft: the sharing attention, and where vLLM's proposer puts the target's embeddings."""

    def __init__(self, attention: list[Attention]):
        super().__init__()
        self.layers = nn.ModuleList(_SharedAttention(a) for a in attention)
        self.embed_tokens = _TargetsEmbeddings()


class _TargetsEmbeddings(nn.Module):
    """Until the proposer replaces it with the target's embeddings (it shares them with a draft that has none,
    checking the width only of a weight that is a tensor)."""

    weight = None


class _SharedAttention(nn.Module):
    def __init__(self, attn: Attention):
        super().__init__()
        self.attn = attn


class OrthrusDiffusionView(DFlashQwen3ForCausalLM):
    """The draft vLLM's DFlash proposer runs: the target's diffusion view through attention layers that share
    the target's KV cache; no weights of its own (module docstring). A DFlashQwen3ForCausalLM to the proposer,
    which accepts no other class, with every method it calls its own."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        nn.Module.__init__(self)  # none of DFlash's own layers
        check_version()
        context = vllm_config.compilation_config.static_forward_context
        target_config = vllm_config.model_config.hf_config
        n_layers = target_config.num_hidden_layers
        names = [f"model.layers.{i}.self_attn.attn" for i in range(n_layers)]
        first = context.get(names[0])
        target = getattr(first, "orthrus_model", lambda: None)()
        if target is None:
            raise ValueError(
                "the Orthrus diffusion view drafts for an Orthrus target: load the target checkpoint with "
                f"architectures [{TARGET_ARCHITECTURE!r}] (the orthrus-bench vLLM plugin registers it)"
            )
        self._target = weakref.ref(target)
        attention = [
            Attention(
                first.num_heads,
                first.head_size,
                first.impl.scale,
                num_kv_heads=first.num_kv_heads,
                cache_config=vllm_config.cache_config,
                # named after the target's layers, as vLLM's KV-cache binding orders layers by index
                prefix=f"model.layers.{n_layers + i}.self_attn.attn",
                kv_sharing_target_layer_name=name,
            )
            for i, name in enumerate(names)
        ]
        self.model = _Layers(attention)
        speculative = vllm_config.speculative_config
        self.block_size = speculative.num_speculative_tokens + 1

    def forward(self, input_ids, positions, inputs_embeds=None):
        """The block's diffusion-view states, position i of each block holding position i - 1's: the proposer
        asks every block of `block_size` queries, laid end to end, for drafts at positions 1..block_size-1."""
        x = self._target().diffuse(input_ids, positions, [layer.attn for layer in self.model.layers])
        return each_from_the_previous(x, self.block_size)

    def embed_input_ids(self, input_ids, multimodal_embeddings=None, is_multimodal=None):
        return self._target().embed_input_ids(input_ids)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self._target().compute_logits(hidden_states)

    def combine_hidden_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states  # the proposer hands the target's states over; the diffusion view reads none

    def precompute_and_store_context_kv(self, *args, **kwargs) -> None:
        """DFlash projects the target's states into a cache of its own; Orthrus' context is the target's own
        K/V, already in the cache it shares."""

    def load_weights(self, weights) -> set[str]:
        for _ in weights:  # the draft's directory holds none: its weights are the target's
            pass
        return set()
