"""Tokenizer loading: the checkpoint's own Hugging Face tokenizer files, when it ships them.

Never with remote code: `trust_remote_code=False` makes transformers use its own class for the tokenizer a
checkpoint names (SDAR's tokenizer_config.json maps AutoTokenizer to a copy of Qwen2Tokenizer in the repo;
with the default, transformers asks "Do you wish to run the custom code? [y/N]" and waits for an answer).

A checkpoint with tokenizer files that cannot make a tokenizer (tokenizer_config.json without tokenizer.json, a
tokenizer.json that does not parse) is a CheckpointError naming the file and what to do, not transformers'
advice to install sentencepiece.
"""

from __future__ import annotations

import os
from pathlib import Path

# Any of these makes a directory one with a tokenizer (none of them: load_tokenizer returns None).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
FAST_FILE = "tokenizer.json"
# What a slow tokenizer is built from when there is no tokenizer.json: any one of these sets of files.
SLOW_VOCABULARIES = (
    ("vocab.json", "merges.txt"),
    ("tokenizer.model",),
    ("vocab.txt",),
    ("spiece.model",),
    ("sentencepiece.bpe.model",),
)
# The tokenizer files transformers parses as JSON, checked when loading fails.
JSON_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
)
# Where the public checkpoints this harness runs take their tokenizer from.
BASE_MODEL = "Qwen/Qwen3-8B"


def copy_hint(directory: Path, name: str) -> str:
    return (
        f"copy {name} from the base model this checkpoint was made from, e.g. for a Qwen3 one `hf download "
        f"{BASE_MODEL} {name} --local-dir {directory}`, or re-download the checkpoint"
    )


def check_tokenizer_files(directory: str | os.PathLike) -> None:
    """Raise a CheckpointError when `directory` has tokenizer files but neither tokenizer.json nor a vocabulary
    a slow tokenizer could be built from (the files transformers would fall back on)."""
    from .checkpoint import CheckpointError

    directory = Path(directory)
    if (directory / FAST_FILE).is_file():
        return
    if any(all((directory / f).is_file() for f in files) for files in SLOW_VOCABULARIES):
        return
    present = [f for f in TOKENIZER_FILES if (directory / f).is_file()]
    raise CheckpointError(
        f"{directory}: has {' and '.join(present)} but no {FAST_FILE} (nor the vocabulary files a slow tokenizer "
        f"is built from, such as vocab.json with merges.txt), so its tokenizer cannot be loaded; "
        + copy_hint(directory, FAST_FILE)
    )


def load_tokenizer(path_or_id: str | os.PathLike):
    """The tokenizer stored with a checkpoint (directory or hub id), or None when it has none."""
    from transformers import AutoTokenizer

    from .checkpoint import CheckpointError, read_json, refetch_hint, resolve

    directory = Path(resolve(path_or_id))
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        return None
    check_tokenizer_files(directory)
    try:
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
    except Exception as e:  # transformers' and tokenizers' errors name neither the file nor a remedy
        for name in JSON_FILES:
            path = directory / name
            if path.is_file():
                remedy = copy_hint(directory, name) if name == FAST_FILE else refetch_hint(path)
                read_json(path, f"the file is damaged: {remedy}")
        raise CheckpointError(
            f"{directory}: its tokenizer files cannot be loaded ({type(e).__name__}: {str(e)[:300]}); check "
            f"{', '.join(f for f in JSON_FILES if (directory / f).is_file())}, or re-download them"
        ) from e
