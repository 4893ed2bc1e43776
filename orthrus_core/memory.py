"""Memory planned before a run: what one method needs on its device for a model, a context length N (prompt +
new tokens) and a batch of B rows, from configs alone, so that a long GPU run is known to fit before it starts.

    model = meta_target(config, torch.bfloat16)        # the target on the meta device: shapes, no memory
    p = plan(model, Decoding("ar"), context=40960, rows=1, device="cuda")
    p.total, p.need(loaded=False) <= USABLE * 141 * GIB

One home for the arithmetic (`orthrus-bench inspect --context`, `run`'s pre-flight and the lm-eval adapter all
call `plan`). What a drafter costs the drafter says (orthrus_core.loop.Drafter's cost methods, for a `Sizing`,
with the helpers below): this module sits below every drafter and tests none's class. Every figure is in bytes
and follows the code that allocates it:

* weights: every parameter and buffer resident for the method, each tensor once (a tied lm_head, a drafter
  that reads the target's embedding or lm_head): the target as `checkpoint.load_model` leaves it (an Orthrus
  checkpoint loads both views, whatever the method) and the drafter's own modules. On the meta device the
  count is exact without allocating anything (`meta_target`; a drafter's modules as harness.methods.plan
  builds them).
* KV cache: K and V of `model.cache_shape(config, rows, capacity)`. The decode loop asks the engine for
  N + max_nodes positions per row (the drafter's largest proposal is scratch beyond the committed ones) and the
  engine rounds that up to `engine.bucket(...)`: both figures are reported (the difference is the rounding).
* drafter state (`Drafter.state_bytes`): a `CachedDrafter`'s own cache (the target's rows, the target's
  capacity + its `extra` positions: EAGLE-3's one layer, DFlash's layers); the target features its `pending`
  rows keep (a copy of the prompt's last feature, never a view that would keep the whole prompt's). Prompt
  lookup's token contexts are on the host: not counted.
* workspace: the transients of the largest pass. The prefill runs each prompt alone, one pass of T tokens
  (causal SDPA from position 0, flash-style: no [T, T] scores), then the drafter's own prefill over the prompt's
  features (`Drafter.prefill_bytes`); a decode cycle runs the drafter's passes (`Drafter.draft_pass_bytes`),
  then one verify pass of T_pass tokens over B rows (AR 1, Orthrus its block size, DFlash its block size,
  EAGLE-3 total_tokens, prompt lookup its drafts + 1). A pass's activations are those of its largest layer
  phase (`activations`) plus the captured features. Attention builds no score matrix (orthrus_core.attention):
  on a CPU a masked pass holds a dense boolean mask [B, 1, T_pass, capacity] (`dense_mask_bytes`); on CUDA
  masked passes run FlexAttention (a block mask, no dense one), and a float32 SDPA pass repeats one layer's K/V
  to the query heads (`expanded_kv_bytes`).
* logits: the prefill keeps the last position's only (float32 [1, V], one row at a time); a decode pass returns
  float32 [B, T_pass, V] (the lm_head's output in the model dtype is converted, both briefly alive), and
  sampling holds `sampling_copies` more of them; a proposal holds what it carries through the verify pass
  (`Drafter.proposal_bytes`: Orthrus' sampled drafts' q [B, K-1, V]); replayed CUDA graphs keep every captured
  pass's outputs (each row bucket, each pass kind the drafter has the engine run: `Drafter.engine_passes`).

total = weights + KV + drafter state + the larger of the two phases (prefill, decode) of workspace + logits. A
plan fits when that is at most USABLE of the device's memory (the rest: the allocator's fragmentation, the CUDA
context, the kernels' own scratch); a run checks what is left to allocate once its weights are loaded.

Not counted: the caches of other capacity buckets and the graphs captured for them, which a static engine
(compile, cudagraph) keeps after a shorter request (a run over prompts of many lengths holds one cache per
bucket it met).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from .engine import bucket, default_engine, row_bucket
from .model import OrthrusForCausalLM, cache_shape, head_dim
from .params import SamplingParams

GIB = 2**30
# The share of the device's memory a plan may take: the rest is the allocator's fragmentation, the CUDA context
# and the kernels' own scratch, none of which the plan itemises.
USABLE = 0.9
FLOAT32 = 4
INT64 = 8
# How a method decodes, as far as memory goes: in the decode loop (every batched method), transformers'
# generate (ar-hf, its DynamicCache or StaticCache), the official Orthrus loop on a DynamicCache, or lossy
# block diffusion.
KINDS = ("loop", "hf-dynamic", "hf-static", "official", "diffusion")


def size(n: float) -> str:
    """Bytes in words: GiB, MiB or KiB."""
    for unit, scale in (("GiB", GIB), ("MiB", 2**20)):
        if abs(n) >= scale / 10:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 2**10:.1f} KiB"


# ------------------------------------------------------------------------------------------------ weights


def unique_tensors(module: nn.Module) -> dict[int, torch.Tensor]:
    """Every parameter and buffer of `module`, each tensor once (a tied weight is one tensor)."""
    out: dict[int, torch.Tensor] = {}
    for t in (*module.parameters(), *module.buffers()):
        out.setdefault(id(t), t)
    return out


def weight_bytes(module: nn.Module, shared: nn.Module | None = None) -> int:
    """Bytes of `module`'s parameters and buffers, each tensor once, less those it shares with `shared` (a
    drafter that reads the target's embedding or lm_head adds nothing for them)."""
    skip = unique_tensors(shared) if shared is not None else {}
    return sum(t.numel() * t.element_size() for k, t in unique_tensors(module).items() if k not in skip)


def diffusion_view_bytes(model: OrthrusForCausalLM) -> int:
    """The target's `*_diff` tensors: what an Orthrus checkpoint's second view adds to the AR model."""
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "_diff" in n)


def meta_target(config, dtype: torch.dtype, diffusion_view: bool = True) -> OrthrusForCausalLM:
    """The target as `checkpoint.load_model` leaves it (weights in `dtype`, the RoPE frequencies in float32),
    on the meta device: every shape and dtype, no memory."""
    with torch.device("meta"):
        model = OrthrusForCausalLM(config, diffusion_view=diffusion_view).to(dtype)
    return model.eval()


def drafter_modules(drafter, target: nn.Module) -> list[nn.Module]:
    """The modules a drafter holds besides the target (EAGLE-3's head, DFlash's drafter)."""
    if drafter is None:
        return []
    return [m for m in vars(drafter).values() if isinstance(m, nn.Module) and m is not target]


# ----------------------------------------------------------------------------------------- the arithmetic


def kv_bytes(config, rows: int, positions: int, itemsize: int) -> int:
    """K and V of every layer of `config` for `rows` rows of `positions` slots (model.cache_shape)."""
    return 2 * itemsize * math.prod(cache_shape(config, rows, positions))


def activations(
    config, tokens: int, itemsize: int, *, attn_in: int | None = None, kv_tokens: int | None = None
) -> int:
    """Peak transient bytes of one decoder layer over `tokens` queries (`kv_tokens` new keys, default the
    same; `attn_in` the attention's input width, default hidden): the largest of its phases, each with the
    layer's input [T, H] (its caller holds it until the layer returns).

    * norm: the input, RMSNorm's float32 upcast and its product (8 bytes an element), the normed output;
    * attention: the input, the normed input [T, attn_in], q [T, heads x D] through projection, q norm,
      rotation and the attention output and its reshaped copy (5 of them at most), k through projection, norm
      and rotation and v [T, kv_heads x D] (4), the output projection [T, H];
    * MLP: the input, the residual after attention, its normed copy, gate, up and their product
      [T, intermediate] (3).

    Measured against torch's CPU allocator on the tiny family (tests/test_memory_plan.py): a prefill's peak
    is this, the RoPE tables and what the pass keeps (captured features), to the kilobyte."""
    H, I = config.hidden_size, config.intermediate_size
    D = head_dim(config)
    q, kv = config.num_attention_heads * D, config.num_key_value_heads * D
    kv_tokens = tokens if kv_tokens is None else kv_tokens
    norm = tokens * H * (2 * itemsize + 2 * FLOAT32)
    attention = itemsize * (tokens * (2 * H + (attn_in or H) + 5 * q) + kv_tokens * 4 * kv)
    mlp = itemsize * tokens * (3 * H + 3 * I)
    return max(norm, attention, mlp)


def dense_mask_bytes(rows: int, tokens: int, keys: int) -> int:
    """A masked pass's boolean mask on a CPU (attention.Visibility.dense, [R, 1, T, keys]): the relative slots
    and their clamp (int64 [R, keys]), the gathered window and the two boolean [R, T, keys] it is combined
    from (3 bytes an entry)."""
    return rows * keys * 2 * INT64 + 3 * rows * tokens * keys


def expanded_kv_bytes(config, rows: int, keys: int, itemsize: int) -> int:
    """One layer's K and V repeated to the query heads: a float32 SDPA pass on CUDA (attention.kernel's "+kv",
    for the memory-efficient kernel, which takes float32 but not grouped-query attention)."""
    return 2 * rows * config.num_attention_heads * head_dim(config) * keys * itemsize


def masked_pass_bytes(
    config, rows: int, queries: int, keys: int, itemsize: int, cuda: bool, expands: bool
) -> int:
    """What a masked decode-time pass's attention holds beyond its activations: on a CPU its dense boolean mask;
    on CUDA nothing (FlexAttention, flash's own causal) unless `expands` (a float32 SDPA pass): one layer's K/V
    repeated to the query heads."""
    if not cuda:
        return dense_mask_bytes(rows, queries, keys)
    return expanded_kv_bytes(config, rows, keys, itemsize) if expands else 0


def rope_bytes(config, tokens: int, itemsize: int) -> int:
    """cos and sin [T, D] of a pass, in the model dtype."""
    return 2 * tokens * head_dim(config) * itemsize


def logits_bytes(tokens: int, vocab: int, itemsize: int) -> int:
    """Float32 logits of `tokens` positions, with the lm_head's output in the model dtype alive while it is
    converted (model.run's `.float()`; nothing more in float32)."""
    return tokens * vocab * (FLOAT32 + (itemsize if itemsize < FLOAT32 else 0))


def sampling_copies(params: SamplingParams | None) -> int:
    """Float32 [..., V] tensors `sampling.probs` holds at its peak beside the logits it is given: none when greedy
    (argmax); the scaled logits and the distribution, and top-k's masked copy, when sampling; with top-p 7 (the
    scaled logits, the distribution, the sorted probabilities, their int64 order (two copies' worth), the
    cumulative sum and its difference)."""
    if params is None or params.greedy:
        return 0
    if params.top_p < 1:
        return 7
    return 3 if params.top_k else 2


def sampling_name(params: SamplingParams | None) -> str:
    if params is None or params.greedy:
        return "greedy"
    return "sampled with top-p" if params.top_p < 1 else "sampled"


# ------------------------------------------------------------------------------------ what a drafter is asked


@dataclass(frozen=True)
class Sizing:
    """What a drafter's cost is computed for (orthrus_core.loop.Drafter's cost methods): the target's `config`,
    the `rows` decoded together, the longest prompt (`prompt_tokens`), the positions per row the target cache
    holds (`capacity`, a bucket), the model dtype's `itemsize`, whether the passes run on CUDA, the float32
    [..., V] tensors sampling holds beside the logits (`sampling_copies`) and the width of the target features
    the drafter captures per token (`features`: len(capture) x hidden)."""

    config: object
    rows: int
    prompt_tokens: int
    capacity: int
    itemsize: int
    cuda: bool
    sampling_copies: int
    features: int

    @property
    def fp32_cuda(self) -> bool:
        """A float32 pass on CUDA: SDPA without FlexAttention, which repeats one layer's K/V to the query heads."""
        return self.cuda and self.itemsize == FLOAT32


class PassBytes(NamedTuple):
    """One pass's transient bytes: its `workspace` (activations, masks) and its `logits` (and what is held
    beside them)."""

    workspace: int
    logits: int


# ------------------------------------------------------------------------------------------------- plans


@dataclass
class Decoding:
    """What the planner needs of a method: its `label` (the method spec), how it decodes (`kind`, one of
    KINDS), its drafter in the decode loop (None: plain AR), the block size of the official loop and of block
    diffusion, the diffusion layout, and `source`: where the drafter's shape came from (said in the plan)."""

    label: str
    kind: str = "loop"
    drafter: object = None  # an orthrus_core.loop.Drafter, which sits above this module and says its own cost
    block_size: int | None = None
    layout: str | None = None
    source: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown decoding kind {self.kind!r}; one of {', '.join(KINDS)}")


@dataclass
class MethodPlan:
    """One method's plan: the itemised bytes (see the module docstring) and what they were computed for."""

    label: str
    device: str
    engine: str
    dtype: str
    sampling: str
    context: int  # N: prompt + new tokens of the longest request
    prompt_tokens: int  # the longest prompt (the prefill's tokens)
    rows: int
    pass_tokens: int  # T_pass: tokens per row of the verify pass
    needed: int  # positions per row the target cache is asked for: N + the drafter's scratch
    capacity: int  # what the engine allocates
    weights: dict[str, int]
    kv: int
    kv_needed: int
    drafter_state: dict[str, int]
    phases: dict[str, dict[str, int]]  # "prefill" / "decode" -> {"workspace": ..., "logits": ...}
    notes: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def weights_total(self) -> int:
        return sum(self.weights.values())

    @property
    def drafter_state_total(self) -> int:
        return sum(self.drafter_state.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda k: sum(self.phases[k].values()))

    @property
    def workspace(self) -> int:
        return self.phases[self.peak_phase]["workspace"]

    @property
    def logits(self) -> int:
        return self.phases[self.peak_phase]["logits"]

    @property
    def total(self) -> int:
        return self.weights_total + self.kv + self.drafter_state_total + self.workspace + self.logits

    def need(self, loaded: bool = False) -> int:
        """Bytes still to allocate: all of it, or with the weights `loaded` already, the rest."""
        return self.total - (self.weights_total if loaded else 0)

    def fits(self, memory: int, loaded: bool = False) -> bool:
        return self.need(loaded) <= USABLE * memory

    def items(self) -> str:
        """The arithmetic in words: what takes how much."""
        weights = " + ".join(f"{k} {size(v)}" for k, v in self.weights.items())
        state = ", ".join(f"{k} {size(v)}" for k, v in self.drafter_state.items())
        state = f"drafter state {size(self.drafter_state_total)} ({state})" if state else "no drafter state"
        if self.peak_phase == "prefill":
            phase = f"the prefill of a {self.prompt_tokens}-token prompt"
        else:
            phase = f"a decode pass of {self.rows} row(s) x {self.pass_tokens} token(s)"
        return (
            f"weights {size(self.weights_total)} ({weights}), KV cache {size(self.kv)} ({self.rows} row(s) x "
            f"{self.capacity} positions for {self.needed} = {self.context} + {self.needed - self.context} scratch), "
            f"{state}, workspace {size(self.workspace)} and "
            f"logits {size(self.logits)} ({phase}), total {size(self.total)}"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            weights_total=self.weights_total,
            drafter_state_total=self.drafter_state_total,
            peak_phase=self.peak_phase,
            workspace=self.workspace,
            logits=self.logits,
            total=self.total,
        )
        return d


def plan(
    model: OrthrusForCausalLM,
    decoding: Decoding,
    *,
    context: int,
    rows: int = 1,
    device: str = "cpu",
    engine: str | None = None,
    prompt_tokens: int | None = None,
    sampling: SamplingParams | None = None,
) -> MethodPlan:
    """The plan of `decoding` on `model` (meta or loaded: its config, dtype and weights are read, nothing is
    run) for requests of `context` positions (prompt + new tokens), `rows` at a time, on `device` ("cuda" or
    "cpu": which attention and engine the passes get; `engine` None or "auto": the device's default).
    `prompt_tokens` is the longest prompt (default: the whole context, a conservative prefill); `sampling` the
    sampling the logits are drawn with (None: greedy)."""
    if context < 1 or rows < 1:
        raise ValueError(f"need context >= 1 and rows >= 1, got {context}, {rows}")
    dtype = model.lm_head.weight.dtype
    engine = default_engine(device) if engine in (None, "auto") else engine
    base = dict(
        label=decoding.label,
        device=device,
        engine=engine,
        dtype=str(dtype).removeprefix("torch."),
        sampling=sampling_name(sampling),
        context=context,
        prompt_tokens=min(context, context if prompt_tokens is None else prompt_tokens),
        source=decoding.source,
    )
    diffusion = diffusion_view_bytes(model)
    weights = {"target": weight_bytes(model) - diffusion}
    if diffusion:  # loaded with an Orthrus checkpoint whatever the method
        weights["diffusion view"] = diffusion
    for m in drafter_modules(decoding.drafter, model):
        weights["drafter"] = weights.get("drafter", 0) + weight_bytes(m, shared=model)
    if decoding.kind == "loop":
        return _loop(model, decoding.drafter, rows, weights, sampling, base)
    return _one_at_a_time(model, decoding, rows, weights, sampling, base)


def _row_buckets(rows: int) -> list[int]:
    """The rows a static engine's passes run at for 1..rows active rows (engine.row_bucket)."""
    return sorted({row_bucket(r, rows) for r in range(1, rows + 1)})


def _loop(model, drafter, rows, weights, sampling, base) -> MethodPlan:
    """A method of the decode loop: the target's passes here, the drafter's own cost asked of the drafter
    (orthrus_core.loop.Drafter's cost methods; None: plain AR, no drafter)."""
    config = model.config
    b = model.lm_head.weight.dtype.itemsize
    V, N = config.vocab_size, base["context"]
    nodes = drafter.max_nodes if drafter is not None else 1
    needed = N + nodes
    sizing = Sizing(
        config,
        rows,
        prompt_tokens=base["prompt_tokens"],
        capacity=bucket(needed),
        itemsize=b,
        cuda=torch.device(base["device"]).type == "cuda",
        sampling_copies=sampling_copies(sampling),
        features=len(drafter.capture) * config.hidden_size if drafter is not None else 0,
    )
    prefill = _target_prefill(sizing)
    # Decode: the drafter's passes, then the verify pass over rows x nodes tokens.
    verify = _verify_pass(sizing, nodes, eager=base["engine"] == "eager")
    draft = PassBytes(0, 0)
    if drafter is not None:
        prefill = PassBytes(max(prefill.workspace, drafter.prefill_bytes(sizing)), prefill.logits)
        draft = drafter.draft_pass_bytes(sizing, verify)
        verify = PassBytes(verify.workspace, verify.logits + drafter.proposal_bytes(sizing))
    notes, graphs = [], 0
    if base["engine"] == "cudagraph":
        # Each captured pass keeps its outputs (logits and features) for every row bucket it ran at; what a
        # replay returns is a clone of them.
        kinds = drafter.engine_passes() if drafter is not None else [1]
        buckets = _row_buckets(rows)
        graphs = sum(r * t * (V * FLOAT32 + sizing.features * b) for r in buckets for t in kinds)
        notes.append(
            f"CUDA graphs: the outputs of {len(kinds)} pass kind(s) x {len(buckets)} row bucket(s) "
            "stay allocated (in logits)"
        )
    phases = {
        "prefill": {"workspace": prefill.workspace, "logits": prefill.logits + graphs},
        "decode": {
            "workspace": max(verify.workspace, draft.workspace),
            "logits": max(verify.logits, draft.logits) + graphs,
        },
    }
    return MethodPlan(
        **base,
        rows=rows,
        pass_tokens=nodes,
        needed=needed,
        capacity=sizing.capacity,
        weights=weights,
        kv=kv_bytes(config, rows, sizing.capacity, b),
        kv_needed=kv_bytes(config, rows, needed, b),
        drafter_state=drafter.state_bytes(sizing) if drafter is not None else {},
        phases=phases,
        notes=notes,
    )


def _target_prefill(s: Sizing) -> PassBytes:
    """The target's prefill: each prompt alone, causal from position 0 (no mask tensor), keeping the captured
    features and the last position's logits."""
    T, b = s.prompt_tokens, s.itemsize
    workspace = activations(s.config, T, b) + rope_bytes(s.config, T, b) + T * s.features * b
    workspace += expanded_kv_bytes(s.config, 1, T, b) if s.fp32_cuda else 0
    return PassBytes(
        workspace, logits_bytes(1, s.config.vocab_size, b) + s.sampling_copies * s.config.vocab_size * FLOAT32
    )


def _verify_pass(s: Sizing, nodes: int, eager: bool) -> PassBytes:
    """The verify pass over rows x nodes tokens, whose keys are the cache's slots: a dense mask on a CPU; on
    CUDA FlexAttention (static engines, ragged rows) or, eager, SDPA's own causal bias over one length, which
    repeats K/V in float32."""
    config, b, V = s.config, s.itemsize, s.config.vocab_size
    tokens = s.rows * nodes
    mask = masked_pass_bytes(config, s.rows, nodes, s.capacity, b, s.cuda, s.fp32_cuda and eager)
    workspace = activations(config, tokens, b) + rope_bytes(config, tokens, b) + 2 * tokens * s.features * b
    logits = logits_bytes(tokens, V, b) + s.sampling_copies * s.rows * nodes * V * FLOAT32
    return PassBytes(workspace + mask, logits)


def _one_at_a_time(model, decoding, rows, weights, sampling, base) -> MethodPlan:
    """The methods outside the decode loop, one prompt at a time, with caches that hold what they need: ar-hf
    (transformers' own passes, planned as this model's), the official Orthrus loop (a DynamicCache; a prefill,
    then per cycle a diffusion pass and a verify pass of K tokens) and block diffusion (its own cache of
    prompt + new tokens + 2 blocks; a block-causal layout prefills in chunks of whole blocks)."""
    from .block_diffusion import cache_capacity, prefill_passes

    config = model.config
    b = model.lm_head.weight.dtype.itemsize
    V, N, T = config.vocab_size, base["context"], base["prompt_tokens"]
    cuda = torch.device(base["device"]).type == "cuda"
    fp32_cuda = cuda and b == FLOAT32
    copies = sampling_copies(sampling)
    notes = [f"{decoding.label} decodes one prompt at a time: planned at 1 row"] if rows > 1 else []
    kind, K = decoding.kind, decoding.block_size or 1
    one_layer = kv_bytes(config, 1, 1, b) // config.num_hidden_layers
    prefill_tokens, prefill_mask = T, 0
    if kind.startswith("hf"):
        pass_tokens, needed = 1, N
    elif kind == "official":
        pass_tokens, needed = K, N + K
    else:
        pass_tokens, needed = K, N + 2 * K
        if decoding.layout != "orthrus":  # block-causal chunks, each seeing the chunks before it, padded
            prefill_tokens = max((w for _, _, w in prefill_passes(T // K * K, K)), default=min(T, K))
            prefill_mask = 0 if cuda else dense_mask_bytes(1, prefill_tokens, T)
    # A DynamicCache grows and a StaticCache holds exactly this; block diffusion's cache is a capacity bucket.
    capacity = needed
    if kind == "diffusion":
        capacity = cache_capacity(T, N - T, K, aligned=decoding.layout != "orthrus")
    step_mask = 0
    if kind in ("official", "diffusion"):  # a causal or block-causal pass over the cache
        step_mask = dense_mask_bytes(1, K, needed) if not cuda else 0
    if fp32_cuda:  # SDPA repeats one layer's K/V to the query heads
        prefill_mask += expanded_kv_bytes(config, 1, T, b)
        step_mask += expanded_kv_bytes(config, 1, needed, b)
    prefill = activations(config, prefill_tokens, b) + rope_bytes(config, prefill_tokens, b) + prefill_mask
    decode = activations(config, pass_tokens, b) + rope_bytes(config, pass_tokens, b) + step_mask
    if kind in ("hf-dynamic", "official"):  # DynamicCache.update: a layer's K/V copied into a longer tensor
        decode += one_layer * needed
        notes.append("DynamicCache: each step copies one layer's K/V into a longer tensor (in workspace)")
    # Block diffusion takes the softmax of a denoising pass's logits; every other sampled pass its distribution.
    decode_copies = max(copies, 1) if kind == "diffusion" else copies
    decode_logits = logits_bytes(pass_tokens, V, b) + decode_copies * pass_tokens * V * FLOAT32
    return MethodPlan(
        **base,
        rows=1,
        pass_tokens=pass_tokens,
        needed=needed,
        capacity=capacity,
        weights=weights,
        kv=kv_bytes(config, 1, capacity, b),
        kv_needed=kv_bytes(config, 1, needed, b),
        drafter_state={},
        phases={
            "prefill": {"workspace": prefill, "logits": logits_bytes(1, V, b) + copies * V * FLOAT32},
            "decode": {"workspace": decode, "logits": decode_logits},
        },
        notes=notes,
    )
