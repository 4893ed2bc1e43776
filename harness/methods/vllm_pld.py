"""`vllm-pld`: vLLM's n-gram speculative decoding (prompt lookup): drafts matched in the context, no drafter
model. The project's `pld` matches n-grams of max_ngram down to 1 tokens: the same lookup here by default."""

from __future__ import annotations

from . import vllm

OPTIONS = {
    "num_speculative_tokens": (int, 4),
    "prompt_lookup_max": (int, 3),
    "prompt_lookup_min": (int, 1),
    **vllm.ENGINE_OPTIONS,
}


def build(target, label, options):
    lo, hi, k = options["prompt_lookup_min"], options["prompt_lookup_max"], options["num_speculative_tokens"]
    if not 1 <= lo <= hi or k < 1:
        raise ValueError(
            f"{label}: need 1 <= prompt_lookup_min <= prompt_lookup_max and num_speculative_tokens >= 1; got "
            f"{lo}, {hi}, {k}"
        )
    config = dict(method="ngram", num_speculative_tokens=k, prompt_lookup_max=hi, prompt_lookup_min=lo)
    return vllm.build(target, label, options, vllm.Speculation(config))
