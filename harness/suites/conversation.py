"""One suite item through one decoder: every turn rendered with the chat template, generated, decoded.

Multi-turn items (MT-Bench) feed each turn's answer back as history, so a method always continues from its
own earlier answers, as it would in deployment; for a lossless method under greedy decoding those are the
AR model's answers token for token.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from orthrus_core.generation import GenerationResult
from orthrus_core.loop import Finished, Request

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
    generate,
    settings: GenerationSettings | None = None,
    *,
    seed: Callable[[int], int] | None = None,
) -> list[Turn]:
    """Generate every turn of `item` with `settings` (default: the suite's own; a run passes
    RunSpec.generation's) through `generate` (a decoder's, harness.methods.base.GenerateFn). Turn t is seeded
    with seed(t) (harness.run.seeds) so that sampling is reproducible."""
    settings = settings or suite.generation
    stop_ids, stop_strings = settings.stop_token_ids_and_strings(tokenizer)
    turns: list[Turn] = []
    for t in range(len(item.turns)):
        prompt = suite.render(tokenizer, item, [turn.text for turn in turns])
        seeded = None if seed is None else seed(t)
        result = generate(
            prompt, settings.max_new_tokens, settings.sampling, seed=seeded, stop_token_ids=stop_ids
        )
        turns.append(Turn(prompt, result, answer_text(tokenizer, result.tokens, stop_strings)))
    return turns


@dataclass
class Conversation:
    """One item's turns for one sample in a batched run: a batch request per turn, the next queued when the
    last finishes (so a multi-turn item continues from its own answers, as `run_item` does)."""

    item: SuiteItem
    sample: int
    turns: list[Turn] = field(default_factory=list)
    batch: list[Finished] = field(default_factory=list)  # how each turn shared its batch


def run_batched(
    suite: Suite,
    conversations: list[Conversation],
    tokenizer,
    decode: Callable[[Callable[[], Request | None]], Iterator[Finished]],
    settings: GenerationSettings,
    generator: Callable[[Conversation, int], object],
) -> Iterator[Conversation]:
    """Every turn of `conversations` through `decode` (a decoder's `decode`, bound to its settings and rows),
    yielding each conversation when its last turn finishes. generator(conversation, turn) is the seeded
    generator of that turn's request (harness.run.seeds, as in `run_item`)."""
    stop_ids, stop_strings = settings.stop_token_ids_and_strings(tokenizer)

    def request(c: Conversation) -> Request:
        prompt = suite.render(tokenizer, c.item, [turn.text for turn in c.turns])
        return Request(prompt, settings.max_new_tokens, stop_ids, generator(c, len(c.turns)), key=c)

    queue = deque(request(c) for c in conversations)
    finished = 0
    for done in decode(lambda: queue.popleft() if queue else None):
        c = done.request.key
        text = answer_text(tokenizer, done.result.tokens, stop_strings)
        c.turns.append(Turn(list(done.request.prompt_ids), done.result, text))
        c.batch.append(done)
        if len(c.turns) < len(c.item.turns):
            queue.append(request(c))
        else:
            finished += 1
            yield c
    if finished < len(conversations):
        raise RuntimeError(
            f"the batched decoder stopped with {len(conversations) - finished} conversation(s) unfinished"
        )
