"""`orthrus-bench calibrate --greedy`: the greedy verdict's error rates below float32, measured on CPU.

Greedy decoding is deterministic, so a replicate is a run of `prompts` prompts drawn without replacement from a
pool. Each pool prompt is decoded once by every decoder in `dtype` and compared with AR once (forensics.py,
re-synchronised after each divergence); each AR path is studied once under the benign perturbations. A
replicate pools the benign studies of its first `tie_paths` prompts (verify studies the first paths of a suite)
and reaches its verdict exactly as verify does (greedy.greedy_verdict). Replicates share prompts, so they are
not independent: the rate is the verdict's error rate at this run size, for prompts like the pool's, and its
binomial CI is narrower than the truth.

* A/A: `ar-hf` against `ar`: transformers' generate with its own kernels on the same weights, a second AR,
  lossless by construction. Its FAIL rate must not be significantly above alpha.
* lossless: Orthrus against `ar`, the same requirement.
* mutant: Orthrus with `bias` added to one token's logit in every verify pass (AcceptanceRule.target_logits),
  the kind of error a kernel bug makes: it flips tokens only where that token was already within `bias` of
  the top. The token is the one found within `bias` of the float32 top in the most of the pool's AR paths
  (a frequent token: the one the bug flips in the most generations). Its FAIL rate must reach 0.8. Beside it, the rule this verdict replaced (a divergence is a near-tie
  within max(two bf16 ulps at the typical top logit, the largest flip margin seen), the rate test at alpha)
  shows what the bug did to that rule.
"""

from __future__ import annotations

import math
import platform
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from harness.methods import make_decoder
from harness.methods.base import GenerateFn
from harness.methods.target import Target, load_target
from harness.progress import SILENT, Reporter
from orthrus_core.generation import stop_ids as eos_ids
from orthrus_core.jsonfile import write_json
from orthrus_core.params import GREEDY
from orthrus_core.sampling import AcceptanceRule

from .calibrate import POWER_TARGET, calibration_prompts, exact_ci95, requirement_met
from .config import GreedyCalibrationConfig
from .forensics import BenignStudy, PairComparison, benign_study, compare_pair
from .fp32_reference import Reference
from .greedy import greedy_continuation, greedy_verdict


@dataclass
class GreedyArm:
    name: str
    requirement: str  # "<= alpha" or ">= 0.8"
    fails: list[bool] = field(default_factory=list)
    previous_rule_fails: list[bool] = field(default_factory=list)
    by_margin: int = 0  # replicates failed by an algorithmic divergence
    by_combined: int = 0  # replicates failed by the margins' combined p-value
    by_rate: int = 0  # replicates failed by the rate test
    events: int = 0
    diverging: float = 0.0  # share of the pool's generations that diverge from AR
    thresholds: list[float] = field(default_factory=list)

    @property
    def replicates(self) -> int:
        return len(self.fails)

    @property
    def rate(self) -> float:
        return sum(self.fails) / self.replicates if self.replicates else math.nan

    @property
    def ci95(self) -> tuple[float, float]:
        return exact_ci95(sum(self.fails), self.replicates)

    def met(self, alpha: float) -> bool:
        return requirement_met(self.requirement, self.rate, self.ci95, alpha)

    def to_dict(self, alpha: float) -> dict:
        return {
            **{
                k: v
                for k, v in asdict(self).items()
                if k not in ("fails", "previous_rule_fails", "thresholds")
            },
            "replicates": self.replicates,
            "fail": sum(self.fails),
            "rate": self.rate,
            "ci95": self.ci95,
            "met": self.met(alpha),
            "previous_rule_rate": sum(self.previous_rule_fails) / max(self.replicates, 1),
            "median_threshold": float(np.median(self.thresholds)) if self.thresholds else None,
        }


def bias_rule(token: int, bias: float) -> AcceptanceRule:
    """The exact rule, reading every verify pass's logits with `bias` added to `token`'s."""

    def biased(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[..., token] += bias
        return logits

    return AcceptanceRule(target_logits=biased)


def most_flipped_token(reference: Reference, paths, bias: float) -> tuple[int, float]:
    """(the token found within `bias` logits below the float32 top in the most of the paths: the one a bias
    of that strength flips in the most generations, to first order; the 95th percentile of the top logit:
    the previous rule's floor is two ulps there)."""
    generations, tops = Counter(), []
    for prompt, tokens in paths:
        if not tokens:
            continue
        logits = reference.logits(prompt, tokens)
        top = logits.max(-1, keepdim=True).values
        gap = top - logits
        generations.update(set(((gap > 0) & (gap < bias)).nonzero()[:, 1].tolist()))
        tops.append(top[:, 0].numpy())
    if not generations:
        raise ValueError(
            f"no token comes within {bias} logits of the top along the pool's paths: raise --bias"
        )
    return generations.most_common(1)[0][0], float(np.percentile(np.abs(np.concatenate(tops)), 95))


def previous_rule_fails(compared, study: BenignStudy, floor: float, alpha: float) -> bool:
    """The rule this verdict replaced: FAIL on a margin above max(floor, the largest flip margin seen), or a
    one-sided Fisher test of the rates at alpha."""
    threshold = max([floor, *study.flip_margins])
    events = [e for _, pair in compared for e in pair.events]
    if any(e.margin is None or abs(e.margin) > threshold for e in events):
        return True
    positions = sum(pair.positions for _, pair in compared)
    table = [[len(events), positions - len(events)], [study.flips, study.positions - study.flips]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue) <= alpha


def pool_prompts(target: Target, config: GreedyCalibrationConfig) -> list[list[int]]:
    """`pool` prompts drawn from every tiny-suite prompt (random token ids for a model without a tokenizer)."""
    if target.tokenizer is None:
        return calibration_prompts(target.model, None, config.pool, config.seed)
    every = calibration_prompts(target.model, target.tokenizer, sys.maxsize, config.seed)
    if len(every) < config.pool:
        raise ValueError(f"the pool needs {config.pool} prompts; the tiny suites give {len(every)}")
    return random.Random(config.seed).sample(every, config.pool)


def calibrate_greedy(
    target: Target,
    reference: Reference,
    pool: list[list[int]],
    config: GreedyCalibrationConfig,
    progress: Reporter = SILENT,
) -> tuple[list[GreedyArm], dict]:
    """-> (arms, meta). `target` decodes in the calibrated dtype, `reference` is its float32 twin. Each step
    shows on `progress` (stderr)."""
    steps = Steps(progress)
    t0 = time.perf_counter()
    net = target.model
    stops = eos_ids(net)
    ar = make_decoder("ar", target)
    ar_runs = [
        ar.generate(p, config.max_new_tokens, GREEDY, stop_token_ids=stops) for p in steps.bar(pool, "AR")
    ]
    paths = [list(r.tokens) for r in ar_runs]
    steps.say(
        f"AR: {sum(map(len, paths))} tokens over {len(pool)} prompts ({time.perf_counter() - t0:.0f} s)"
    )
    studies = [
        benign_study(net, reference.logits, [(p, a)])
        for p, a in steps.bar(zip(pool, paths, strict=True), "benign studies", len(pool))
    ]
    token, top_logit = most_flipped_token(reference, list(zip(pool, paths, strict=True)), config.bias)
    floor = (
        2 * torch.finfo(net.lm_head.weight.dtype).eps * 2.0 ** math.floor(math.log2(max(top_logit, 1e-30)))
    )
    steps.say(f"benign studies done ({time.perf_counter() - t0:.0f} s); mutant token {token}")
    token_text = target.tokenizer.decode([token]) if target.tokenizer else str(token)
    arms, comparisons = [], []
    for name, (requirement, generate) in arm_decoders(target, token, token_text, config.bias).items():
        ar_and_arm = steps.bar(zip(pool, ar_runs, strict=True), name, len(pool))
        compared = compare_with_ar(generate, ar_and_arm, reference, stops, config.max_new_tokens)
        arm = GreedyArm(name, requirement)
        arm.diverging = sum(not pair.identical for _, pair in compared) / len(compared)
        arms.append(arm)
        comparisons.append(compared)
        steps.say(f"{name}: {arm.diverging:.1%} of generations diverge ({time.perf_counter() - t0:.0f} s)")
    run_replicates(arms, comparisons, studies, floor, config, steps)
    meta = {
        "model": target.path,
        "mutant_token": token,
        "mutant_token_text": token_text,
        "previous_rule_floor": floor,
        "ar_tokens": sum(map(len, paths)),
        "seconds": time.perf_counter() - t0,
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
    }
    return arms, meta


@dataclass
class Steps:
    """calibrate --greedy's progress bars and lines on `progress` (stderr), each under the command's name."""

    progress: Reporter

    def bar(self, iterable, desc: str, total: int | None = None, unit: str = "prompts"):
        return self.progress.bar(iterable, f"calibrate --greedy: {desc}", total=total, unit=unit)

    def say(self, line: str) -> None:
        self.progress.say(f"calibrate --greedy: {line}")


def arm_decoders(
    target: Target, token: int, token_text: str, bias: float
) -> dict[str, tuple[str, GenerateFn]]:
    """Each arm's name -> (its requirement, its decoder): ar-hf (A/A), Orthrus (lossless), and Orthrus with
    `bias` added to `token`'s logit in every verify pass (the mutant)."""
    orthrus = make_decoder("orthrus", target)
    rule = bias_rule(token, bias)

    def mutant(prompt_ids, max_new_tokens, params=GREEDY, **kwargs):
        return orthrus.generate(prompt_ids, max_new_tokens, params, **kwargs, rule=rule)

    return {
        "A/A: ar-hf vs ar": ("<= alpha", make_decoder("ar-hf", target).generate),
        "lossless: Orthrus vs ar": ("<= alpha", orthrus.generate),
        f"mutant: +{bias:g} on {token_text!r}'s logit in verify passes": (f">= {POWER_TARGET}", mutant),
    }


def compare_with_ar(
    generate: GenerateFn, ar_and_arm, reference: Reference, stops: list[int], max_new_tokens: int
) -> list[tuple[dict, PairComparison]]:
    """Each pool prompt decoded by `generate`, compared with AR's run of it (`ar_and_arm`: (prompt, AR's
    result) pairs) and re-synchronised after each divergence."""
    continue_fn = greedy_continuation(generate, stops)
    compared: list[tuple[dict, PairComparison]] = []
    for i, (prompt, run) in enumerate(ar_and_arm):
        out = generate(prompt, max_new_tokens, GREEDY, stop_token_ids=stops)
        pair = compare_pair(
            prompt,
            {"output_ids": list(run.tokens), "stop_reason": run.stop_reason},
            {
                "output_ids": list(out.tokens),
                "stop_reason": out.stop_reason,
                "accepted": list(out.accepted),
            },
            reference.logits,
            continue_fn=continue_fn,
            max_new_tokens=max_new_tokens,
        )
        compared.append(({"item_id": str(i), "sample": 0, "turn": 0}, pair))
    return compared


def run_replicates(
    arms: list[GreedyArm],
    comparisons: list[list[tuple[dict, PairComparison]]],
    studies: list[BenignStudy],
    floor: float,
    config: GreedyCalibrationConfig,
    steps: Steps,
) -> None:
    """Each replicate draws its prompts from the pool and reaches every arm's verdict on them as verify does,
    with the benign study of its first `tie_paths` prompts; the arms count what failed them and why."""
    draw = random.Random(config.seed + 1)
    for _ in steps.bar(range(config.replicates), "replicates", unit="replicates"):
        chosen = draw.sample(range(config.pool), config.prompts)
        study = BenignStudy.pooled([studies[i] for i in chosen[: config.tie_paths]])
        for arm, compared in zip(arms, comparisons, strict=True):
            subset = [compared[i] for i in chosen]
            verdict = greedy_verdict(subset, study, dtype=config.dtype, alpha=config.alpha, resynced=True)
            failed = verdict["verdict"] == "FAIL"
            arm.fails.append(failed)
            arm.by_margin += verdict["algorithmic_events"] > 0
            arm.by_combined += verdict["margins_combined_pvalue"] <= config.alpha / 3
            arm.by_rate += verdict["fisher_vs_ar_ar_pvalue"] <= config.alpha / 3
            arm.events += len(verdict["events"])
            arm.thresholds.append(verdict["near_tie_threshold"])
            arm.previous_rule_fails.append(previous_rule_fails(subset, study, floor, config.alpha))


def report(arms: list[GreedyArm], config: GreedyCalibrationConfig, meta: dict) -> tuple[str, dict]:
    """(markdown, JSON) of the greedy calibration table."""
    alpha = config.alpha
    lines = [
        f"# Calibration of the greedy verdict in {config.dtype}",
        "",
        f"Model: {Path(meta['model']).name} in {config.dtype}, float32 reference. A pool of {config.pool} tiny-suite "
        f"prompts, each decoded once per decoder (up to {config.max_new_tokens} new tokens; AR wrote "
        f"{meta['ar_tokens']} tokens in all); {config.replicates} replicates of {config.prompts} prompts drawn "
        f"from it (the GPU CI's run size), the benign study pooled from each replicate's first {config.tie_paths} "
        f"paths, α = {alpha}. Replicates share prompts, so the binomial CIs are narrower than the truth. "
        f"{meta['seconds']:.0f} s on {meta['machine']}.",
        "",
        "| arm | replicates | FAIL | rate | exact 95% CI | requirement | met | generations diverging "
        "| events / replicate | FAIL by largest margin / all margins / rate | median near-tie threshold "
        "| previous rule's rate |",
        "|---|---:|---:|---:|---|---|---|---:|---:|---|---:|---:|",
    ]
    for a in arms:
        lo, hi = a.ci95
        d = a.to_dict(alpha)
        lines.append(
            f"| {a.name} | {a.replicates} | {d['fail']} | {a.rate:.3f} | [{lo:.3f}, {hi:.3f}] | "
            f"rate {a.requirement.replace('alpha', str(alpha))} | {'yes' if a.met(alpha) else '**no**'} | "
            f"{a.diverging:.1%} | {a.events / max(a.replicates, 1):.2f} | {a.by_margin} / {a.by_combined} / {a.by_rate} | "
            f"{d['median_threshold']:.3f} | {d['previous_rule_rate']:.3f} |"
        )
    lines += [
        "",
        "Each divergence's float32 margin has a p-value: the chance that a benign flip's margin is as large, under "
        "the noise model of the two sides (forensics.NoiseModel: the errors of both sides' margins, fitted as a "
        "bivariate Student t on the benign perturbations). A run FAILs on any of three tests at α / 3: the "
        "largest margin (an algorithmic divergence: p <= α / 3 / divergences), all margins combined (Fisher's "
        "method), the divergence rate against the AR-vs-AR rate (Fisher exact). The previous rule called a divergence a "
        f"near-tie within max({meta['previous_rule_floor']:.3g}, the largest flip margin of the benign study) "
        "and tested the rate at α. The mutant's token is the one found within the bias of the float32 top in the "
        "most of the pool's AR paths: the frequent token the bias flips in the most generations.",
        "",
    ]
    data = {"config": asdict(config), "meta": meta, "arms": [a.to_dict(alpha) for a in arms]}
    return "\n".join(lines), data


def calibrate_greedy_main(
    model: str | None, out: str, config: GreedyCalibrationConfig, *, quiet: bool = False, device: str = "cpu"
) -> int:
    """Calibrate, write OUT.md and OUT.json, print the table; exit status 1 when a requirement is not met.
    Each step's progress goes to stderr, unless `quiet`."""
    progress = Reporter(enabled=not quiet)
    progress.say(f"calibrate --greedy: loading {model or 'the embedded tiny family'} ({config.dtype})")
    target = load_target(model, config.dtype, device)
    reference = Reference(load_target(model, "float32", device, "eager").model)
    arms, meta = calibrate_greedy(target, reference, pool_prompts(target, config), config, progress)
    markdown, data = report(arms, config, meta)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.with_suffix(".md").write_text(markdown)
    write_json(out_path.with_suffix(".json"), data)
    print(markdown)
    return 0 if all(a.met(config.alpha) for a in arms) else 1
