"""The drafter trainers' loop (EAGLE-3 heads and DFlash drafters, eagle3.py and dflash.py): AdamW without
weight decay on the shared schedule (`lr_at`), gradients clipped to norm 1, the loss logged every 50 steps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .batches import Batch
from .schedule import lr_at


def train_loop(
    module: nn.Module,
    params: list[nn.Parameter],
    loss_of: Callable[[Batch], torch.Tensor],
    draw: Callable[[], Batch],
    *,
    steps: int,
    lr: float,
    name: str,
    log: Callable[[str], None],
) -> None:
    """Train `params` (of `module`, in train mode meanwhile) for `steps` steps of `loss_of` on a batch from
    `draw` each, peaking at `lr`; logs "<name> step <n>: loss <x>". Leaves `module` in eval mode."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    module.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=steps // 20 + 1)
        loss = loss_of(draw())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"{name} step {step}: loss {loss.item():.3f}")
    module.eval()
