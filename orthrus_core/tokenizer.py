"""Tokenizer loading: the checkpoint's own Hugging Face tokenizer files, when it ships them.

Never with remote code: `trust_remote_code=False` makes transformers use its own class for the tokenizer a
checkpoint names (SDAR's tokenizer_config.json maps AutoTokenizer to a copy of Qwen2Tokenizer in the repo;
with the default, transformers asks "Do you wish to run the custom code? [y/N]" and waits for an answer).
"""

from __future__ import annotations

import os
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def load_tokenizer(path_or_id: str | os.PathLike):
    """The tokenizer stored with a checkpoint (directory or hub id), or None when it has none."""
    from transformers import AutoTokenizer

    from .checkpoint import resolve

    directory = resolve(path_or_id)
    if not any((Path(directory) / f).is_file() for f in TOKENIZER_FILES):
        return None
    return AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
