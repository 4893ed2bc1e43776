"""Filler text that brings a rendered prompt to an exact number of tokens.

Re-tokenising a decoded prefix of token ids does not always give the same ids back: the last token may
merge differently with the text that follows it in the prompt. So the prefix length is adjusted until the
whole rendered prompt, measured by the model's own tokenizer and chat template, has exactly the target
length.
"""

from __future__ import annotations

from collections.abc import Callable

# How far either side of the first estimate the search looks before giving up.
SEARCH_RADIUS = 64


class ContextFillError(ValueError):
    pass


def fill_to_length(
    target_tokens: int,
    corpus_ids: list[int],
    decode: Callable[[list[int]], str],
    prompt_length: Callable[[str], int],
) -> str:
    """Text made of a prefix of ``corpus_ids`` such that ``prompt_length(text) == target_tokens``.

    ``prompt_length(text)`` renders the whole prompt with ``text`` as its filler and counts its tokens."""
    overhead = prompt_length("")
    if overhead >= target_tokens:
        raise ContextFillError(
            f"the prompt without filler already has {overhead} tokens, not below {target_tokens}"
        )
    cache: dict[int, tuple[str, int]] = {}

    def measure(prefix: int) -> tuple[str, int]:
        if prefix not in cache:
            # A prefix can end inside a multi-byte character; drop the replacement character it decodes to.
            text = decode(corpus_ids[:prefix]).rstrip("\ufffd")
            cache[prefix] = (text, prompt_length(text))
        return cache[prefix]

    estimate = target_tokens - overhead
    if estimate > len(corpus_ids):
        raise ContextFillError(
            f"{target_tokens} tokens needed but the text provides only {len(corpus_ids)} tokens of filler"
        )
    prefix = estimate
    for _ in range(8):  # Newton-like steps: each corrects by the measured error
        text, length = measure(prefix)
        if length == target_tokens:
            return text
        step = target_tokens - length
        if prefix + step in cache:
            break
        prefix = min(max(prefix + step, 0), len(corpus_ids))
    for offset in sorted(range(-SEARCH_RADIUS, SEARCH_RADIUS + 1), key=abs):
        candidate = estimate + offset
        if 0 <= candidate <= len(corpus_ids):
            text, length = measure(candidate)
            if length == target_tokens:
                return text
    raise ContextFillError(f"no prefix of the text renders to exactly {target_tokens} tokens")
