"""`eagle3`: an EAGLE-3 draft head, dynamic-tree (default) or chain drafting, one tree verify pass per cycle."""

from __future__ import annotations

from orthrus_core.checkpoint import resolve
from orthrus_core.eagle3 import HUB_PATTERNS, Eagle3ChainBatchDrafter, Eagle3Drafter, load_eagle3
from orthrus_core.sampling import SamplingParams

from .base import BatchError, SpeculativeDecoder
from .checkpoints import draft_checkpoint

# EAGLE-3's published config (top-k 10, 7 draft levels, 60 tokens); `total_tokens=16` is the "tree 16" budget.
OPTIONS = {
    "tree": (str, "dynamic"),  # "dynamic" or "chain" (top-1 drafts, `depth` of them)
    "top_k": (int, 10),
    "depth": (int, 7),
    "total_tokens": (int, 60),
    "draft": (str, None),  # hub id or directory; default: the known head for the target (checkpoints.py)
}


class Eagle3Decoder(SpeculativeDecoder):
    name = "eagle3"

    def __init__(self, target, label, config, checkpoints, head):
        super().__init__(target, label, config, checkpoints)
        self.head = head

    def drafter(self, params, generator) -> Eagle3Drafter:
        c, model = self.config, self.target.model
        if c["tree"] == "chain":
            return Eagle3Drafter.chain(self.head, model, c["depth"])
        return Eagle3Drafter(self.head, model, c["top_k"], c["depth"], c["total_tokens"])

    def batch_drafter(self, params):
        if self.config["tree"] != "chain":
            raise BatchError(
                f"{self.label}: tree drafts decode one prompt at a time; eagle3:tree=chain decodes batches"
            )
        return Eagle3ChainBatchDrafter(self.head, self.target.model, self.config["depth"])


def build(target, label, options):
    if options["tree"] not in ("dynamic", "chain"):
        raise ValueError(f"eagle3: tree must be 'dynamic' or 'chain', got {options['tree']!r}")
    directory = resolve(draft_checkpoint("eagle3", target, options["draft"]), patterns=HUB_PATTERNS)
    head = load_eagle3(directory, target.model)
    config = dict(options, draft=options["draft"] or str(directory))
    if options["tree"] == "chain":  # top_k and total_tokens do not apply
        config.update(top_k=1, total_tokens=options["depth"] + 1)
    decoder = Eagle3Decoder(target, label, config, {"draft": str(directory)}, head)
    decoder.drafter(
        SamplingParams(), None
    )  # validates top_k, depth, total_tokens now rather than at the first prompt
    return decoder
