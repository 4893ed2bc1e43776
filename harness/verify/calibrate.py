"""`orthrus-bench calibrate`: the sampling verdict's own error rates, measured on CPU.

One replicate is one sampling verdict exactly as `verify` reaches it (harness/verify: T1 PIT, T2 G-tests
at a fixed context, T3 surprisal z, T4 two-sample tests against AR samples, Holm at alpha), on a synthetic run
of `prompts` prompts × `max_new_tokens` tokens per decoder, and T2 at verify's default size.

* A/A: AR against AR with different seeds. Its rejection rate over the replicates, with an exact binomial
  (Clopper-Pearson) 95% CI, must not be above alpha: the CI must reach down to alpha.
* Lossless: the correct Orthrus decoder against AR; the same requirement.
* Power: the Orthrus sampling decoder with one planted bug each (`mutants`); rejection rate >= 0.8.

Every arm also records the T3 surprisal z of each replicate. Its mean is the drift a bug causes at this run
size; since z grows as the square root of the tokens, it gives the tokens T3 alone would need for power 0.8
(`Arm.tokens_for_power`), which says how far out of reach a missed mutant is.

Bugs are planted through the decoder's arguments, never by patching orthrus_core: a wrong sampling setting
passed to it, or another acceptance rule (orthrus_core.sampling.AcceptanceRule) passed to the decode loop.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from harness.methods import make_decoder
from harness.methods.base import GenerateFn
from harness.methods.target import Target
from harness.progress import SILENT, Reporter
from harness.run.seeds import generation_seed
from orthrus_core.jsonfile import json_text, write_json
from orthrus_core.micro import micro_model
from orthrus_core.params import SamplingParams
from orthrus_core.sampling import EXACT, AcceptanceRule, probs, sample

from .config import CalibrationConfig
from .equivalence import surprisal_terms
from .fp32_reference import Reference
from .sampling_verdict import draw_fixed_context, fixed_context_tests, sampling_family, t2_context

POWER_TARGET = 0.8
# The sampling setting every replicate uses: plain temperature-1 sampling, no truncation.
PARAMS = SamplingParams(1.0)


# ------------------------------------------------------------------------------------------------ decoders


def decoder(
    target: Target,
    block_size: int | None,
    *,
    temperature_scale=1.0,
    forced_top_k=0,
    rule: AcceptanceRule = EXACT,
) -> GenerateFn:
    """The registry's Orthrus decoder on `target` as a GenerateFn, with a bug planted through its arguments:
    `temperature_scale` and `forced_top_k` make it sample with other settings than it is asked for (at a
    different temperature, or truncated when it should not be), `rule` accept by another acceptance rule."""
    orthrus = make_decoder("orthrus", target, block_size=block_size)

    def generate(prompt_ids, max_new_tokens, params, *, seed=None, stop_token_ids=None, on_tokens=None):
        planted = setting_params(params, temperature_scale, forced_top_k)
        return orthrus.generate(
            prompt_ids, max_new_tokens, planted, seed=seed, stop_token_ids=stop_token_ids, on_tokens=on_tokens,
            rule=rule,
        )  # fmt: skip

    return generate


# The bugs that are a wrong sampling setting: the decoder then samples exactly from another distribution,
# whose divergence from the right one bounds what any test of the output can see (`sampling_profile`).
SETTING_MUTANTS = {
    "temperature 1.05 instead of 1.0": {"temperature_scale": 1.05},
    # transformers' generate samples with top_k=50 unless told otherwise: a classic silent truncation.
    "top-k truncation (k=50 applied when off)": {"forced_top_k": 50},
}
# The bugs in the acceptance rule, passed to the decode loop in place of the exact one.
RULE_MUTANTS = {
    "residual drawn from p, not max(p - q, 0)": AcceptanceRule(residual=lambda p, q: p),
    "acceptance off by one position (p_{i+1})": AcceptanceRule(position_shift=1),
    "acceptance min(1, 1.1 p/q)": AcceptanceRule(ratio_scale=1.1),
}


def setting_params(asked: SamplingParams, temperature_scale=1.0, forced_top_k=0) -> SamplingParams:
    """What a setting mutant samples from where `asked` was asked for."""
    return SamplingParams(asked.temperature * temperature_scale, forced_top_k or asked.top_k, asked.top_p)


def mutants(target: Target, block_size: int | None) -> dict[str, GenerateFn]:
    """The five planted bugs of issue 7, each in the Orthrus sampling decoder."""
    return {
        **{name: decoder(target, block_size, **bug) for name, bug in SETTING_MUTANTS.items()},
        **{name: decoder(target, block_size, rule=rule) for name, rule in RULE_MUTANTS.items()},
    }


# ---------------------------------------------------------------------------------------------- replicates


@torch.inference_mode()
def ar_samples(
    model, prompt: list[int], rows: int, max_new_tokens: int, params: SamplingParams, stop_ids, generator
) -> list[list[int]]:
    """`rows` independent AR generations of one prompt at once: a batch of identical prompts, one forward per
    position for the rows still running, each token drawn from `params.probs` of the row's logits (argmax when
    greedy), each row ending with its first stop token. The same draws as generate_ar's, without its
    per-token overhead, which is what makes hundreds of A/A replicates affordable on a CPU. Finished rows
    leave the batch (and the cache), since a few long samples would otherwise keep every row running."""
    cache = model.new_cache(len(prompt) + max_new_tokens)
    logits = model(torch.tensor([prompt]), 0, cache)[:, -1].expand(rows, -1)
    cache.k, cache.v = (
        cache.k.expand(-1, rows, -1, -1, -1).clone(),
        cache.v.expand(-1, rows, -1, -1, -1).clone(),
    )
    stop = torch.tensor(sorted(stop_ids), dtype=torch.long)
    samples: list[list[int]] = [[] for _ in range(rows)]
    running = torch.arange(rows)
    for t in range(max_new_tokens):
        token = logits.argmax(-1) if params.greedy else sample(probs(params, logits), generator)
        for row, x in zip(running.tolist(), token.tolist(), strict=True):
            samples[row].append(x)
        going = ~torch.isin(token, stop)
        if not bool(going.any()) or t + 1 == max_new_tokens:
            break
        if not bool(going.all()):
            running, token = running[going], token[going]
            cache.k, cache.v = cache.k[:, going], cache.v[:, going]
        logits = model(token[:, None], len(prompt) + t, cache)[:, -1]
    return samples


def sample_records(
    generate: GenerateFn, prompts, config: CalibrationConfig, stop_ids, replicate: int
) -> list[dict]:
    """A synthetic run of one decoder: one record per prompt, seeded as the runner seeds sample `replicate` of
    a run (harness.run.seeds), so the same seeds for every decoder."""
    records = []
    for i, prompt in enumerate(prompts):
        r = generate(
            prompt,
            config.max_new_tokens,
            PARAMS,
            seed=generation_seed(config.seed, f"calibration/{i}", replicate, 0),
            stop_token_ids=stop_ids,
        )
        records.append(
            {"prompt_ids": list(prompt), "output_ids": list(r.tokens), "acceptance_trace": r.acceptance_trace}
        )
    return records


def verdict_of(records, draws, reference_records, reference, t2_context, config, seed) -> dict:
    """One replicate's verdict: a decoder's synthetic run and its T2 draws, against AR records."""
    t2 = fixed_context_tests(draws, reference, t2_context, PARAMS, depth=config.t2_depth, alpha=config.alpha)
    family, rejected = sampling_family(
        reference, records, reference_records, PARAMS, alpha=config.alpha, seed=seed, t2=t2
    )
    surprisal = next(t for t in family if t.name == "T3 surprisal z")
    return {
        "reject": rejected,
        "tokens": sum(len(r["output_ids"]) for r in records),
        "rejected_by": [t.name for t in family if t.reject],
        "tests": len(family),
        "t3_z": surprisal.statistic,
    }


def exact_ci95(rejections: int, replicates: int) -> tuple[float, float]:
    """The exact binomial (Clopper-Pearson) 95% CI of a rejection rate."""
    ci = stats.binomtest(rejections, replicates).proportion_ci(0.95, method="exact")
    return float(ci.low), float(ci.high)


def requirement_met(requirement: str, rate: float, ci95: tuple[float, float], alpha: float) -> bool:
    """An arm's requirement: "<= alpha", the rate not significantly above alpha (its CI reaches down to
    alpha); ">= 0.8", the estimated power at least POWER_TARGET."""
    if requirement.startswith("<="):
        return ci95[0] <= alpha
    return rate >= POWER_TARGET


@dataclass
class Arm:
    name: str
    requirement: str  # "<= alpha" or ">= 0.8"
    replicates: int = 0
    rejections: int = 0
    tokens: int = 0
    tests: int = 0
    rejected_by: dict[str, int] = field(default_factory=dict)
    t3_z: list[float] = field(default_factory=list)

    def add(self, outcome: dict) -> None:
        self.replicates += 1
        self.rejections += outcome["reject"]
        self.tokens += outcome["tokens"]
        self.tests = max(self.tests, outcome["tests"])
        self.t3_z.append(outcome["t3_z"])
        for name in outcome["rejected_by"]:
            self.rejected_by[name] = self.rejected_by.get(name, 0) + 1

    @property
    def rate(self) -> float:
        return self.rejections / self.replicates if self.replicates else math.nan

    @property
    def ci95(self) -> tuple[float, float]:
        return exact_ci95(self.rejections, self.replicates)

    @property
    def t3_drift(self) -> tuple[float, float]:
        """Mean T3 z over the replicates and its standard error."""
        z = np.asarray(self.t3_z, dtype=float)
        z = z[np.isfinite(z)]
        if len(z) < 2:
            return (float(z.mean()) if len(z) else math.nan), math.nan
        return float(z.mean()), float(z.std(ddof=1) / math.sqrt(len(z)))

    def tokens_for_power(self, alpha: float) -> float:
        """The tokens per replicate at which T3 alone rejects with probability 0.8 at level alpha / tests
        (Bonferroni, a bound on Holm's first step), if the drift per token stays what was measured: z
        grows as sqrt(tokens). Infinite when no drift was seen (|mean z| within two standard errors)."""
        mean, se = self.t3_drift
        if (
            not self.replicates
            or not math.isfinite(mean)
            or abs(mean) <= 2 * (se if math.isfinite(se) else 0)
        ):
            return math.inf
        needed = stats.norm.isf(alpha / (2 * max(self.tests, 1))) + stats.norm.ppf(POWER_TARGET)
        return self.tokens / self.replicates * (needed / abs(mean)) ** 2

    def met(self, alpha: float) -> bool:
        return requirement_met(self.requirement, self.rate, self.ci95, alpha)

    def to_dict(self, alpha: float) -> dict:
        """The arm's row of the calibration table (its per-replicate z values go under the report's
        "replicate_t3_z")."""
        z = np.asarray(self.t3_z, dtype=float)
        return {
            **{k: v for k, v in asdict(self).items() if k != "t3_z"},
            "t3_z_variance": float(z[np.isfinite(z)].var(ddof=1)) if np.isfinite(z).sum() > 1 else None,
            "rate": self.rate,
            "ci95": self.ci95,
            "met": self.met(alpha),
            "tokens_per_replicate": self.tokens / max(self.replicates, 1),
            "t3_drift": self.t3_drift,
            "t3_tokens_for_power": self.tokens_for_power(alpha),
        }


def sampling_profile(
    model, prompts, config: CalibrationConfig, stop_ids, progress: Reporter = SILENT
) -> dict:
    """What there is to test, along one AR sample per prompt: the next-token entropy (a bug that reshapes a
    distribution moves a near-deterministic one by almost nothing), and for each setting mutant its KL
    divergence from the right distribution per token. By the data-processing inequality, a test of level
    alpha with power 0.8 against a bug needs n * KL >= d(0.8 || alpha) (binary KL), whatever it computes
    from the output tokens: `output_test_tokens` is that lower bound on the tokens per replicate. (T5 reads
    the acceptance trace as well, so it is not bound by it.)"""
    reference, generator = Reference(model), torch.Generator().manual_seed(config.seed + 1)
    bugs = {name: setting_params(PARAMS, **bug) for name, bug in SETTING_MUTANTS.items()}
    entropy, kl = [], {name: [] for name in bugs}
    for prompt in progress.bar(
        prompts, "calibrate: sampling profile (one AR sample per prompt)", unit="prompts"
    ):
        tokens = ar_samples(model, prompt, 1, config.max_new_tokens, PARAMS, stop_ids, generator)[0]
        logits = reference.logits(prompt, tokens)
        p = probs(PARAMS, logits).double()
        entropy += surprisal_terms(p, torch.tensor(tokens)).entropy.tolist()
        for name, params in bugs.items():
            p_bug = probs(params, logits).double()
            kl[name] += torch.where(p_bug > 0, p_bug * (p_bug / p).log(), 0.0).sum(-1).tolist()
    entropy = np.asarray(entropy)
    needed = POWER_TARGET * math.log(POWER_TARGET / config.alpha) + (1 - POWER_TARGET) * math.log(
        (1 - POWER_TARGET) / (1 - config.alpha)
    )
    kl_mean = {name: float(np.mean(v)) for name, v in kl.items()}
    return {
        "tokens": len(entropy),
        "mean_entropy_nats": float(entropy.mean()),
        "share_below_0.1_nat": float((entropy < 0.1).mean()),
        "kl_per_token": kl_mean,
        "output_test_tokens": {name: needed / v if v > 0 else math.inf for name, v in kl_mean.items()},
    }


def calibration_prompts(model, tokenizer, n: int, seed: int) -> list[list[int]]:
    """Rendered tiny-suite prompts when the model has a tokenizer, else random token ids. The suites come in
    the order of their answers' length (math, code, chat), since the tests' power grows with the tokens."""
    if tokenizer is not None:
        from harness.suites.suite import load_suite

        prompts = []
        for name in ("tiny-math", "tiny-code", "tiny-chat"):
            suite = load_suite(name)
            prompts += [suite.render(tokenizer, item, []) for item in suite.items(tokenizer)[:n]]
        return prompts[:n] if len(prompts) >= n else prompts
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    return [torch.randint(4, vocab - 1, (int(torch.randint(4, 25, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]  # fmt: skip


def every_arm(target: Target, config: CalibrationConfig) -> list[tuple[Arm, GenerateFn | None, int]]:
    """(arm, its decoder or None for A/A, its replicates) of every arm, A/A, lossless, then the mutants; seeds
    and AR rows do not depend on which arms run, so an arm run alone gives the replicates it gives in a full
    calibration."""
    every: list[tuple[Arm, GenerateFn | None, int]] = [
        (Arm("A/A: AR vs AR (different seeds)", "<= alpha"), None, config.replicates),
        (
            Arm("lossless: Orthrus vs AR", "<= alpha"),
            decoder(target, config.block_size),
            config.lossless_replicates,
        ),
    ]
    for name, mutant in mutants(target, config.block_size).items():
        every.append((Arm(f"mutant: {name}", f">= {POWER_TARGET}"), mutant, config.power_replicates))
    return every


def restore(resume: dict, arms: list[Arm], generator: torch.Generator) -> tuple[int, float]:
    """The arms and the generator as a checkpoint left them -> (replicates done, seconds spent)."""
    for arm, saved in zip(arms, resume["arms"], strict=True):
        # json_safe wrote NaN as null and inf as "inf"
        arm.__dict__.update(saved, t3_z=[math.nan if z is None else float(z) for z in saved["t3_z"]])
    generator.set_state(torch.tensor(resume["generator_state"], dtype=torch.uint8))
    return resume["replicates_done"], resume["seconds"]


def short_name(kind: str, k: int) -> str:
    """Arm `k`'s name in the progress bar: A/A, lossless, or mutant numbered as the table lists them."""
    return {"aa": "A/A", "lossless": "lossless", "mutants": f"mutant {k - 1}"}[kind]


def calibrate(
    target: Target,
    prompts: list[list[int]],
    config: CalibrationConfig,
    *,
    stop_ids: list[int],
    progress: Reporter = SILENT,
    checkpoint: Path | None = None,
    resume: dict | None = None,
) -> list[Arm]:
    """Run every arm. Replicate r of every arm is tested against the same AR reference records (row r of
    the batched AR samples); the A/A arm's own AR samples are further rows of the same batches.

    After each replicate the arms and the generator's state go to `checkpoint`; `resume` (such a
    checkpoint) continues from there with the same outcomes as an uninterrupted calibration. `progress`
    shows the AR samples being drawn, then the replicates with each arm's rejections so far."""
    t_start = time.perf_counter()
    model = target.model
    reference = Reference(model)
    every = every_arm(target, config)
    kinds = ["aa", "lossless"] + ["mutants"] * (len(every) - 2)
    total = max(n for _, _, n in every)
    generator = torch.Generator().manual_seed(config.seed)
    rows = [
        ar_samples(
            model, p, total + config.replicates + 1, config.max_new_tokens, PARAMS, stop_ids, generator
        )
        for p in progress.bar(
            prompts, f"calibrate: AR samples ({total + config.replicates + 1} per prompt)", unit="prompts"
        )
    ]
    # The T2 context comes from AR paths no replicate uses (rows past the last A/A row).
    context = t2_context(
        reference, [{"prompt_ids": p, "output_ids": rows[i][-1]} for i, p in enumerate(prompts)], PARAMS
    )
    arms = [(k, arm) for k, (arm, _, _) in enumerate(every) if kinds[k] in config.arms]
    replicates = max(every[k][2] for k, _ in arms)
    done, seconds_before = restore(resume, [arm for _, arm in arms], generator) if resume else (0, 0.0)
    names = ", ".join(short_name(kinds[k], k) for k, _ in arms)
    bar = progress.bar(
        desc=f"calibrate: replicates (rejections: {names})", total=replicates, initial=done, unit="replicates"
    )
    for r in range(done, replicates):
        reference_records = [{"prompt_ids": p, "output_ids": rows[i][r]} for i, p in enumerate(prompts)]
        for k, arm in arms:
            _, generate, n = every[k]
            if r >= n:
                continue
            arm_seed = generation_seed(config.seed, f"calibration/arm {k}", r, 0)  # T2 draws, T1's V
            if generate is None:  # A/A: AR samples against AR samples
                records = [{"prompt_ids": p, "output_ids": rows[i][total + r]} for i, p in enumerate(prompts)]
                draws = [
                    tuple(x)
                    for x in ar_samples(
                        model, context, config.t2_samples, config.t2_depth, PARAMS, stop_ids, generator
                    )
                ]
            else:
                records, draws = decoder_samples(generate, prompts, context, config, stop_ids, r, arm_seed)
            arm.add(verdict_of(records, draws, reference_records, reference, context, config, arm_seed))
        if checkpoint:
            seconds = seconds_before + time.perf_counter() - t_start
            save_checkpoint(checkpoint, config, r + 1, seconds, generator, [arm for _, arm in arms])
        bar.set_postfix_str(", ".join(f"{a.rejections}/{a.replicates}" for _, a in arms))
        bar.update(1)
    bar.close()
    return [arm for _, arm in arms]


def decoder_samples(
    generate: GenerateFn,
    prompts: list[list[int]],
    context: list[int],
    config: CalibrationConfig,
    stop_ids: list[int],
    replicate: int,
    seed: int,
) -> tuple[list[dict], list[tuple]]:
    """A decoder's samples for one replicate: (its records of the prompts, its T2 draws at the fixed context)."""
    records = sample_records(generate, prompts, config, stop_ids, replicate)
    draws = draw_fixed_context(
        generate,
        context,
        PARAMS,
        samples=config.t2_samples,
        depth=config.t2_depth,
        stop_token_ids=stop_ids,
        seed=seed,
    )
    return records, draws


def save_checkpoint(
    path: Path,
    config: CalibrationConfig,
    replicates_done: int,
    seconds: float,
    generator: torch.Generator,
    arms: list[Arm],
) -> None:
    """The calibration so far (its settings, the replicates done, the seconds spent, the generator's state and
    the arms) into `path`, for load_checkpoint and `resume`."""
    state = {
        "config": asdict(config),
        "replicates_done": replicates_done,
        "seconds": seconds,
        "generator_state": generator.get_state().tolist(),
        "arms": [asdict(arm) for arm in arms],
    }
    write_json(path, state)


def load_checkpoint(path: Path, config: CalibrationConfig) -> dict:
    """A calibration's checkpoint, if it was written with these settings."""
    try:
        state = json.loads(path.read_text())
        saved = state["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a calibration checkpoint ({e}): delete it to start over") from e
    settings = json.loads(json_text(asdict(config)))
    if saved != settings:
        changed = sorted(k for k in settings if saved.get(k) != settings[k])
        raise ValueError(
            f"{path} was written with other settings ({', '.join(changed)} differ): rerun with the settings "
            f"it holds, or delete it to start over"
        )
    return state


# ---------------------------------------------------------------------------------------------- the report


def report(arms: list[Arm], config: CalibrationConfig, meta: dict) -> tuple[str, dict]:
    """(markdown, JSON) of the calibration table."""
    alpha, profile = config.alpha, meta["profile"]
    lines = [
        "# Calibration of the sampling verdict",
        "",
        f"Model: {meta['model']}. Sampling at temperature {PARAMS.temperature:g}, no top-k/top-p. "
        f"Per replicate and decoder: {config.prompts} prompts × up to {config.max_new_tokens} new tokens "
        f"(T1, T3, T4), and T2 with {config.t2_samples} draws × {config.t2_depth} positions at one fixed context. "
        f"Family: T1 KS+CvM, T2 per position, T3, T4 KS+AD+length, T5 acceptance audit (decoders with an "
        f"acceptance trace), Holm at α = {alpha}. "
        f"Block size {meta['block_size']}; {meta['seconds']:.0f} s on {meta['machine']}. ",
        f"What there is to test (along one AR sample per prompt, {profile['tokens']} tokens): the mean "
        f"next-token entropy is {profile['mean_entropy_nats']:.3f} nats, and "
        f"{profile['share_below_0.1_nat']:.0%} of tokens have less than 0.1 nat. "
        + " ".join(
            f"{name}: KL {profile['kl_per_token'][name]:.2g} nats per token, so no test of the output tokens "
            f"reaches power 0.8 at α with fewer than {profile['output_test_tokens'][name]:,.0f} tokens."
            for name in SETTING_MUTANTS
        ),
        "",
        "| arm | replicates | rejections | rate | exact 95% CI | requirement | met | mean tokens/replicate "
        "| T3 mean z ± se | T3 tokens for power 0.8 | rejected by (count) |",
        "|---|---:|---:|---:|---|---|---|---:|---:|---:|---|",
    ]
    for a in arms:
        lo, hi = a.ci95
        by = ", ".join(f"{k} {v}" for k, v in sorted(a.rejected_by.items(), key=lambda kv: -kv[1])) or "–"
        mean_z, se_z = a.t3_drift
        needed = a.tokens_for_power(alpha)
        lines.append(
            f"| {a.name} | {a.replicates} | {a.rejections} | {a.rate:.3f} | [{lo:.3f}, {hi:.3f}] | "
            f"rate {a.requirement.replace('alpha', str(alpha))} | {'yes' if a.met(alpha) else '**no**'} | "
            f"{a.tokens / max(a.replicates, 1):.0f} | {mean_z:+.2f} ± {se_z:.2f} | "
            f"{'no drift seen' if math.isinf(needed) else f'{needed:,.0f}'} | {by} |"
        )
    lines += [
        "",
        "A/A and lossless arms meet the requirement when the CI reaches down to α (the rate is not "
        "significantly above α); mutant arms when the estimated power is at least 0.8. "
        '"Rejected by" counts the replicates in which each test rejected after the Holm adjustment. '
        "T3 mean z is the drift a bug puts into the surprisal test at this run size (about 0 for an exact "
        "sampler; its standard error is about 1/sqrt(replicates)); the tokens for power 0.8 extrapolate it "
        "(z grows as sqrt(tokens)) to the run size at which T3 alone would catch the bug at α over the "
        "family's size, Bonferroni. It is the measure of how far out of reach a missed mutant is.",
        "",
    ]
    data = {
        "config": asdict(config),
        "meta": meta,
        "arms": [a.to_dict(alpha) for a in arms],
        "replicate_t3_z": {a.name: a.t3_z for a in arms},
    }
    return "\n".join(lines), data


def calibrate_main(
    model: str | None = None,
    out: str = "reports/calibration",
    *,
    micro: bool = False,
    config: CalibrationConfig | None = None,
    quiet: bool = False,
    resume: bool = False,
) -> int:
    """Calibrate, write OUT.md and OUT.json, print the table; exit status 1 when a requirement is not met.
    Progress is checkpointed to OUT.partial.json after each replicate (removed at the end); `resume`
    continues from it. Without `resume` an existing checkpoint is an error, so that no work is lost. Each
    step's progress goes to stderr, unless `quiet`."""
    from orthrus_core.generation import stop_ids as eos_ids

    config = config or CalibrationConfig()
    out_path = Path(out)
    checkpoint = out_path.with_suffix(".partial.json")
    if checkpoint.exists() and not resume:
        raise ValueError(
            f"{checkpoint} holds an interrupted calibration: pass --resume to continue it, or delete it to "
            f"start over"
        )
    torch.manual_seed(config.seed)
    progress = Reporter(enabled=not quiet)
    target = calibrated_target(model, micro, config.seed, progress)
    net, tokenizer, name = target.model, target.tokenizer, target.path
    if config.block_size is None:
        config.block_size = net.block_size
    if config.prompts is None:
        config.prompts = 32 if tokenizer is None else 200
    prompts = calibration_prompts(net, tokenizer, config.prompts, config.seed)
    stop_ids = eos_ids(net)
    state = load_checkpoint(checkpoint, config) if checkpoint.exists() else None
    t0 = time.perf_counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    arms = calibrate(
        target, prompts, config, stop_ids=stop_ids, progress=progress, checkpoint=checkpoint, resume=state
    )
    meta = {
        "model": name,
        "block_size": config.block_size,
        "prompts": len(prompts),
        "seconds": (state["seconds"] if state else 0.0) + time.perf_counter() - t0,
        "profile": sampling_profile(net, prompts, config, stop_ids, progress),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
    }
    markdown, data = report(arms, config, meta)
    out_path.with_suffix(".md").write_text(markdown)
    write_json(out_path.with_suffix(".json"), data)
    checkpoint.unlink()
    print(markdown)
    return 0 if all(a.met(config.alpha) for a in arms) else 1


def calibrated_target(model: str | None, micro: bool, seed: int, progress: Reporter) -> Target:
    """`model`, else the embedded tiny family where it is there, else (or with `micro`) the random micro model
    made from `seed`."""
    from harness.methods.target import load_target
    from harness.paths import DEFAULT_MODEL

    if not micro and (model or (DEFAULT_MODEL / "config.json").is_file()):
        progress.say(f"calibrate: loading {model or DEFAULT_MODEL}")
        return load_target(model)
    return Target.of(micro_model(seed), "random micro model (1 layer, vocab 320, near-AR draft view)")
