"""Tokenizer loading: the checkpoint's own Hugging Face tokenizer files, when it ships them."""

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
    return AutoTokenizer.from_pretrained(directory)
