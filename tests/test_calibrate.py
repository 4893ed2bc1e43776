"""`calibrate`: the planted-bug harness is faithful, the batched AR sampler is the AR decoder, and a reduced
calibration (the CI version of `orthrus-bench calibrate`) meets its requirements and writes its table."""

import json
import math
from dataclasses import fields
from unittest import mock

import pytest
import torch

import harness.verify.calibrate as calibrate_module
from harness.methods import make_decoder
from harness.methods.target import Target
from harness.verify.calibrate import (
    PARAMS,
    RULE_MUTANTS,
    Arm,
    ar_samples,
    calibrate_main,
    calibration_prompts,
    decoder,
    sampling_profile,
)
from harness.verify.config import CalibrationConfig
from harness.verify.fp32_reference import Reference
from orthrus_core.engine import Engine
from orthrus_core.loop import generate
from orthrus_core.micro import micro_model
from orthrus_core.params import SamplingParams
from orthrus_core.sampling import EXACT, AcceptanceRule, probs


def test_the_planted_bugs_are_arguments_of_the_exact_rule():
    """A rule mutant is the exact rule with one argument changed (nothing copied, nothing patched), and the
    decoder it goes into is the registry's Orthrus in the decode loop."""
    exact = {f.name: getattr(EXACT, f.name) for f in fields(AcceptanceRule)}
    for name, rule in RULE_MUTANTS.items():
        changed = [k for k, v in exact.items() if getattr(rule, k) != v]
        assert len(changed) == 1, name
    target = Target.of(micro_model(), "micro")
    prompt, seed, params = [5, 9, 13, 2], 3, SamplingParams(1.0)
    orthrus = make_decoder("orthrus", target, block_size=4)
    exact_run = decoder(target, 4)(prompt, 48, params, seed=seed, stop_token_ids=[])
    assert exact_run.tokens == orthrus.generate(prompt, 48, params, seed=seed, stop_token_ids=[]).tokens
    planted = [
        decoder(target, 4, rule=rule)(prompt, 48, params, seed=seed, stop_token_ids=[])
        for rule in RULE_MUTANTS.values()
    ]
    assert all(p.tokens != exact_run.tokens for p in planted)


def test_mutations_change_the_acceptance():
    q = torch.tensor([[0.5, 0.5]])
    p = torch.tensor([[0.46, 0.54], [0.9, 0.1]])
    drafts = torch.tensor([0])
    # p/q = 0.92: the real rule rejects 8% of the time; 1.1 p/q >= 1 always accepts.
    rejected = sum(
        int(EXACT.chain(drafts, q, p, torch.Generator().manual_seed(s))[0]) == 0 for s in range(500)
    )
    inflated = RULE_MUTANTS["acceptance min(1, 1.1 p/q)"]
    assert 15 < rejected < 70
    assert all(
        int(inflated.chain(drafts, q, p, torch.Generator().manual_seed(s))[0]) == 1 for s in range(200)
    )
    # Off by one: judged against p_1 (0.9 / 0.5 >= 1), so always accepted too.
    shifted = RULE_MUTANTS["acceptance off by one position (p_{i+1})"]
    assert all(int(shifted.chain(drafts, q, p, torch.Generator().manual_seed(s))[0]) == 1 for s in range(200))
    # Residual from p: after a rejection of token 0 the correction may be token 0 again, which max(p - q, 0)
    # (zero at token 0 here) never gives.
    from_p = RULE_MUTANTS["residual drawn from p, not max(p - q, 0)"]
    corrections = [from_p.chain(drafts, q, p, torch.Generator().manual_seed(s)) for s in range(500)]
    assert any(int(n) == 0 and int(t) == 0 for n, t in corrections)
    exact = [EXACT.chain(drafts, q, p, torch.Generator().manual_seed(s)) for s in range(500)]
    assert not any(int(n) == 0 and int(t) == 0 for n, t in exact)


def test_batched_ar_samples_are_the_ar_decoder():
    model = micro_model()
    prompt = [5, 9, 13, 2, 44]
    greedy = generate(Engine(model), None, prompt, 20, stop_token_ids=[]).tokens
    rows = ar_samples(model, prompt, 3, 20, SamplingParams(0.0), [], torch.Generator())
    assert rows == [greedy] * 3
    # Rows end after their first stop token, as the AR decoder's outputs do.
    stop = greedy[7]
    cut = ar_samples(model, prompt, 2, 20, SamplingParams(0.0), [stop], torch.Generator())
    assert cut == [greedy[: greedy.index(stop) + 1]] * 2


def reduced(**overrides) -> CalibrationConfig:
    fields = dict(
        replicates=10,
        lossless_replicates=3,
        power_replicates=1,
        prompts=6,
        max_new_tokens=64,
        t2_samples=60,
        t2_depth=2,
        block_size=4,
    )
    return CalibrationConfig(**{**fields, **overrides})


def test_reduced_calibration(tmp_path):
    """CI-sized: every arm runs; the A/A and lossless arms stay at alpha, the gross mutants are caught."""
    out = tmp_path / "calibration"
    calibrate_main(out=str(out), micro=True, config=reduced(), quiet=True)
    data = json.loads(out.with_suffix(".json").read_text())
    arms = {a["name"]: a for a in data["arms"]}
    assert len(arms) == 7
    aa = arms["A/A: AR vs AR (different seeds)"]
    assert aa["replicates"] == 10 and aa["rejections"] <= 1 and aa["met"]
    lossless = arms["lossless: Orthrus vs AR"]
    assert lossless["replicates"] == 3 and lossless["rejections"] == 0
    topk = arms["mutant: top-k truncation (k=50 applied when off)"]
    assert topk["rejections"] == 1 and topk["met"]
    for arm in arms.values():
        assert arm["tokens_per_replicate"] > 200 and arm["tests"] >= 6
    table = out.with_suffix(".md").read_text()
    assert "| A/A: AR vs AR (different seeds) | 10 |" in table
    assert "random micro model" in table


def test_an_arm_run_alone_gives_its_replicates_in_the_full_calibration(tmp_path):
    """--arms splits a calibration across processes: same AR references, same seeds, same outcomes."""
    config = reduced(replicates=4, lossless_replicates=2, prompts=3, max_new_tokens=32, t2_samples=30)
    calibrate_main(out=str(tmp_path / "all"), micro=True, config=config, quiet=True)
    config.arms = ("lossless",)
    calibrate_main(out=str(tmp_path / "one"), micro=True, config=config, quiet=True)
    full = json.loads((tmp_path / "all.json").read_text())
    alone = json.loads((tmp_path / "one.json").read_text())
    name = "lossless: Orthrus vs AR"
    assert [a["name"] for a in alone["arms"]] == [name]
    assert alone["replicate_t3_z"][name] == full["replicate_t3_z"][name]
    assert alone["arms"][0]["tokens"] == next(a for a in full["arms"] if a["name"] == name)["tokens"]


def test_t3_drift_extrapolates_the_tokens_a_mutant_needs():
    """z grows as sqrt(tokens): a drift of mean z 1 at 1000 tokens needs (z_crit + z_0.8)^2 x 1000 tokens,
    z_crit at alpha / (2 x tests)."""
    arm = Arm("mutant", ">= 0.8", replicates=4, tokens=4000, tests=10, t3_z=[0.9, 1.1, 1.0, 1.0])
    needed = arm.tokens_for_power(0.01)
    assert arm.t3_drift[0] == 1.0
    assert abs(needed - 1000 * (3.2905 + 0.8416) ** 2) < 50
    # No drift beyond two standard errors: nothing to extrapolate.
    exact = Arm("lossless", "<= alpha", replicates=4, tokens=4000, tests=10, t3_z=[0.5, -0.7, 0.2, -0.1])
    assert exact.tokens_for_power(0.01) == float("inf")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--replicates", "0"], "replicates must be >= 1"),
        (["--alpha", "1.5"], "alpha must be in"),
        (["--block-size", "1"], "block_size must be >= 2"),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, capsys, argv, message):
    from harness.cli import main

    out = tmp_path / "calibration"
    assert main(["calibrate", "--micro", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.with_suffix(".json").exists()


def test_the_sampling_profile_bounds_what_any_output_test_can_see():
    """The top-k bug's KL per token is -log(top-50 mass); the bound is d(0.8 || alpha) / KL."""
    model = micro_model(0)
    config = CalibrationConfig(prompts=3, max_new_tokens=40)
    prompts = calibration_prompts(model, None, 3, 0)
    profile = sampling_profile(model, prompts, config, [])
    assert profile["tokens"] == 120 and 2 < profile["mean_entropy_nats"] < math.log(320)
    # Recompute the top-k bug's divergence from the same AR samples (same generator seed as the profile).
    generator, reference, kl = torch.Generator().manual_seed(config.seed + 1), Reference(model), []
    for prompt in prompts:
        tokens = ar_samples(model, prompt, 1, 40, PARAMS, [], generator)[0]
        p = probs(PARAMS, reference.logits(prompt, tokens)).double()
        kl += (-p.topk(50, -1).values.sum(-1).log()).tolist()
    name = "top-k truncation (k=50 applied when off)"
    assert profile["kl_per_token"][name] == pytest.approx(sum(kl) / len(kl), rel=1e-6)
    binary_kl = 0.8 * math.log(0.8 / 0.01) + 0.2 * math.log(0.2 / 0.99)
    assert profile["output_test_tokens"][name] == pytest.approx(binary_kl / profile["kl_per_token"][name])
    # Sharper and flatter are both divergences: the temperature bug's KL is positive and smaller than top-k's.
    assert 0 < profile["kl_per_token"]["temperature 1.05 instead of 1.0"] < profile["kl_per_token"][name]


def test_an_interrupted_calibration_resumes_to_the_same_table(tmp_path):
    """Killed in its third replicate, a calibration continues from its checkpoint to the outcomes of an
    uninterrupted one (the A/A arm's T2 draws depend on the generator's state, which the checkpoint holds)."""
    settings = dict(replicates=4, lossless_replicates=2, prompts=3, max_new_tokens=32, t2_samples=30)
    calibrate_main(out=str(tmp_path / "whole"), micro=True, config=reduced(**settings), quiet=True)
    out = tmp_path / "resumed"
    real, calls = calibrate_module.verdict_of, []

    def dies_in_the_third_replicate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7 + 2 + 1:  # replicate 0 has 7 arms, replicate 1 two, replicate 2 only A/A
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with mock.patch.object(calibrate_module, "verdict_of", dies_in_the_third_replicate):
        with pytest.raises(KeyboardInterrupt):
            calibrate_main(out=str(out), micro=True, config=reduced(**settings), quiet=True)
    checkpoint = out.with_suffix(".partial.json")
    assert (
        json.loads(checkpoint.read_text())["replicates_done"] == 2 and not out.with_suffix(".json").exists()
    )
    # Not resuming would throw the work away: refused. Resuming with other settings: refused.
    with pytest.raises(ValueError, match="pass --resume"):
        calibrate_main(out=str(out), micro=True, config=reduced(**settings), quiet=True)
    with pytest.raises(ValueError, match="replicates differ"):
        calibrate_main(out=str(out), micro=True, config=reduced(**{**settings, "replicates": 5}), resume=True)
    calibrate_main(out=str(out), micro=True, config=reduced(**settings), quiet=True, resume=True)
    whole = json.loads((tmp_path / "whole.json").read_text())
    resumed = json.loads(out.with_suffix(".json").read_text())
    assert resumed["arms"] == whole["arms"] and resumed["replicate_t3_z"] == whole["replicate_t3_z"]
    assert not checkpoint.exists()
    checkpoint.write_text("{")  # a truncated file is named as such, not a traceback
    with pytest.raises(ValueError, match="not a calibration checkpoint"):
        calibrate_main(out=str(out), micro=True, config=reduced(**settings), quiet=True, resume=True)
