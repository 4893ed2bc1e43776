"""EAGLE-3 (Li et al. 2025): a one-layer draft head over fused target features, chain or dynamic-tree drafting.

Head (SafeAILab/EAGLE eagle/model/cnets.py; public format `LlamaForCausalLMEagle3`, e.g. AngelSlim/Qwen3-8B_eagle3;
a head is recognised by its tensors, `fc` and `midlayer.*`, not by the architecture's spelling, which varies
between uploads: AngelSlim/Qwen3-1.7B_eagle3 says `LlamaForCausalLMEEagle3`):
* `fc` (3 H_target -> H, no bias) over the target hidden states entering layers 2, L//2 and L-3 (transformers'
  `hidden_states` indices; `eagle_aux_hidden_state_layer_ids` in the config overrides them);
* one Llama-style layer (`midlayer`: RoPE, GQA, no q/k norm) whose attention input is
  concat[input_layernorm(embed(token)), hidden_norm(feature)] (width 2H), with the feature as the residual;
* final `norm`, `lm_head` over a draft vocabulary; `d2t` maps draft ids to target ids (target = draft +
  d2t[draft]); the embedding is the target's, stored in the checkpoint or not.

Alignment: the draft row for token t takes the target feature of token t-1 and predicts token t+1. Deeper
draft steps feed the head's own output hidden state back in place of the fc output.

Drafting (`Eagle3Drafter`), per cycle: one forward over the rows committed since the last cycle plus the root,
then depth-1 expansion forwards, each over the top_k best nodes of the newest level (scored by cumulative
draft log-probability, beam style), each node seeing the committed rows, its ancestors and itself. The tree
keeps the total_tokens-1 best-scored candidates (parents score at least as high as their children, so every
kept node's ancestors are kept). top_k = 1 is chain drafting. Only committed rows stay in the draft cache.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRMSNorm,
    apply_rotary_pos_emb,
)

from .attention import CAUSAL, Visibility, attend
from .checkpoint import (
    CheckpointError,
    CorruptFileError,
    check_shapes,
    open_safetensors,
    read_json,
    refetch_hint,
    resolve,
)
from .engine import pass_visibility, row_bucket
from .host import upload
from .jsonfile import write_json
from .loop import CachedDrafter, Proposal
from .memory import FLOAT32, PassBytes, activations, expanded_kv_bytes, masked_pass_bytes, rope_bytes
from .model import KVCache, OrthrusForCausalLM, head_dim
from .rope import LlamaRotary

ARCHITECTURE = "LlamaForCausalLMEagle3"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # either; EAGLE's loader tries the .bin first
HUB_PATTERNS = ("*.json", "*.safetensors", "*.bin")


def default_aux_layers(num_target_layers: int) -> list[int]:
    L = num_target_layers
    return [2, L // 2, L - 3]


def distinct_aux_layers(num_target_layers: int) -> list[int]:
    """Three distinct target states in ascending order, as a head should read them: EAGLE-3's default (layers 2,
    L//2, L-3) where those are distinct (every published Qwen3 size), else the default with a repeated layer
    moved up to the next one (2, 3, 4 for the tiny family's 6 layers, whose default 2, 3, 3 repeats layer 3).

    vLLM (and SGLang) gather the target's states by a set of layer ids, sorted: a head that reads a state twice
    gets fewer features than its fc takes, and one whose ids are not ascending gets them in another order."""
    L = num_target_layers
    layers: list[int] = []
    for layer in default_aux_layers(L):
        layers.append(max(layer, layers[-1] + 1) if layers else layer)
    if layers[-1] > L - 1:  # a target too shallow for the default: its last three states before the final one
        layers = list(range(max(L - 3, 0), L))
    if len(layers) < 3:
        raise ValueError(f"an EAGLE-3 head reads three target states; a {L}-layer target has {L}")
    return layers


def layers_problem(layers: list[int]) -> str | None:
    """Why a head reading the target states `layers` cannot run where states are gathered by a sorted set of ids
    (vLLM, SGLang), or None."""
    if len(set(layers)) != len(layers):
        return f"it reads target state(s) {sorted({i for i in layers if layers.count(i) > 1})} more than once"
    if list(layers) != sorted(layers):
        return "its target states are not in ascending order"
    return None


def with_distinct_layers(head: Eagle3Head, num_target_layers: int) -> Eagle3Head:
    """`head` rewritten, with the same function, to read three distinct target states in ascending order
    (`distinct_aux_layers`), its layers named in its config (eagle_config.eagle_aux_hidden_state_layer_ids).

    fc is linear in its input, so the blocks of its weight that read one state sum into one block, and a state
    the head did not read before gets a zero block: a head trained on [h2, h3, h3] reads [h2, h3, h4] with
    fc = [W2, W3 + W3', 0]. Its drafts are the old head's up to rounding (in the head's dtype)."""
    old = aux_layers(head.config, num_target_layers)
    new = distinct_aux_layers(num_target_layers)
    if old == new and getattr(head.config, "eagle_config", None):
        return head
    missing = set(old) - set(new)
    if missing:
        raise ValueError(f"the head reads target states {old}; {sorted(missing)} not among {new}")
    H = head.fc.weight.shape[1] // 3
    with torch.no_grad():
        blocks = head.fc.weight.float().split(H, dim=1)
        merged = [torch.zeros_like(blocks[0]) for _ in new]
        for layer, block in zip(old, blocks, strict=True):
            merged[new.index(layer)] += block
        head.fc.weight.copy_(torch.cat(merged, dim=1).to(head.fc.weight.dtype))
    eagle = dict(getattr(head.config, "eagle_config", None) or {}, eagle_aux_hidden_state_layer_ids=new)
    head.config.eagle_config = eagle
    return head


def aux_layers(config: LlamaConfig, num_target_layers: int) -> list[int]:
    eagle = getattr(config, "eagle_config", None) or {}
    ids = getattr(config, "eagle_aux_hidden_state_layer_ids", None) or eagle.get(
        "eagle_aux_hidden_state_layer_ids"
    )
    return list(ids) if ids else default_aux_layers(num_target_layers)


def eagle3_config(
    target_config, draft_vocab_size: int, aux_layer_ids: list[int] | None = None
) -> LlamaConfig:
    """A head config with the target's dimensions, as the public heads have."""
    t = target_config
    extra = (
        {"eagle_config": {"eagle_aux_hidden_state_layer_ids": list(aux_layer_ids)}} if aux_layer_ids else {}
    )
    return LlamaConfig(
        architectures=[ARCHITECTURE],
        hidden_size=t.hidden_size,
        intermediate_size=t.intermediate_size,
        num_attention_heads=t.num_attention_heads,
        num_key_value_heads=t.num_key_value_heads,
        head_dim=head_dim(t),
        num_hidden_layers=1,
        rms_norm_eps=t.rms_norm_eps,
        rope_parameters=dict(t.rope_parameters),
        max_position_embeddings=t.max_position_embeddings,
        vocab_size=t.vocab_size,
        draft_vocab_size=draft_vocab_size,
        tie_word_embeddings=False,
        **extra,
    )


class Eagle3Attention(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.head_dim = config.head_dim
        n, n_kv, H = config.num_attention_heads, config.num_key_value_heads, config.hidden_size
        self.q_proj = nn.Linear(2 * H, n * self.head_dim, bias=False)
        self.k_proj = nn.Linear(2 * H, n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(2 * H, n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n * self.head_dim, H, bias=False)

    def forward(self, x, cos, sin, visible, kv_context):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        keys, values = kv_context(k, v)
        out = attend(q, keys, values, visible)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class Eagle3Layer(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        H, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = Eagle3Attention(config)
        self.mlp = LlamaMLP(config)
        self.hidden_norm = LlamaRMSNorm(H, eps=eps)
        self.input_layernorm = LlamaRMSNorm(H, eps=eps)
        self.post_attention_layernorm = LlamaRMSNorm(H, eps=eps)

    def forward(self, embeds, hidden, cos, sin, visible, kv_context):
        x = torch.cat([self.input_layernorm(embeds), self.hidden_norm(hidden)], dim=-1)
        hidden = hidden + self.self_attn(x, cos, sin, visible, kv_context)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class Eagle3Head(nn.Module):
    """The draft head. `embed_tokens` is the target's embedding module unless the checkpoint carries one."""

    def __init__(self, config: LlamaConfig, target_hidden_size: int, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.draft_vocab_size = getattr(config, "draft_vocab_size", None) or config.vocab_size
        self.embed_tokens = embed_tokens
        self.fc = nn.Linear(3 * target_hidden_size, H, bias=False)
        self.midlayer = Eagle3Layer(config)
        self.norm = LlamaRMSNorm(H, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(H, self.draft_vocab_size, bias=False)
        self.rotary_emb = LlamaRotary(config)
        self.register_buffer("d2t", torch.zeros(self.draft_vocab_size, dtype=torch.long))
        self.register_buffer("t2d", torch.ones(config.vocab_size, dtype=torch.bool))

    def forward(self, input_ids, hidden, positions, visible, kv_context):
        """input_ids [B, T] (target ids) with hidden [B, T, 3 H_target] (target features, one position
        behind) or [B, T, H] (the head's own output, at deeper steps) -> output hidden states [B, T, H]; what
        each row sees of the keys kv_context returns: `visible` (orthrus_core.attention)."""
        if hidden.shape[-1] != self.config.hidden_size:
            hidden = self.fc(hidden)
        embeds = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(embeds, positions)
        return self.midlayer(embeds, hidden, cos, sin, visible, kv_context)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """-> float32 logits over the draft vocabulary."""
        return self.lm_head(self.norm(hidden)).float()

    def to_target(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return draft_ids + self.d2t[draft_ids]


class Eagle3Drafter(CachedDrafter):
    """Dynamic-tree (or, with top_k = 1, chain) drafting with an EAGLE-3 head for every active row at once;
    `depth` head forwards per cycle, so a path holds at most `depth` drafts, and at most total_tokens - 1 drafts
    in all. The head's cache holds every row's committed rows; a cycle's new rows (ragged: the target tokens
    committed since the row's last cycle, then its root) are padded to the batch's most, and each expansion
    level's rows go to scratch slots after them. Every row draws the same tree shape (top_k per level), so the
    expansion is one head forward over [R, width] per level, each node seeing its row's committed rows, its
    ancestors and itself. `pending` per row: the tokens committed since its last cycle (the root excluded) and
    their target features."""

    def __init__(
        self, head: Eagle3Head, target: OrthrusForCausalLM, top_k: int, depth: int, total_tokens: int
    ):
        self.check(top_k, depth, total_tokens)
        self.head, self.top_k, self.depth = head, top_k, depth
        self.n_drafts = min(total_tokens - 1, top_k + (depth - 1) * top_k * top_k)
        self.capture = tuple(aux_layers(head.config, target.config.num_hidden_layers))
        self.cache_config, self.extra = head.config, depth * top_k

    @staticmethod
    def check(top_k: int, depth: int, total_tokens: int) -> None:
        if top_k < 1 or depth < 1 or total_tokens < 2:
            raise ValueError(
                f"need top_k >= 1, depth >= 1, total_tokens >= 2; got {top_k}, {depth}, {total_tokens}"
            )

    @classmethod
    def chain(cls, head, target, depth: int) -> Eagle3Drafter:
        return cls(head, target, top_k=1, depth=depth, total_tokens=depth + 1)

    @property
    def max_nodes(self) -> int:
        return self.n_drafts + 1

    def admit(self, b, prompt, features):
        """The prompt's rows go into row b's draft cache now, alone (the drafter's prefill), so that a cycle
        pads every row's new rows to a few, not to a prompt."""
        T = len(prompt)
        if T > 1:
            row = self.draft_cache.row(b)
            kv = lambda k, v: row.extend(0, k, v, start=0)  # noqa: E731
            positions = torch.arange(T - 1, device=prompt.device)[None]
            self.head(prompt[None, 1:], features[None, :-1], positions, CAUSAL, kv)
        self.draft_cache.lengths.append(T - 1)
        # a copy: a view would keep the whole prompt's features alive until the row's first cycle
        self.pending.append((prompt[:0], features[-1:].clone()))

    def accept(self, counts, tokens, features):
        self.pending = [(tokens[b, 1:n], features[b, :n]) for b, n in enumerate(counts)]

    def propose(self, roots, params, generators):
        device, active, cache, static = roots.device, roots.shape[0], self.draft_cache, self.engine.static
        # Over several rows the passes are ragged (FlexAttention on a GPU, compiled per shape): they run over the
        # engine's row bucket of the active rows, the padding rows (one token each, at slot 0 of an unused row of
        # the draft cache) dropped at the end, every pass is as wide as the most a row can bring, and each takes
        # FlexAttention even when this cycle's rows happen to share one length, so that the shapes a run meets
        # do not depend on its data (warm-up compiles them all). A static engine runs the first pass so at one
        # row too: one shape per row bucket, every input a tensor.
        R = row_bucket(active, cache.rows)
        pending = self.pending + [(roots[:0], self.pending[0][1][:1] * 0)] * (R - active)
        roots = torch.cat([roots, roots.new_zeros(R - active)])
        lengths = cache.lengths + [0] * (R - active)
        # Rows not in the draft cache yet: (feature of token t-1, token t) for every newly committed t, root last.
        new = [torch.cat([tokens, root[None]]) for (tokens, _), root in zip(pending, roots, strict=True)]
        m = [len(t) for t in new]
        width = max(m) if R == 1 and not static else self.depth + 1
        feature = pending[0][1]
        tokens = torch.zeros(R, width, dtype=torch.long, device=device)
        hidden = feature.new_zeros(R, width, feature.shape[-1])
        for b, (t, (_, f)) in enumerate(zip(new, pending, strict=True)):
            tokens[b, : m[b]], hidden[b, : m[b]] = t, f
        committed = [c + n for c, n in zip(lengths, m, strict=True)]
        starts, counts = upload([lengths, m], device)
        host = (None, None) if static else (lengths, committed)  # the prefixes, where the host knows them
        fixed = (self.head, cache.k[:, :R], cache.v[:, :R], self.top_k, self.depth, self.n_drafts)
        drafts, parents = self.engine.run(draft_tree, (tokens, hidden, starts, counts, *host), fixed)
        cache.lengths = committed[:active]
        tokens = torch.cat([roots[:, None], drafts], 1)[:active]
        if self.top_k == 1:  # top-1 at every level: a chain
            return Proposal(tokens, [self.n_drafts] * active, self.depth)
        parents = torch.cat([parents.new_full((R, 1), -1), parents], 1)[:active]
        return Proposal(tokens, [self.n_drafts] * active, self.depth, parents=parents)


def draft_tree(tokens, hidden, starts, counts, prefix, committed, head, k_cache, v_cache, k, depth, n_drafts):
    """One cycle's drafting for R rows: the head's pass over each row's new rows (tokens [R, W] and their
    features, `counts` [R] of them real, the root last, written from slot `starts` [R] on), then depth - 1
    expansion passes over the top-k best nodes of the newest level (at scratch slots after the committed rows),
    then the rerank -> (drafts [R, n_drafts] as target ids, each draft's parent node [R, n_drafts]: 0 the root,
    i the i-th draft). `prefix` and `committed`: the rows' lengths
    before and after the new rows as host ints (eager), or None (a static pass: from the tensors)."""
    R, width = tokens.shape
    device = tokens.device
    kv = KVCache.view(k_cache, v_cache)
    committed_at = starts + counts  # [R]: each row's committed draft rows
    before = starts if prefix is None else prefix
    after = committed_at if committed is None else committed
    if R == 1:
        visible = pass_visibility(before, width, False, None, device)
    else:  # a causal window given: FlexAttention whether or not this cycle's rows share one length
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril().expand(R, -1, -1)
        visible = Visibility.after(before, width, "pattern", device, window=causal)
    slots = starts[:, None] + torch.arange(width, device=device)
    out = _head_pass(head, kv, tokens, hidden, slots, slots, visible)
    hidden = out[torch.arange(R, device=device), counts - 1][:, None]  # root rows

    scores, ids = torch.log_softmax(head.logits(hidden[:, 0]), -1).topk(k)  # [R, k]
    cand_ids, cand_scores, cand_parents = [ids], [scores], [torch.full((R, k), -1, device=device)]
    frontier = torch.arange(k, device=device).expand(R, k)  # candidate indices of the newest level
    frontier_hidden, frontier_scores = hidden.expand(R, k, -1), scores
    seen = torch.zeros(R, k, 0, dtype=torch.bool, device=device)  # scratch rows each frontier row sees
    scratch = 0  # scratch rows written this cycle
    # Every level's window is as wide as the last level's (k per level): one pass shape for every level.
    levels_width = (depth - 1) * k
    for level in range(1, depth):
        # The frontier's rows go to scratch slots after the committed rows, at position committed - 1 + level.
        width = frontier.shape[1]
        offsets = torch.arange(width, device=device)
        slots = committed_at[:, None] + scratch + offsets
        sees = torch.cat([seen, torch.eye(width, dtype=torch.bool, device=device).expand(R, -1, -1)], 2)
        # Each node sees its row's committed rows, its ancestors among the scratch rows and itself.
        window = torch.cat([sees, sees.new_zeros(R, width, levels_width - sees.shape[2])], 2)
        visible = Visibility.after(after, width, "pattern", device, window=window)
        positions = (committed_at - 1 + level)[:, None].expand(R, width)
        node_ids = head.to_target(torch.cat(cand_ids, 1).gather(1, frontier))
        out = _head_pass(head, kv, node_ids, frontier_hidden, slots, positions, visible)
        logp, child_ids = torch.log_softmax(head.logits(out), -1).topk(k)  # [R, width, k]
        child_scores = (frontier_scores[:, :, None] + logp).flatten(1)
        first = sum(c.shape[1] for c in cand_ids)
        cand_ids.append(child_ids.flatten(1))
        cand_scores.append(child_scores)
        cand_parents.append(frontier.repeat_interleave(k, dim=1))
        best = child_scores.topk(k).indices  # [R, k]
        parent_row = best // k
        frontier, frontier_scores = first + best, child_scores.gather(1, best)
        frontier_hidden = out.gather(1, parent_row[..., None].expand(-1, -1, out.shape[-1]))
        seen = sees.gather(1, parent_row[..., None].expand(-1, -1, sees.shape[-1]))
        scratch += width

    # Rerank: each row's best-scored candidates; a stable sort keeps a parent ahead of an equal-scored child.
    all_scores = torch.cat(cand_scores, 1)
    keep = torch.sort(all_scores, dim=1, descending=True, stable=True).indices[:, :n_drafts].sort(1).values
    node_of = torch.zeros_like(all_scores, dtype=torch.long)
    node_of.scatter_(1, keep, torch.arange(1, keep.shape[1] + 1, device=device).expand_as(keep))
    parent_cands = torch.cat(cand_parents, 1).gather(1, keep)
    parents = torch.where(parent_cands >= 0, node_of.gather(1, parent_cands.clamp_min(0)), 0)
    return head.to_target(torch.cat(cand_ids, 1).gather(1, keep)), parents


def _head_pass(head, kv: KVCache, tokens, hidden, slots, positions, visible):
    context = kv.scatter(slots)
    return head(tokens, hidden, positions, visible, lambda k, v: context(0, k, v))

    # Its cost (orthrus_core.loop.Drafter; its cache and pending features are CachedDrafter's).

    def prefill_bytes(self, sizing):
        """`admit`: the fc output, the embeddings and both normed halves [T, H] each, then one causal pass of
        the head over the prompt's rows."""
        hc, T, b = self.head.config, sizing.prompt_tokens, sizing.itemsize
        head = activations(hc, T, b, attn_in=2 * hc.hidden_size) + 4 * T * hc.hidden_size * b
        return head + rope_bytes(hc, T, b) + (expanded_kv_bytes(hc, 1, T, b) if sizing.fp32_cuda else 0)

    def draft_pass_bytes(self, sizing, verify):
        """`propose`'s widest head pass: the first one's new rows (a path and its root) or an expansion level,
        over the target features, fc output, embeddings and normed halves, under a mask over the head's cache;
        its logits and their log-softmax over the draft vocabulary."""
        hc, R, b = self.head.config, sizing.rows, sizing.itemsize
        width = max(self.depth + 1, self.top_k)
        keys = sizing.capacity + self.extra
        mask = masked_pass_bytes(hc, R, width, keys, b, sizing.cuda, sizing.fp32_cuda)
        workspace = activations(hc, R * width, b, attn_in=2 * hc.hidden_size)
        workspace += R * width * (sizing.features + 4 * hc.hidden_size) * b + mask
        return PassBytes(workspace, R * width * self.head.draft_vocab_size * (b + 2 * FLOAT32))


# ---------------------------------------------------------------------------------------------- checkpoints


def expected_shapes(config: LlamaConfig, target_hidden_size: int, with_embed: bool) -> dict[str, tuple]:
    with torch.device("meta"):
        head = Eagle3Head(config, target_hidden_size, nn.Embedding(config.vocab_size, config.hidden_size))
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    if not with_embed:
        del shapes["embed_tokens.weight"]
    return shapes


def weights_file(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"no {' or '.join(WEIGHT_FILES)} in {directory}")


def read_weights(path: Path, *, meta: bool = False) -> dict[str, torch.Tensor]:
    """The head's tensors; with `meta`, their shapes and dtypes only (nothing is read but the headers). A
    truncated or damaged file is a CorruptFileError naming it."""
    if path.suffix == ".bin":
        try:
            return torch.load(path, map_location="meta" if meta else "cpu", weights_only=True)
        except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            reason = (
                str(e).strip().splitlines()[0].split(". ")[0][:160] if str(e).strip() else type(e).__name__
            )
            raise CorruptFileError(
                f"{path}: truncated or damaged, torch.load cannot read it ({reason}); {refetch_hint(path)}"
            ) from None
    with open_safetensors(path) as f:
        if meta:
            return {n: _meta(f.get_slice(n)) for n in f.keys()}
        return {n: f.get_tensor(n) for n in f.keys()}


def _meta(tensor_slice) -> torch.Tensor:
    dtype = getattr(torch, SAFETENSORS_DTYPES.get(tensor_slice.get_dtype(), "float32"))
    return torch.empty(tensor_slice.get_shape(), dtype=dtype, device="meta")


SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
                      "BOOL": "bool", "U8": "uint8"}  # fmt: skip
# What makes a checkpoint an EAGLE-3 head, whatever its config calls it.
HEAD_TENSORS = ("fc.weight", "midlayer.self_attn.q_proj.weight")


def is_eagle3_head(names) -> bool:
    return all(name in names for name in HEAD_TENSORS)


def head_config(raw: dict, state: dict[str, torch.Tensor]) -> LlamaConfig:
    raw = dict(raw)
    # head_dim from the weights, not the config: SafeAILab's code uses H / heads, SpecForge config.head_dim.
    raw["head_dim"] = state["midlayer.self_attn.q_proj.weight"].shape[0] // raw["num_attention_heads"]
    raw["num_hidden_layers"] = 1
    return LlamaConfig.from_dict(raw)


def fit_problems(config: LlamaConfig, state: dict[str, torch.Tensor], target_config) -> list[str]:
    """What stops this head from drafting for a target with `target_config` (empty: it fits). `state` may be
    meta tensors, except `d2t`, whose values are checked when they are there."""
    t, problems = target_config, []
    if config.vocab_size != t.vocab_size:
        problems.append(f"vocabulary {config.vocab_size} != the target's {t.vocab_size}")
    if config.hidden_size != t.hidden_size:
        problems.append(f"hidden size {config.hidden_size} != the target's {t.hidden_size}")
    target_hidden = getattr(config, "target_hidden_size", None)
    if target_hidden is not None and target_hidden != t.hidden_size:
        problems.append(f"target_hidden_size {target_hidden} != the target's {t.hidden_size}")
    layers = aux_layers(config, t.num_hidden_layers)
    if not all(0 <= i <= t.num_hidden_layers for i in layers):
        default = getattr(config, "eagle_config", None) is None
        problems.append(
            f"it reads the target's hidden states {layers}"
            + (" (EAGLE-3's default, layers 2, L//2 and L-3)" if default else "")
            + f", but a target with {t.num_hidden_layers} layers has states 0..{t.num_hidden_layers}: use a "
            "head trained for this target, or name the layers in eagle_config.eagle_aux_hidden_state_layer_ids"
        )
    d2t = state.get("d2t")
    if d2t is not None and d2t.device.type != "meta":
        target_ids = d2t.long() + torch.arange(len(d2t))
        if ((target_ids >= t.vocab_size) | (target_ids < 0)).any():
            problems.append(f"d2t maps draft ids outside the target vocabulary [0, {t.vocab_size})")
    return problems


def complete_state(config: LlamaConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The head's tensors with the vocabulary maps that a checkpoint may leave out: `d2t` is the identity when
    the draft vocabulary is the full one, `t2d` follows from `d2t` (shapes only for meta tensors)."""
    state = dict(state)
    draft_vocab = getattr(config, "draft_vocab_size", None) or config.vocab_size
    if "d2t" not in state and draft_vocab == config.vocab_size:
        state["d2t"] = torch.zeros(draft_vocab, dtype=torch.long)  # full vocabulary: the identity mapping
    if "t2d" not in state:
        meta = "d2t" in state and state["d2t"].device.type == "meta"
        state["t2d"] = torch.zeros(config.vocab_size, dtype=torch.bool, device="meta" if meta else "cpu")
        if "d2t" in state and not meta:
            state["t2d"][torch.arange(len(state["d2t"])) + state["d2t"].long()] = True
    return state


def check_head_shapes(directory, config: LlamaConfig, state: dict, target_hidden_size: int) -> None:
    check_shapes(
        f"the EAGLE-3 weights in {directory} do not match its config and the target",
        {n: tuple(v.shape) for n, v in state.items()},
        expected_shapes(config, target_hidden_size, "embed_tokens.weight" in state),
        hint="check hidden_size, num_attention_heads/num_key_value_heads, intermediate_size, draft_vocab_size",
    )


def load_eagle3(
    path_or_id: str | os.PathLike, target: OrthrusForCausalLM, *, revision: str | None = None
) -> Eagle3Head:
    """Load an EAGLE-3 head for `target`, in the target's dtype and device, validated against both."""
    directory = resolve(path_or_id, revision, HUB_PATTERNS)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"no config.json in {directory}")
    raw = read_json(config_path)
    state = read_weights(weights_file(directory))
    if not is_eagle3_head(state):
        raise CheckpointError(
            f"{directory} is not an EAGLE-3 head: it has no {' or '.join(HEAD_TENSORS)} "
            f"(architectures {raw.get('architectures')})"
        )
    config = head_config(raw, state)
    t = target.config
    problems = fit_problems(config, state, t)
    if problems:
        raise CheckpointError(
            f"{directory}: this EAGLE-3 head does not fit the target: " + "; ".join(problems)
        )
    state = complete_state(config, state)
    with_embed = "embed_tokens.weight" in state
    check_head_shapes(directory, config, state, t.hidden_size)
    state["d2t"], state["t2d"] = state["d2t"].long(), state["t2d"].bool()
    p = target.lm_head.weight
    embed = nn.Embedding(config.vocab_size, config.hidden_size) if with_embed else target.model.embed_tokens
    head = Eagle3Head(config, t.hidden_size, embed).to(dtype=p.dtype, device=p.device)
    missing, _ = head.load_state_dict(state, strict=False)  # shapes and names were checked above
    assert missing == ([] if with_embed else ["embed_tokens.weight"]), missing
    head.name_or_path = str(path_or_id)
    return head.eval()


def save_eagle3(
    head: Eagle3Head,
    directory: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    with_embed: bool = False,
    weights_format: str = "safetensors",
) -> Path:
    """Write config.json and the weights in the public format (`model.safetensors` or `pytorch_model.bin`),
    without the embedding unless `with_embed` (loaders take it from the target)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    c = head.config
    state = {n: v.detach().cpu().contiguous() for n, v in head.state_dict().items()}
    if not with_embed:
        del state["embed_tokens.weight"]
    state = {n: v.to(dtype) if dtype and v.is_floating_point() else v for n, v in state.items()}
    config = {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "num_hidden_layers": 1,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_parameters["rope_theta"],
        "max_position_embeddings": c.max_position_embeddings,
        "vocab_size": c.vocab_size,
        "draft_vocab_size": head.draft_vocab_size,
        "tie_word_embeddings": False,
        "torch_dtype": str(state["fc.weight"].dtype).removeprefix("torch."),
    }
    eagle = getattr(c, "eagle_config", None)
    if eagle:
        config["eagle_config"] = dict(eagle)
    write_json(directory / "config.json", config)
    for name in WEIGHT_FILES:
        (directory / name).unlink(missing_ok=True)
    if weights_format == "bin":
        torch.save(state, directory / "pytorch_model.bin")
    elif weights_format == "safetensors":
        save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    else:
        raise ValueError(f"weights_format must be 'safetensors' or 'bin', got {weights_format!r}")
    return directory
