"""The seed of every sampled generation in a run.

Each (item, sample, turn) gets its own seed, hashed from the run's base seed with numpy's SeedSequence, never
`base + offset`: generations that share a seed share their random stream, and nearby integer seeds are not
guaranteed to give independent ones, while the sampling verdict (verify.py) treats every generation as an
independent draw. Every method gets the same seed for the same generation (common random numbers), which
makes method-vs-AR comparisons (T4) conservative, never anti-conservative.
"""

from __future__ import annotations

import zlib

import numpy as np

RULE = "SeedSequence(base, spawn_key=(crc32(item_id), sample, turn))"


def generation_seed(base: int, item_id: str, sample: int, turn: int) -> int:
    """A 63-bit seed for torch.Generator.manual_seed, the same on every machine and Python process."""
    key = (zlib.crc32(str(item_id).encode()), sample, turn)
    state = np.random.SeedSequence(base, spawn_key=key).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)
