"""Prompt lookup decoding (apoorvumang/prompt-lookup-decoding): no draft model. Per row, the last n tokens (n
from `max_ngram` down to 1) are searched for in the row's earlier context; the first occurrence found supplies
the tokens that followed it as a chain draft. No match: no drafts, and the row's cycle is a plain AR step.
Rows with shorter (or no) drafts are padded, and only their real drafts are verified."""

from __future__ import annotations

import torch

from .loop import Drafter, Proposal


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
        self.contexts: list[torch.Tensor] = []

    def admit(self, b, prompt, features):
        self.contexts.append(prompt.clone())

    def lookup(self, seq: torch.Tensor) -> torch.Tensor:
        """The continuation of the first earlier occurrence of seq's longest matching suffix n-gram."""
        for n in range(min(self.max_ngram, len(seq) - 1), 0, -1):
            windows = seq[:-1].unfold(0, n, 1)  # every n-gram that ends before the suffix's last token
            hits = (windows == seq[-n:]).all(-1).nonzero()[:, 0]
            if len(hits):
                after = int(hits[0]) + n
                return seq[after : after + self.num_draft_tokens]
        return seq[:0]

    def propose(self, roots, params, generators):
        found = [
            self.lookup(torch.cat([c, root[None]])) for c, root in zip(self.contexts, roots, strict=True)
        ]
        tokens = torch.zeros(len(found), 1 + max(map(len, found)), dtype=torch.long, device=roots.device)
        tokens[:, 0] = roots
        for b, d in enumerate(found):
            tokens[b, 1 : 1 + len(d)] = d
        return Proposal(tokens, [len(d) for d in found], 0)

    def accept(self, counts, tokens, features):
        self.contexts = [
            torch.cat([c, tokens[b, :n]]) for b, (c, n) in enumerate(zip(self.contexts, counts, strict=True))
        ]

    def keep(self, rows):
        self.contexts = [self.contexts[b] for b in rows]
