"""One suite item through one decoder: every turn rendered with the chat template, generated, decoded.

Multi-turn items (MT-Bench) feed each turn's answer back as history, so a method always continues from its
own earlier answers, as it would in deployment; for a lossless method under greedy decoding those are the
AR model's answers token for token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orthrus_core.generation import GenerateFn, GenerationResult

from .config import GenerationSettings
from .suite import Suite, SuiteItem


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
    settings: GenerationSettings | None = None,
    *,
    seed: Callable[[int], int] | None = None,
) -> list[Turn]:
    """Generate every turn of `item` with `settings` (default: the suite's own; a run passes
    harness.run.spec.generation_settings). Turn t is seeded with seed(t) (harness.run.seeds) so that
    sampling is reproducible."""
    settings = settings or suite.generation
    stop_ids, stop_strings = settings.stop_token_ids_and_strings(tokenizer)
    sampling = dict(temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    turns: list[Turn] = []
    for t in range(len(item.turns)):
        prompt = suite.render(tokenizer, item, [turn.text for turn in turns])
        seeded = None if seed is None else seed(t)
        result = generate(prompt, settings.max_new_tokens, stop_token_ids=stop_ids, seed=seeded, **sampling)
        turns.append(Turn(prompt, result, answer_text(tokenizer, result.tokens, stop_strings)))
    return turns
