"""Peak host memory of one generation against prompt length, on the long-context probe shape: a random 2-layer,
width-256, 8-head / 2-KV-head model with Qwen3's 151,936-token vocabulary (bf16 and long contexts need a GPU;
this shape makes the vocabulary's share of a prefill visible on a CPU).

    python benchmarks/prefill_memory.py [--lengths 1024,4096,16384,32768] [--method ar] [--tree PATH]

Each length runs `orthrus-bench generate --method METHOD --max-new-tokens 8` in its own process (the tree's code
first on PYTHONPATH: `--tree` measures another checkout, e.g. a `git worktree` of an earlier commit) and reports
that process's peak resident memory (its own ru_maxrss) and how much of it is above the shortest length's. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = dict(
    vocab_size=151_936,
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=40_960,
    mask_token_id=151_935,
)


def save_probe(directory: Path) -> Path:
    from orthrus_core.checkpoint import save_model
    from orthrus_core.micro import micro_config
    from orthrus_core.model import OrthrusForCausalLM, init_weights

    model = init_weights(OrthrusForCausalLM(micro_config(**PROBE)), std=0.02, seed=0).eval()
    return save_model(model, directory / "probe")


# Runs `generate` in the child on a prompt of argv[1] random ids (too many for a command line) and prints the
# child's own peak resident memory (KiB) last.
CHILD = """
import random, resource, sys
from harness.cli import main
n = int(sys.argv[1])
rng = random.Random(n)
ids = ",".join(str(rng.randrange(1000, 100_000)) for _ in range(n))
main([*sys.argv[2:], "--prompt-ids", ids])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss(tree: Path, checkpoint: Path, length: int, method: str) -> float:
    """GiB: the peak resident memory of one `generate` process on a `length`-token prompt."""
    cli = ["generate", "--model", str(checkpoint), "--method", method, "--max-new-tokens", "8", "--json"]
    cmd = [sys.executable, "-c", CHILD, str(length), *cli]
    env = {"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{length} tokens failed:\n{done.stderr[-2000:]}")
    return int(done.stdout.split()[-1]) / 2**20  # KiB -> GiB


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--lengths", default="1024,4096,16384,32768")
    p.add_argument("--method", default="ar")
    p.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose code runs (default: this one)")
    args = p.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_probe(Path(tmp))
        rows = [(n, peak_rss(args.tree, checkpoint, n, args.method)) for n in lengths]
    print(f"peak RSS of `generate --method {args.method} --max-new-tokens 8`, probe shape, CPU, {args.tree}")
    print("| prompt tokens | peak RSS GiB | above the shortest |")
    print("|---|---|---|")
    for n, gib in rows:
        print(f"| {n} | {gib:.2f} | {gib - rows[0][1]:+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
