"""Prompt lookup decoding (apoorvumang/prompt-lookup-decoding): no draft model. The last n tokens (n from
`max_ngram` down to 1) are searched for in the earlier context; the first occurrence found supplies the tokens
that followed it as a chain draft. No match: an empty draft, and the cycle is one plain AR step."""

from __future__ import annotations

import torch

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

    def start(self, prompt, features, capacity):
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
