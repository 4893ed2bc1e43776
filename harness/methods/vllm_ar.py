"""`vllm-ar`: plain autoregressive decoding in vLLM, the deployed engine's AR (a cross-engine check of `ar`)."""

from __future__ import annotations

from . import vllm

OPTIONS = dict(vllm.ENGINE_OPTIONS)


def build(target, label, options):
    return vllm.build(target, label, options, vllm.Speculation())
