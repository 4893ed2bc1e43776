"""Suite items through a decoder's `decode`: every turn rendered with the chat template, queued as a request,
decoded, its answer read back.

Multi-turn items (MT-Bench) feed each turn's answer back as history, so a method always continues from its
own earlier answers, as it would in deployment; for a lossless method under greedy decoding those are the
AR model's answers token for token. The next turn is queued when the previous one finishes, whether the
requests are decoded alone (`one_at_a_time`) or in a batch.
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


# A decoder's `decode` bound to its settings and rows: the requests next_request() returns (until None), each
# yielded as it finishes (harness.methods.base.Decoder.decode).
Decode = Callable[[Callable[[], Request | None]], Iterator[Finished]]


def one_at_a_time(decode: Decode) -> Decode:
    """`decode` with each request in a decode of its own: batch size 1, a request decoded alone in a batch of one
    row, with a cache sized for it, as orthrus_core.loop.generate decodes one."""

    def each(next_request):
        for request in iter(next_request, None):
            yield from decode(source_of(request))

    return each


def source_of(request: Request) -> Callable[[], Request | None]:
    """A `next_request` that returns `request`, then None."""
    box = [request]
    return lambda: box.pop() if box else None


@dataclass
class Conversation:
    """One item's turns for one sample: a request per turn, the next queued when the last finishes (so a
    multi-turn item continues from its own answers)."""

    item: SuiteItem
    sample: int
    turns: list[Turn] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)  # how each turn was decoded (alone, or in a batch)


def run_conversations(
    suite: Suite,
    conversations: list[Conversation],
    tokenizer,
    decode: Decode,
    settings: GenerationSettings | None = None,
    generator: Callable[[Conversation, int], object] = lambda c, turn: None,
) -> Iterator[Conversation]:
    """Every turn of `conversations` with `settings` (default: the suite's own; a run passes RunSpec.generation's)
    through `decode`, yielding each conversation when its last turn finishes. generator(conversation, turn) is
    the seeded generator of that turn's request (harness.run.seeds), so that sampling is reproducible; default
    unseeded."""
    settings = settings or suite.generation
    stop_ids, stop_strings = settings.stop_token_ids_and_strings(tokenizer)

    def request(c: Conversation) -> Request:
        prompt = suite.render(tokenizer, c.item, [turn.text for turn in c.turns])
        return Request(prompt, settings.max_new_tokens, stop_ids, generator(c, len(c.turns)), key=c)

    queue = deque(request(c) for c in conversations)
    ended = 0
    for done in decode(lambda: queue.popleft() if queue else None):
        c = done.request.key
        text = answer_text(tokenizer, done.result.tokens, stop_strings)
        c.turns.append(Turn(list(done.request.prompt_ids), done.result, text))
        c.finished.append(done)
        if len(c.turns) < len(c.item.turns):
            queue.append(request(c))
        else:
            ended += 1
            yield c
    if ended < len(conversations):
        raise RuntimeError(
            f"the decoder stopped with {len(conversations) - ended} conversation(s) unfinished"
        )
