"""Simulated weight quantization: `quantize_(module, format)` rounds the linear weights of a model (or a drafter)
to a low-precision format and back to their own dtype, in place, so a quantized model runs anywhere the
full-precision one does (CPU included) and decodes exactly as the quantized model would (weight-only
quantization; activations stay in the run's dtype).

Formats (symmetric, no zero point; `scale` is what one quantization step, or the largest code, stands for):

* `fp8-tensor`: float8 e4m3 with one scale per tensor, absmax / 448 (e4m3's largest finite value)
* `fp8-channel`: float8 e4m3 with one scale per output channel (row), absmax / 448
* `int8-channel`: integers in [-127, 127], one scale per output channel, absmax / 127
* `int4-group`: integers in [-7, 7], one scale per group of 128 consecutive input columns of a row, absmax / 7
  (a row whose width is not a multiple of 128 ends in a shorter group)

What is quantized: the 2-D weights of every `nn.Linear` (attention q/k/v/o projections of both views, the MLPs,
a drafter's projections and `fc`), not their biases, norms or embeddings, and not `lm_head`: it is tied to the
embeddings in the tied checkpoints (the tiny family, the small Qwen3s), so quantizing it would quantize the
embeddings too, and weight-only recipes (GPTQ, AWQ, FP8 checkpoints) keep it in full precision as well. A
weight already quantized (a module the drafter shares with the target) is left as it is, so applying the same
format twice changes nothing.
"""

from __future__ import annotations

import torch
from torch import nn

FORMATS = ("fp8-tensor", "fp8-channel", "int8-channel", "int4-group")
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
INT8_MAX = 127
INT4_MAX = 7
GROUP = 128  # int4-group: input columns per scale
SKIP = ("lm_head",)  # module names (last component) never quantized
MARK = "_orthrus_quantized"  # set on a parameter once quantized: its format


def check_format(fmt: str | None) -> str | None:
    """A quantization format name (or None: full precision), checked: ValueError naming the formats."""
    if fmt is None or fmt in FORMATS:
        return fmt
    raise ValueError(f"unknown quantization format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _safe(absmax: torch.Tensor, top: float) -> torch.Tensor:
    """absmax / top, with 1 where a row (group, tensor) is all zeros (any scale represents it exactly)."""
    return torch.where(absmax > 0, absmax / top, torch.ones_like(absmax))


def scales(weight: torch.Tensor, fmt: str) -> torch.Tensor:
    """The scales `fmt` gives a 2-D weight, broadcastable against it (int4-group: shape (rows, groups, 1))."""
    w = weight.detach().float()
    if fmt == "fp8-tensor":
        return _safe(w.abs().amax(), FP8_MAX)
    if fmt == "fp8-channel":
        return _safe(w.abs().amax(dim=1, keepdim=True), FP8_MAX)
    if fmt == "int8-channel":
        return _safe(w.abs().amax(dim=1, keepdim=True), INT8_MAX)
    if fmt == "int4-group":
        return _safe(_groups(w).abs().amax(dim=2, keepdim=True), INT4_MAX)
    raise ValueError(check_format(fmt))


def _groups(w: torch.Tensor) -> torch.Tensor:
    """(rows, cols) -> (rows, ceil(cols / GROUP), GROUP), the last group padded with zeros."""
    rows, cols = w.shape
    pad = -cols % GROUP
    return nn.functional.pad(w, (0, pad)).reshape(rows, -1, GROUP)


def fake_quantize(weight: torch.Tensor, fmt: str) -> torch.Tensor:
    """`weight` (2-D) quantized to `fmt` and dequantized back to its own dtype (computed in float32)."""
    check_format(fmt)
    if weight.dim() != 2:
        raise ValueError(f"quantization takes 2-D weights, got shape {tuple(weight.shape)}")
    w = weight.detach().float()
    s = scales(w, fmt)
    if fmt.startswith("fp8"):
        out = (w / s).to(torch.float8_e4m3fn).float() * s
    elif fmt == "int8-channel":
        out = torch.round(w / s).clamp(-INT8_MAX, INT8_MAX) * s
    else:  # int4-group
        g = _groups(w)
        out = (torch.round(g / s).clamp(-INT4_MAX, INT4_MAX) * s).reshape(w.shape[0], -1)[:, : w.shape[1]]
    return out.to(weight.dtype)


@torch.no_grad()
def quantize_(module: nn.Module, fmt: str | None) -> dict:
    """Quantize `module`'s linear weights to `fmt` in place (None: nothing). -> what it did: the format, the
    modules quantized and their parameter count, and the linear modules left in full precision."""
    fmt = check_format(fmt)
    done = {"format": fmt, "quantized": [], "parameters": 0, "skipped": []}
    if fmt is None:
        return done
    for name, sub in module.named_modules():
        if not isinstance(sub, nn.Linear):
            continue
        if name.rsplit(".", 1)[-1] in SKIP:
            done["skipped"].append(name)
            continue
        weight = sub.weight
        if getattr(weight, MARK, None) is not None:  # shared with a module quantized before
            continue
        weight.copy_(fake_quantize(weight, fmt))
        setattr(weight, MARK, fmt)
        done["quantized"].append(name)
        done["parameters"] += weight.numel()
    return done
