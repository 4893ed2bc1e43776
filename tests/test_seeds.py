"""Generation seeds: hashed, stable across processes, distinct for every generation of a run."""

from harness.run.seeds import generation_seed


def test_generation_seeds_are_stable_and_distinct():
    seeds = {generation_seed(0, f"suite/{i}", s, t) for i in range(50) for s in range(3) for t in range(2)}
    assert len(seeds) == 300 and all(0 <= x < 2**63 for x in seeds)
    assert generation_seed(0, "suite/1", 0, 0) == generation_seed(0, "suite/1", 0, 0)
    assert generation_seed(0, "suite/1", 0, 0) != generation_seed(1, "suite/1", 0, 0)
