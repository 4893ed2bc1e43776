"""Prompt lookup decoding (apoorvumang/prompt-lookup-decoding): no draft model. The last n tokens (n from
`max_ngram` down to 1) are searched for in the earlier context; the first occurrence found supplies the tokens
that followed it as a chain draft. No match: an empty draft, and the cycle is one plain AR step."""

from __future__ import annotations

import torch

from .batch import BatchDrafter
from .speculative import Drafter
from .tree import DraftTree


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

    def start(self, prompt, features, cache):
        self.context = prompt.clone()

    def propose(self, root):
        seq = torch.cat([self.context, self.context.new_tensor([root])])
        return DraftTree.chain(root, self.lookup(seq)), 0

    def lookup(self, seq: torch.Tensor) -> torch.Tensor:
        """The continuation of the first earlier occurrence of seq's longest matching suffix n-gram."""
        for n in range(min(self.max_ngram, len(seq) - 1), 0, -1):
            windows = seq[:-1].unfold(0, n, 1)  # every n-gram that ends before the suffix's last token
            hits = (windows == seq[-n:]).all(-1).nonzero()[:, 0]
            if len(hits):
                after = int(hits[0]) + n
                return seq[after : after + self.num_draft_tokens]
        return seq[:0]

    def accept(self, tokens, features):
        self.context = torch.cat([self.context, tokens])


class PromptLookupBatchDrafter(BatchDrafter):
    """Prompt lookup over a batch: each row looks up its own context; rows with shorter (or no) drafts are
    padded, and only their real drafts are verified."""

    def __init__(self, max_ngram: int = 3, num_draft_tokens: int = 10):
        self.lookup = PromptLookupDrafter(max_ngram, num_draft_tokens).lookup  # validates the options
        self.num_draft_tokens = num_draft_tokens

    @property
    def max_nodes(self) -> int:
        return self.num_draft_tokens + 1

    def bind(self, cache, rows):
        super().bind(cache, rows)
        self.contexts: list[torch.Tensor | None] = [None] * rows

    def admit(self, b, prompt, features):
        self.contexts[b] = prompt.clone()

    def propose(self, roots, generators):
        found = [
            self.lookup(torch.cat([c, root[None]])) for c, root in zip(self.contexts, roots, strict=True)
        ]
        drafts = torch.zeros(len(found), max(map(len, found)), dtype=torch.long, device=roots.device)
        for b, d in enumerate(found):
            drafts[b, : len(d)] = d
        return drafts, [len(d) for d in found], None, 0

    def accept(self, counts, tokens, features):
        self.contexts = [
            torch.cat([c, tokens[b, :n]]) for b, (c, n) in enumerate(zip(self.contexts, counts, strict=True))
        ]

    def keep(self, rows):
        self.contexts = [self.contexts[b] for b in rows]
