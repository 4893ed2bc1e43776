"""`ar`: plain autoregressive decoding in the decode loop (no drafter: one target step per token), the reference
every method is held to."""

from __future__ import annotations

from .base import LoopDecoder

OPTIONS: dict = {}


def build(target, label, options):
    return LoopDecoder(target, label, options, None)
