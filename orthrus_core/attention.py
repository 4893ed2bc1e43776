"""Which keys each query of a pass sees, said by structure, and the fused kernel that computes it.

Every attention call in the project goes through `attend(q, k, v, visible, scale)`; `visible` is one of:

* `CAUSAL`: a pass from position 0 whose keys are its own queries (a prefill, a teacher-forced reference, a
  training pass). SDPA's `is_causal`: no mask tensor, so CUDA takes FlashAttention (which runs grouped-query
  attention natively) and the CPU its fused flash kernel; nothing of size T x T is built.
* `ALL`: every key given (a context a caller assembled exactly, such as the official loop's draft pass).
* `Visibility.after(lengths, T, shape)`: a decode-time pass over a row cache. Row r's queries see every slot
  before `prefix[r]` (the row's committed tokens) and, of the slots `prefix[r] + j` after it, those
  `window[r, i, j]` marks: a causal block (AR steps, verify passes), a whole block (the diffusion view), a tree's
  ancestors, a drafter's scratch rows. Slots past the window (another row's longer prefix, a bucket's zeroed
  tail, padding) are never seen.
* a boolean tensor: an explicit mask, for the trainers' multi-block patterns over short sequences only.

What runs, by structure and device (`kernel`):

| pass | CUDA | CPU |
|---|---|---|
| CAUSAL, ALL | SDPA, no mask (flash) | SDPA, no mask (fused flash) |
| every row at one prefix, whole window (a diffusion block, a T = 1 step) | SDPA, no mask, keys [0, end) | same |
| every row at one prefix, causal window (a verify pass) | SDPA with `causal_lower_right` (flash's own bottom-right causal) | SDPA with a boolean [R, 1, T, end] mask |
| anything else (ragged rows, trees, drafter scratch, static passes over a cache bucket) | FlexAttention, compiled, with a block mask made from `prefix` and the window: tiles wholly in a prefix are full, the window's are partial, the rest are never read | SDPA with a boolean [R, 1, T, end] mask: the CPU's fused kernel takes masks and GQA |

In float32 on CUDA (verify's reference and fp32 runs) flash is unavailable, so the SDPA rows expand K/V to the
query heads (a transient per layer) for the memory-efficient kernel, which takes float32 but not GQA.

On CUDA a dense mask never meets SDPA together with GQA: flash refuses masks, the memory-efficient kernel refuses
GQA, and their combination falls to the math kernel (fp32 scores, K/V repeated per head; at 32K context and the
8B shape about 150 GB moved per step). `planned_on` lets a test ask what a CUDA run would ask of the kernels
without a GPU; tests/test_attention.py records every call.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from .compiled import Compiled, rehearsing
from .host import uncounted, upload

CAUSAL = "causal"
ALL = "all"

# FlexAttention's block size: a block mask lists which 128 x 128 tiles of the score matrix a kernel visits.
FLEX_BLOCK = 128


@dataclass(frozen=True)
class Visibility:
    """What the T queries of a pass over R rows see; see the module docstring.

    lengths  row r's queries see its slots [0, lengths[r]) (its prefix): host ints (eager: the host knows the
             bounds) or a tensor [R] (a static pass, whose keys are the whole cache).
    queries  T.
    shape    "whole" (every window slot), "causal" (W == T, lower triangle) or "pattern" (the window `given`):
             lets a pass whose rows share one prefix (`uniform`) run without a mask tensor.
    given    the window [R, T, W] a pass gives (a tree's ancestors, a drafter's scratch, a "whole" one wider
             than T); None: made from `shape`.

    The tensors (`prefix`, `window`) and the masks are made when a kernel asks for them, once per pass: a pass
    that needs no mask builds nothing, and every layer shares what one made.
    """

    lengths: list[int] | torch.Tensor
    queries: int
    shape: str = "pattern"
    given: torch.Tensor | None = None
    device: torch.device | str | None = None
    _made: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def after(
        cls, lengths, T: int, shape: str, device=None, window: torch.Tensor | None = None
    ) -> Visibility:
        """T new tokens at each row's next slots: `lengths` a host list or a tensor [R]. shape "causal" (AR
        view), "whole" (diffusion view) or "pattern" with `window` [R, T, W] given (a tree's ancestors, a
        drafter's scratch; "whole" with a window of all True where a pass's keys run past its queries, as a
        drafter's context rows do)."""
        if window is not None and shape == "causal":
            raise ValueError("a causal window is made here, not given: pass shape 'pattern' with a window")
        if T == 1 and shape == "causal":
            shape = "whole"
        return cls(lengths, T, shape, window, device)

    def _once(self, key, make):
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    @property
    def width(self) -> int:
        """W: the slots after a row's prefix that its window covers."""
        return self.queries if self.given is None else self.given.shape[2]

    @property
    def end(self) -> int | None:
        """The most slots any query can see (max prefix + W) where the host knows it; None in a static pass."""
        return None if isinstance(self.lengths, torch.Tensor) else max(self.lengths) + self.width

    @property
    def uniform(self) -> bool:
        """Every row at one prefix (known on the host)."""
        return not isinstance(self.lengths, torch.Tensor) and min(self.lengths) == max(self.lengths)

    @property
    def prefix(self) -> torch.Tensor:
        """[R] long: each row's prefix."""
        if isinstance(self.lengths, torch.Tensor):
            return self.lengths
        return self._once("prefix", lambda: upload(self.lengths, self.device))

    @property
    def window(self) -> torch.Tensor:
        """[R, T, W] bool: query i of row r sees slot prefix[r] + j where window[r, i, j]."""
        if self.given is not None:
            return self.given

        def make():
            T = self.queries
            full = torch.ones(T, T, dtype=torch.bool, device=self.prefix.device)
            return (full.tril() if self.shape == "causal" else full).expand(self.prefix.shape[0], T, T)

        return self._once("window", make)

    def dense(self, keys: int) -> torch.Tensor:
        """Boolean [R, 1, T, keys]: the mask this visibility is (True = may attend)."""
        return self._once(("dense", keys), lambda: self._dense(keys))

    def block_mask(self, keys: int) -> BlockMask:
        """FlexAttention's block mask over `keys` slots (`_block_mask`)."""
        return self._once(("blocks", keys), lambda: self._block_mask(keys))

    def plan(self, device: torch.device, dtype: torch.dtype, keys: int) -> tuple:
        """(kernel, keys attended, mask or block mask or None) of this pass over `keys` slots (`kernel`), made
        once: every layer of the pass shares the device, the dtype and the choice."""
        return self._once(("plan", keys, _planned), lambda: self._plan(device, dtype, keys))

    def _plan(self, device, dtype, keys: int) -> tuple:
        choice = kernel(self, device, dtype)
        if choice == "flex":
            return choice, keys, self.block_mask(keys)
        end = keys if self.end is None else self.end
        if choice == "sdpa-mask":
            return choice, end, self.dense(end)
        if choice.startswith("sdpa-lower-right"):
            return choice, end, causal_lower_right(self.queries, end)
        return choice, end, None

    def _dense(self, keys: int) -> torch.Tensor:
        W = self.window.shape[2]
        rel = torch.arange(keys, device=self.prefix.device)[None, None] - self.prefix[:, None, None]
        R, T = self.window.shape[:2]
        inside = self.window.gather(2, rel.clamp(0, W - 1).expand(R, T, keys))
        return ((rel < 0) | ((rel < W) & inside))[:, None]

    def _block_mask(self, keys: int) -> BlockMask:
        """FlexAttention's block mask over `keys` slots, from the structure alone (no [T, keys] tensor): for
        row r the tiles wholly before prefix[r] are full (no mask evaluated), those that touch the window are
        partial (the mask below is evaluated there), and no tile after the window is listed."""
        prefix, window = self.prefix, self.window
        R, T, W = window.shape
        n_kv, n_q = math.ceil(keys / FLEX_BLOCK), math.ceil(T / FLEX_BLOCK)
        blocks = torch.arange(n_kv, device=prefix.device, dtype=torch.int32)
        full = (prefix // FLEX_BLOCK).to(torch.int32)  # tiles wholly inside the prefix
        touched = ((prefix + W + FLEX_BLOCK - 1) // FLEX_BLOCK).clamp(max=n_kv).to(torch.int32)

        def per_tile(x):  # [R] or [R, n_kv] -> [R, 1, n_q, ...]
            return x[:, None, None].expand(R, 1, n_q, *x.shape[1:]).contiguous()

        partial_indices = (full[:, None] + blocks).clamp(max=n_kv - 1)

        def mask_mod(b, h, q, kv):
            rel = kv - prefix[b]
            return (rel < 0) | ((rel < W) & window[b, q, rel.clamp(0, W - 1)])

        return BlockMask.from_kv_blocks(
            per_tile(touched - full),
            per_tile(partial_indices),
            per_tile(full),
            per_tile(blocks.expand(R, n_kv)),
            BLOCK_SIZE=FLEX_BLOCK,
            mask_mod=mask_mod,
            seq_lengths=(T, keys),
            compute_q_blocks=False,
        )


_planned: str | None = None  # a device type to plan for in place of the tensors' own (tests, benchmarks)


@contextlib.contextmanager
def planned_on(device_type: str):
    """Within the block, choose kernels as on `device_type` ("cuda") whatever the tensors' device: what a GPU
    run asks of the kernels, asked on a CPU (a CUDA-only path, FlexAttention, then runs eagerly)."""
    global _planned
    before, _planned = _planned, device_type
    try:
        yield
    finally:
        _planned = before


def kernel(visible, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> str:
    """The kernel a pass with this visibility asks for on `device` at `dtype`: "sdpa" (no mask), "sdpa-causal"
    (is_causal), "sdpa-lower-right" (a bottom-right causal bias), "flex" (a block mask) or "sdpa-mask" (a boolean
    mask); "+kv" where K/V are expanded to the query heads first. On CUDA, flash takes GQA but only half
    precision, and the memory-efficient kernel takes float32 but not GQA: a float32 pass (verify's reference)
    expands K/V for it (transient, per layer) rather than fall to the math kernel."""
    on = _planned or device.type
    if isinstance(visible, torch.Tensor):
        return "sdpa-mask"
    if (
        not isinstance(visible, (str, Visibility))
        or isinstance(visible, str)
        and visible not in (CAUSAL, ALL)
    ):
        raise TypeError(
            f"a pass's visibility is CAUSAL, ALL, a Visibility or a boolean mask, not {visible!r}"
        )
    if isinstance(visible, str):
        choice = "sdpa-causal" if visible == CAUSAL else "sdpa"
    elif visible.uniform and visible.end is not None and visible.shape == "whole":
        choice = "sdpa"
    elif visible.uniform and visible.end is not None and visible.shape == "causal" and on == "cuda":
        choice = "sdpa-lower-right"
    else:
        return "flex" if on == "cuda" else "sdpa-mask"
    return choice + "+kv" if on == "cuda" and dtype not in (torch.float16, torch.bfloat16) else choice


_compiled_flex = Compiled(flex_attention, "flex_attention")


def _flex(q, k, v, **kwargs):
    """FlexAttention, compiled (once per shape, orthrus_core.compiled) where it runs on a GPU or in a rehearsal of
    one; uncompiled it materialises the scores, the reference implementation a CPU run uses. Inside a compiled
    pass (the compile engine) it is traced as it is, and the pass's backend generates its kernel there."""
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, **kwargs)
    if not (q.device.type == "cuda" or rehearsing()):
        with uncounted():  # uncompiled FlexAttention still runs through Dynamo
            return flex_attention(q, k, v, **kwargs)
    return _compiled_flex(q, k, v, **kwargs)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, visible, scale: float | None = None):
    """q [R, heads, T, D] against k, v [R, kv_heads, S, D] (S: the keys given, which for a cache pass are its
    whole buffers) under `visible` -> [R, heads, T, D]."""
    if isinstance(visible, Visibility):  # planned once per pass, for all its layers
        choice, end, mask = visible.plan(q.device, q.dtype, k.shape[2])
    else:
        choice = kernel(visible, q.device, q.dtype)
        mask = visible if isinstance(visible, torch.Tensor) else None
        end = q.shape[2] if visible is CAUSAL else k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if choice == "flex":
        return _flex(q, k, v, block_mask=mask, scale=scale, enable_gqa=gqa)
    k, v = k[:, :, :end], v[:, :, :end]
    if choice.endswith("+kv"):  # K/V expanded to the query heads: a kernel without GQA can take the pass
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        gqa = False
    causal = choice.startswith("sdpa-causal")
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=gqa
    )
