"""Prompt lookup decoding (apoorvumang/prompt-lookup-decoding): no draft model. Per row, the last n tokens (n
from `max_ngram` down to 1) are searched for in the row's earlier context; the first occurrence found supplies
the tokens that followed it as a chain draft. No match: no drafts, and the row's cycle is a plain AR step (in a static engine its root verified at the
drafter's full width, orthrus_core.loop).
Rows with shorter (or no) drafts are padded, and only their real drafts are verified.

The search runs on the host, over each row's text as the loop emitted it (`Drafter.emitted`), in NumPy: the
device is asked for nothing, and the drafts go up with one asynchronous copy (orthrus_core.host)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .host import upload
from .loop import Drafter, Proposal


class Text:
    """A row's tokens so far (prompt and emitted), in a NumPy buffer that grows by doubling."""

    def __init__(self, tokens):
        self.buffer = np.asarray(tokens, dtype=np.int64)
        self.length = len(self.buffer)

    def extend(self, tokens: list[int]) -> None:
        end = self.length + len(tokens)
        if end > len(self.buffer):
            grown = np.empty(max(end, 2 * len(self.buffer)), dtype=np.int64)
            grown[: self.length] = self.buffer[: self.length]
            self.buffer = grown
        self.buffer[self.length : end] = tokens
        self.length = end

    @property
    def tokens(self) -> np.ndarray:
        return self.buffer[: self.length]


class PromptLookupDrafter(Drafter):
    def __init__(self, max_ngram: int = 3, num_draft_tokens: int = 10):
        if max_ngram < 1 or num_draft_tokens < 1:
            raise ValueError(
                f"max_ngram and num_draft_tokens must be >= 1, got {max_ngram}, {num_draft_tokens}"
            )
        self.max_ngram = max_ngram
        self.num_draft_tokens = num_draft_tokens

    @property
    def max_nodes(self) -> int:
        return self.num_draft_tokens + 1

    def bind(self, engine, cache):
        super().bind(engine, cache)
        self.texts: list[Text] = []

    def admit(self, b, prompt, features):
        # Once per request (its first token has just been read back, so the device has nothing queued).
        self.texts.append(Text(prompt.tolist()))

    def emitted(self, b, tokens):
        self.texts[b].extend(tokens)

    def lookup(self, seq: np.ndarray) -> list[int]:
        """The continuation of the first earlier occurrence of seq's longest matching suffix n-gram."""
        for n in range(min(self.max_ngram, len(seq) - 1), 0, -1):
            windows = sliding_window_view(
                seq[:-1], n
            )  # every n-gram that ends before the suffix's last token
            hits = np.flatnonzero((windows == seq[-n:]).all(-1))
            if len(hits):
                after = int(hits[0]) + n
                return seq[after : after + self.num_draft_tokens].tolist()
        return []

    def propose(self, roots, params, generators):
        # Each row's text ends with its root (the last token emitted).
        found = [self.lookup(text.tokens) for text in self.texts]
        width = 1 + max(map(len, found))
        rows = [[int(text.tokens[-1]), *d] + [0] * (width - 1 - len(d)) for text, d in zip(self.texts, found, strict=True)]  # fmt: skip
        return Proposal(upload(rows, roots.device), [len(d) for d in found], 0)

    def keep(self, rows):
        self.texts = [self.texts[b] for b in rows]
