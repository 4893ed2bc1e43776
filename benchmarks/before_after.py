"""Batch-1 speed of this checkout against an earlier commit, in one run, with the tokens held identical.

    python benchmarks/before_after.py --before 862c359 [--modes eager,compile] [--prompts 12] [--new-tokens 256]

The earlier commit's tree is extracted (git archive) to a temporary directory. Each (tree, engine mode) runs in
its own process, on the tiny family's first held-out math prompts (greedy, float32, CPU unless --device):
`ar` and `orthrus` (or `--methods`) through the method registry, each prompt generated once untimed first (so no compilation is
timed), then `--repeats` timed passes. The processes run in the order before, after, then after, before
(drift falls on both sides alike); the table gives tokens/s per tree, mode and method (Σ tokens / Σ seconds
over both rounds), the ratio after / before, τ, and whether every output equals the before tree's `ar`.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs inside each process, with the tree under test first on sys.path. Both trees have load_target(model,
# dtype, device, engine), make_decoder(spec, target) and decoder.generate(prompt_ids, max_new_tokens).
WORKER = r"""
import json, sys, time
from harness.methods import load_target, make_decoder
from orthrus_core.training import tiny_corpus

mode, n_prompts, new_tokens, repeats, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
specs = sys.argv[6].split(",")
target = load_target(None, "float32", device, mode)
render = lambda m: target.tokenizer.apply_chat_template(m, add_generation_prompt=True, enable_thinking=False,
                                                        tokenize=True, return_dict=False)
prompts = [render(tiny_corpus.math_messages(p)) for p in tiny_corpus.heldout_math(n_prompts)]
out = {}
for spec in specs:
    decoder = make_decoder(spec, target)
    for p in prompts:
        decoder.generate(p, new_tokens)
    seconds, results = 0.0, []
    for _ in range(repeats):
        for p in prompts:
            t0 = time.perf_counter()
            results.append(decoder.generate(p, new_tokens))
            seconds += time.perf_counter() - t0
    accepted = [n for r in results for n in r.accepted]
    out[spec] = {"tokens": [r.tokens for r in results[: len(prompts)]], "new_tokens": sum(r.new_tokens for r in results),
                 "seconds": seconds, "accepted": sum(accepted), "cycles": len(accepted)}
print(json.dumps(out, allow_nan=False))
"""


def run(tree: Path, mode: str, args) -> dict:
    cmd = [
        sys.executable,
        "-c",
        WORKER,
        mode,
        str(args.prompts),
        str(args.new_tokens),
        str(args.repeats),
        args.device,
        args.methods,
    ]
    done = subprocess.run(
        cmd, cwd=tree, capture_output=True, text=True, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}
    )
    if done.returncode:
        sys.exit(f"{tree} ({mode}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--before", required=True, help="the earlier commit")
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--prompts", type=int, default=12)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", default="ar,orthrus", help="method specs both trees know; ar first")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        before.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.before], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        trees = {"before": before, "after": ROOT}
        figures: dict = {}
        for mode in args.modes.split(","):
            for side in ("before", "after", "after", "before"):
                got = run(trees[side], mode, args)
                print(
                    f"{mode} {side}: "
                    + ", ".join(f"{s} {g['new_tokens'] / g['seconds']:.1f} tok/s" for s, g in got.items()),
                    file=sys.stderr,
                )
                for spec, g in got.items():
                    f = figures.setdefault(
                        (mode, spec, side),
                        {"new_tokens": 0, "seconds": 0.0, "accepted": 0, "cycles": 0, "tokens": []},
                    )
                    for k in ("new_tokens", "seconds", "accepted", "cycles"):
                        f[k] += g[k]
                    f["tokens"].append(g["tokens"])
    reference = figures[(args.modes.split(",")[0], "ar", "before")]["tokens"][0]
    print(
        f"batch 1, tiny family, {args.prompts} held-out math prompts x {args.new_tokens} new tokens, greedy, "
        f"{args.device}; {args.repeats} timed passes per process, processes before/after/after/before"
    )
    print(
        "| mode | method | before tok/s | after tok/s | after / before | τ before | τ after | identical to ar |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        for spec in args.methods.split(","):
            b, a = figures[(mode, spec, "before")], figures[(mode, spec, "after")]
            rate = lambda f: f["new_tokens"] / f["seconds"]  # noqa: E731
            tau = lambda f: f"{1 + f['accepted'] / f['cycles']:.2f}" if f["cycles"] else "–"  # noqa: E731
            same = all(t == reference for f in (a, b) for t in f["tokens"])
            print(
                f"| {mode} | {spec} | {rate(b):.1f} | {rate(a):.1f} | {rate(a) / rate(b):.3f} | {tau(b)} | {tau(a)} | {'yes' if same else 'NO'} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
