"""What every decoder returns and shares: `GenerationResult`, the output bookkeeping that enforces stop tokens
and the length limit (`Output`), a device-synchronised clock, prompt checks and the checkpoint's stop tokens.
τ and TPF are defined in metrics.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch

from . import metrics
from .model import OrthrusForCausalLM

StreamCallback = Callable[[list[int]], None]


@dataclass
class GenerationResult:
    """One generation. `tokens` are the new tokens only (ending with the stop token when one was hit)."""

    tokens: list[int]
    stop_reason: str  # "stop": a stop token was emitted; "length": max_new_tokens reached
    accepted: list[int] = field(default_factory=list)  # drafts the verifier accepted, per cycle
    prefill_forwards: int = 0
    ar_forwards: int = 0  # target-model forwards after prefill (AR steps or verify passes)
    draft_forwards: int = 0  # drafter forwards (for Orthrus: diffusion-view passes)
    prefill_s: float = 0.0  # prompt forward through the first token (= time to first token)
    decode_s: float = 0.0  # everything after the first token
    # Sampled speculative decoding with a draft distribution q: per new token, [accepted (1) or corrected (0),
    # q(token)] when the verifier ruled on it as a draft position, None otherwise (the first token, a bonus).
    # What an audit of the acceptance rule needs (harness.verify.equivalence.acceptance_audit); empty for the rest.
    acceptance_trace: list[list[float] | None] = field(default_factory=list)
    # When each emission after the first token reached the host, in seconds since the first token (decode_s's
    # clock, rounded to the microsecond by `offsets`): an emission is what one step hands the caller at once,
    # a cycle's accepted drafts and its bonus or correction together, or one AR token. The inter-token
    # latencies (ITL) are the gaps between successive emissions, the first token's at 0 (`itl_s`). None where
    # the decoder cannot tell (it emits everything at the end).
    emit_offsets_s: list[float] | None = None

    @property
    def new_tokens(self) -> int:
        return len(self.tokens)

    @property
    def cycles(self) -> int:
        return len(self.accepted)

    @property
    def tau(self) -> float | None:
        """Mean tokens per verification cycle (accepted drafts + 1); None for plain AR decoding."""
        return metrics.tau(sum(self.accepted), len(self.accepted))

    @property
    def tpf(self) -> float | None:
        """New tokens per forward after prefill (the first token comes from the prefill and counts)."""
        return metrics.tpf(self.new_tokens, self.ar_forwards + self.draft_forwards)

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first."""
        return self.decode_s / (self.new_tokens - 1) if self.new_tokens > 1 else None

    @property
    def itl_s(self) -> list[float] | None:
        """The inter-token latencies: the gaps between successive emissions (metrics.gaps)."""
        return None if self.emit_offsets_s is None else metrics.gaps(self.emit_offsets_s)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.total_s if self.total_s > 0 else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            new_tokens=self.new_tokens,
            tau=self.tau,
            tpf=self.tpf,
            total_s=self.total_s,
            tpot_s=self.tpot_s,
            tokens_per_s=self.tokens_per_s,
        )
        return d


class Clock:
    """Wall-clock that waits for the device queue first, so GPU work is inside the interval."""

    def __init__(self, device: torch.device):
        # the model's device, not the current one: a process may decode on another GPU than its current
        self.sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def __call__(self) -> float:
        self.sync()
        return time.perf_counter()


def offsets(stamps: Iterable[float], first: float) -> list[float]:
    """perf_counter readings as seconds since `first` (the first token's), to the microsecond."""
    return [round(t - first, 6) for t in stamps]


class Output:
    """Collects emitted tokens, enforcing stop tokens and max_new_tokens exactly."""

    def __init__(self, max_new_tokens: int, stop_token_ids: Iterable[int], on_tokens: StreamCallback | None):
        self.tokens: list[int] = []
        self.max_new_tokens = max_new_tokens
        self.stop_ids = frozenset(stop_token_ids)
        self.on_tokens = on_tokens
        self.stop_reason: str | None = None

    def emit(self, new: list[int]) -> bool:
        """Append tokens up to the first stop token or the length limit; True when generation is over."""
        for i, t in enumerate(new):
            if t in self.stop_ids:
                new, self.stop_reason = new[: i + 1], "stop"
                break
        room = self.max_new_tokens - len(self.tokens)
        if len(new) >= room:
            new = new[:room]
            self.stop_reason = self.stop_reason or "length"
        self.tokens += new
        if self.on_tokens and new:
            self.on_tokens(new)
        return self.stop_reason is not None


def check_prompt(prompt_ids, max_new_tokens: int, device) -> torch.Tensor:
    """The prompt as ids [T] on `device`, checked."""
    ids = torch.as_tensor(list(prompt_ids), dtype=torch.long, device=device)
    if ids.ndim != 1 or ids.numel() == 0:
        raise ValueError("the prompt must be a non-empty sequence of token ids")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return ids


def stop_ids(model: OrthrusForCausalLM, stop_token_ids: Iterable[int] | None = None) -> list[int]:
    """The stop tokens of a generation: the ones given, else the checkpoint's eos_token_id (one or a list)."""
    if stop_token_ids is not None:
        return list(stop_token_ids)
    eos = model.config.eos_token_id
    return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
