"""The public checkpoints the registry knows: the Qwen3 bases' shapes, and which draft checkpoint a method uses
for a given target.

Public drafts are matched by the base model's size in the target's name or path (a hub cache directory keeps
the repository name: models--chiennv--Orthrus-Qwen3-8B), so a stock Qwen3 and its Orthrus conversion share
their drafts (Orthrus' AR view is the frozen base). A local target directory with a sibling directory named
after the method (the tiny family: models/tiny/{orthrus,eagle3,dflash}) uses that. `draft=` overrides both.
"""

from __future__ import annotations

import re
from pathlib import Path

# AngelSlim's EAGLE-3 heads are the ones the DFlash and Orthrus comparisons used (the DFlash authors say so in
# https://github.com/z-lab/dflash/issues/21); z-lab publishes DFlash drafters for Qwen3-4B and 8B, none for 1.7B.
PUBLIC_DRAFTS = {
    "eagle3": {
        "qwen3-1.7b": "AngelSlim/Qwen3-1.7B_eagle3",
        "qwen3-4b": "AngelSlim/Qwen3-4B_eagle3",
        "qwen3-8b": "AngelSlim/Qwen3-8B_eagle3",
    },
    "dflash": {
        "qwen3-4b": "z-lab/Qwen3-4B-DFlash-b16",
        "qwen3-8b": "z-lab/Qwen3-8B-DFlash-b16",
    },
}
# Qwen3 dense shapes (config.json of Qwen/Qwen3-*), with Orthrus' block size and mask id
# (chiennv/Orthrus-Qwen3-* add a diffusion view to exactly these).
_QWEN3 = dict(
    vocab_size=151936,
    max_position_embeddings=40960,
    rope_theta=1e6,
    head_dim=128,
    num_key_value_heads=8,
    block_size=32,
    mask_token_id=151669,
    eos_token_id=151645,
)
QWEN3_SHAPES = {
    "qwen3-1.7b": dict(
        _QWEN3,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        tie_word_embeddings=True,
    ),
    "qwen3-4b": dict(
        _QWEN3,
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        tie_word_embeddings=True,
    ),
    "qwen3-8b": dict(
        _QWEN3,
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        tie_word_embeddings=False,
    ),
}
BASE_NAME = re.compile(r"qwen3-(1\.7b|4b|8b)(?![\w.])", re.IGNORECASE)


# The public drafts' shapes beside their base's (../shared/checkpoint-configs, SOURCES.md), for planning memory
# without the checkpoint (harness.methods.plan): AngelSlim's EAGLE-3 heads have the base's dimensions, a
# 32,000-token draft vocabulary and no embedding of their own (they read the target's); z-lab's DFlash drafters
# have the base's dimensions, 5 layers and block size 16 (reading target layers 1, 9, 17, 25, 33 of 36,
# DFlash's default spacing), and read the target's embedding and lm_head.
PUBLIC_DRAFT_SHAPES = {"eagle3": {"draft_vocab_size": 32000}, "dflash": {"num_layers": 5, "block_size": 16}}


def find_draft(method: str, target_path: str, override: str | None = None) -> str | None:
    """The hub id or directory of `method`'s draft for the target at `target_path` (`override`, a sibling
    directory named after the method, or the public draft of the base named in the path), or None."""
    if override:
        return override
    sibling = Path(target_path).parent / method
    if Path(target_path).is_dir() and (sibling / "config.json").is_file():
        return str(sibling)
    match = BASE_NAME.search(str(target_path))
    public = PUBLIC_DRAFTS.get(method, {})  # a method may have no public draft
    if match and match.group(0).lower() in public:
        return public[match.group(0).lower()]
    return None


def draft_directory(method: str, target_path: str, override: str | None = None):
    """(the draft's local directory or None, the hub id or None) of `method`'s draft for the target at
    `target_path` (find_draft), without fetching a weight: a hub id other than the public drafts has its config
    files fetched (or read from the hub cache), a public one nothing (its shape is PUBLIC_DRAFT_SHAPES')."""
    from orthrus_core.checkpoint import resolve

    found = find_draft(method, target_path, override)
    if found is None:
        return None, None
    if Path(found).expanduser().is_dir():
        return Path(found).expanduser(), None
    if found in PUBLIC_DRAFTS.get(method, {}).values():
        return None, found
    return resolve(found, patterns=("*.json",)), found


def draft_checkpoint(method: str, target, override: str | None = None) -> str:
    """The hub id or directory of `method`'s draft for `target` (a harness.methods.base.Target)."""
    found = find_draft(method, target.path, override)
    if found is not None:
        return found
    sibling = Path(target.path).parent / method
    known = ", ".join(f"{base} -> {repo}" for base, repo in PUBLIC_DRAFTS.get(method, {}).items()) or "none"
    raise ValueError(
        f"no {method} draft checkpoint is known for the model {target.path} (known: {known}; or a sibling "
        f"directory {sibling}); pass one with {method}:draft=<hub id or directory>"
    )
