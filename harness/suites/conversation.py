"""One suite item through one decoder: every turn rendered with the chat template, generated, decoded.

Multi-turn items (MT-Bench) feed each turn's answer back as history, so a method always continues from its
own earlier answers, as it would in deployment; for a lossless method under greedy decoding those are the
AR model's answers token for token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orthrus_core.generation import GenerationResult

from .suite import Suite, SuiteItem

# generate(prompt_ids, max_new_tokens, *, temperature, top_k, top_p, seed, stop_token_ids) -> result
GenerateFn = Callable[..., GenerationResult]


@dataclass
class Turn:
    prompt_ids: list[int]
    result: GenerationResult
    text: (
        str  # the answer as the scorer and the next turn see it: special tokens dropped, cut at a stop string
    )


def answer_text(tokenizer, tokens: list[int], stop_strings: list[str]) -> str:
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    for stop in stop_strings:
        text = text.split(stop, 1)[0]
    return text


def run_item(
    suite: Suite,
    item: SuiteItem,
    tokenizer,
    generate: GenerateFn,
    *,
    seed: Callable[[int], int] | None = None,
    **overrides,
) -> list[Turn]:
    """Generate every turn of `item` with the suite's settings (`overrides` replace temperature, top_k,
    top_p or max_new_tokens). Turn t is seeded with seed(t) (harness.run.seeds) so that sampling is
    reproducible."""
    settings = suite.generation
    stop_ids, stop_strings = settings.stop_token_ids_and_strings(tokenizer)
    options = {
        "max_new_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_k": settings.top_k,
        "top_p": settings.top_p,
    }
    unknown = set(overrides) - set(options)
    if unknown:
        raise ValueError(f"cannot override {sorted(unknown)}; only {sorted(options)}")
    options.update({k: v for k, v in overrides.items() if v is not None})
    max_new = options.pop("max_new_tokens")
    turns: list[Turn] = []
    for t in range(len(item.turns)):
        prompt = suite.render(tokenizer, item, [turn.text for turn in turns])
        result = generate(
            prompt,
            max_new,
            stop_token_ids=stop_ids,
            seed=None if seed is None else seed(t),
            **options,
        )
        turns.append(Turn(prompt, result, answer_text(tokenizer, result.tokens, stop_strings)))
    return turns
