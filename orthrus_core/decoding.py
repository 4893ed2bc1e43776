"""Exact decoders over the static KV cache: autoregressive (AR) and Orthrus (diffusion draft + AR verify).

Both take a prompt as token ids, batch size 1, and return a `GenerationResult`. The Orthrus decoder emits
exactly the tokens the AR decoder would under greedy decoding (up to floating-point ties) and follows the
same distribution under sampling.

Orthrus cycle (K = block size):
1. diffusion-view forward over [anchor, MASK x (K-1)] at positions start..start+K-1; block position i
   predicts position start+i+1, so positions 0..K-2 give K-1 drafts;
2. AR-view forward over [anchor, drafts] at the same positions, writing their K/V into the cache;
3. consensus (greedy prefix match, or speculative sampling) accepts n drafts and yields one more token
   (the correction, or the bonus when all K-1 are accepted), which becomes the next anchor;
4. the cache keeps anchor + n accepted drafts: rollback is moving its length, nothing is copied.

Metrics (see docs/methodology.md): tau = accepted drafts + 1 per cycle, averaged over cycles; TPF = new tokens
/ (AR + draft forwards after prefill), counting both forwards of each cycle as the paper does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch

from .model import OrthrusForCausalLM
from .sampling import SamplingParams, sample

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

    @property
    def new_tokens(self) -> int:
        return len(self.tokens)

    @property
    def cycles(self) -> int:
        return len(self.accepted)

    @property
    def tau(self) -> float | None:
        """Mean tokens per verification cycle (accepted drafts + 1); None for plain AR decoding."""
        return 1 + sum(self.accepted) / len(self.accepted) if self.accepted else None

    @property
    def tpf(self) -> float | None:
        """New tokens per forward after prefill (the first token comes from the prefill and counts)."""
        forwards = self.ar_forwards + self.draft_forwards
        return self.new_tokens / forwards if forwards else None

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first."""
        return self.decode_s / (self.new_tokens - 1) if self.new_tokens > 1 else None

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
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def __call__(self) -> float:
        self.sync()
        return time.perf_counter()


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
    ids = torch.as_tensor(list(prompt_ids), dtype=torch.long, device=device)
    if ids.ndim != 1 or ids.numel() == 0:
        raise ValueError("the prompt must be a non-empty sequence of token ids")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return ids[None]


def _first_token(model, prompt, cache, params, generator) -> int:
    logits = model(prompt, 0, cache)[0, -1]
    cache.length = prompt.shape[1]
    if params.greedy:
        return int(logits.argmax())
    return int(sample(params.probs(logits), generator))


def default_stop_ids(model: OrthrusForCausalLM) -> list[int]:
    eos = model.config.eos_token_id
    return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))


@torch.inference_mode()
def generate_ar(
    model: OrthrusForCausalLM,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(),
    *,
    stop_token_ids: Iterable[int] | None = None,
    generator: torch.Generator | None = None,
    on_tokens: StreamCallback | None = None,
) -> GenerationResult:
    """Plain autoregressive decoding: one AR-view forward per new token after the prefill."""
    device = model.lm_head.weight.device
    prompt = check_prompt(prompt_ids, max_new_tokens, device)
    out = Output(
        max_new_tokens, default_stop_ids(model) if stop_token_ids is None else stop_token_ids, on_tokens
    )
    clock = Clock(device)
    t0 = clock()
    cache = model.new_cache(prompt.shape[1] + max_new_tokens)
    token = _first_token(model, prompt, cache, params, generator)
    done = out.emit([token])
    t1 = clock()
    ar_forwards = 0
    next_input = torch.empty(1, 1, dtype=torch.long, device=device)
    while not done:
        next_input.fill_(token)
        logits = model(next_input, cache.length, cache)[0, -1]
        ar_forwards += 1
        cache.length += 1
        nxt = logits.argmax() if params.greedy else sample(params.probs(logits), generator)
        token = int(nxt)
        done = out.emit([token])
    return GenerationResult(out.tokens, out.stop_reason, [], 1, ar_forwards, 0, t1 - t0, clock() - t1)


def generate_orthrus(
    model: OrthrusForCausalLM,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(),
    *,
    block_size: int | None = None,
    stop_token_ids: Iterable[int] | None = None,
    generator: torch.Generator | None = None,
    on_tokens: StreamCallback | None = None,
) -> GenerationResult:
    """Orthrus decoding: per cycle one diffusion-view draft pass and one AR-view verify pass, in the draft-verify
    loop every speculative method shares (speculative.py)."""
    from .speculative import OrthrusDrafter, generate_speculative  # speculative.py builds on this module

    drafter = OrthrusDrafter(model, block_size, params, generator)
    return generate_speculative(
        model,
        drafter,
        prompt_ids,
        max_new_tokens,
        params,
        stop_token_ids=stop_token_ids,
        generator=generator,
        on_tokens=on_tokens,
    )


def generate(
    model: OrthrusForCausalLM,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    mode: str = "orthrus",
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    block_size: int | None = None,
    stop_token_ids: Iterable[int] | None = None,
    on_tokens: StreamCallback | None = None,
) -> GenerationResult:
    """Generate with `mode="ar"` or `mode="orthrus"`; sampling when temperature > 0, seeded by `seed`."""
    if mode not in ("ar", "orthrus"):
        raise ValueError(f"unknown mode {mode!r}; choose 'ar' or 'orthrus'")
    generator = None
    if seed is not None:
        generator = torch.Generator(model.lm_head.weight.device).manual_seed(seed)
    params = SamplingParams(temperature, top_k, top_p)
    common = dict(stop_token_ids=stop_token_ids, generator=generator, on_tokens=on_tokens)
    if mode == "ar":
        return generate_ar(model, prompt_ids, max_new_tokens, params, **common)
    return generate_orthrus(model, prompt_ids, max_new_tokens, params, block_size=block_size, **common)
