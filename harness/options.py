"""The checks every run option gets before the first generation, in one place: `run` (RunSpec.check and the
runner's pre-flight), `generate`, the suite files' [generation] table and the lm-eval adapter all call these.
Each raises `OptionError` (a ValueError: exit 2) naming the option, the value and what would be accepted.

Torch is imported only by the checks that need a device (device availability, memory), so that suite files and
the report stay torch-free.
"""

from __future__ import annotations

import os
import re

from orthrus_core.params import SamplingParams

DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


class OptionError(ValueError):
    """A run option that cannot be used: the message names it, its value and what would be accepted."""


def check_sampling(temperature: float, top_k: int, top_p: float, flags: bool = False) -> SamplingParams:
    """-> the SamplingParams these values make (orthrus_core.params checks each); with `flags`, the error
    names them as the command line does (--top-k)."""
    try:
        return SamplingParams(temperature, top_k, top_p)
    except (ValueError, TypeError) as exc:
        message = str(exc)
        if flags:
            message = "--" + message.replace("top_k", "top-k").replace("top_p", "top-p")
        raise OptionError(message) from None


def check_positive(name: str, value, minimum: int = 1) -> int:
    """An integer option (`name` as the user wrote it, e.g. --samples) that must be >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise OptionError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_device_name(device: str) -> str:
    """The device string's form: cpu, cuda or cuda:N (what torch.device takes and the project runs on)."""
    if not isinstance(device, str) or not DEVICE.match(device):
        raise OptionError(f"--device {device}: not a device; use cpu, cuda or cuda:N (N a GPU index)")
    return device


def check_device(device: str) -> str:
    """`device` well formed and present on this machine."""
    check_device_name(device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise OptionError(f"--device {device}: no CUDA device is available here; use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise OptionError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    return device


def check_length(
    prompt_tokens: int, max_new_tokens: int, max_positions: int, what: str = "the prompt"
) -> None:
    """A prompt and its new tokens fit in the model's positions (max_position_embeddings)."""
    if prompt_tokens + max_new_tokens > max_positions:
        room = max_positions - prompt_tokens
        fix = f"lower --max-new-tokens to {room} or less" if room > 0 else "shorten the prompt"
        raise OptionError(
            f"{what} ({prompt_tokens} tokens) plus max_new_tokens {max_new_tokens} needs "
            f"{prompt_tokens + max_new_tokens} positions, more than the model's {max_positions}: {fix}"
        )


def free_memory(device: str) -> int:
    """Bytes free for new allocations on `device`: the GPU's free memory, or the host's available memory."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            meminfo = dict(line.split(":", 1) for line in f)
        return int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux: the physical memory, a looser bound
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(
    plans, device: str, free: int | None = None, *, loaded: bool = True, fix: str | None = None
) -> None:
    """Each method's memory plan (orthrus_core.memory.MethodPlan, made by harness.methods.plan) fits in the
    memory free on `device`: what it still has to allocate (with its weights `loaded`: the KV cache, the
    drafter's state, the largest pass's workspace and logits) within memory.USABLE of it. The error gives the
    arithmetic: what takes how much, what is free, and what to lower (`fix`)."""
    from orthrus_core.memory import USABLE, size

    free = free_memory(device) if free is None else free
    for plan in plans:
        if plan.fits(free, loaded):
            continue
        beyond = " beyond its weights, which are loaded" if loaded else ""
        raise OptionError(
            f"{plan.label} does not fit on {device}: {plan.rows} row(s) of up to {plan.context} positions "
            f"(a {plan.prompt_tokens}-token prompt and its new tokens) need {size(plan.need(loaded))}{beyond}, "
            f"more than the {size(USABLE * free)} a run may take ({USABLE:.0%} of the {size(free)} free): "
            f"{plan.items()}. "
            + (fix or "Lower --batch-size or --max-new-tokens, use shorter prompts, a smaller --dtype, or a "
               "device with more memory")
        )  # fmt: skip
