"""Shared fixtures: the project's data folder (``../shared/data`` beside the checkout, or
``$ORTHRUS_DATA_DIR``) and the Qwen3 tokenizer stored in it."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    configured = os.environ.get("ORTHRUS_DATA_DIR")
    path = Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (path / "MANIFEST.md").is_file():
        raise RuntimeError(
            f"the benchmark data folder is missing at {path}: check out ../shared beside the repository or "
            f"set ORTHRUS_DATA_DIR"
        )
    return path


@pytest.fixture(scope="session")
def qwen3_tokenizer(data_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(data_dir / "tokenizers" / "qwen3")
