"""`calibrate --greedy`: the greedy verdict's error rates below float32, measured the way verify reaches its
verdicts; a planted verify-pass logit bias is caught where the previous near-tie rule called it numerics."""

import copy
import json

import pytest
import torch

from harness.methods import make_decoder
from harness.methods.target import Target
from harness.verify.calibrate_greedy import (
    bias_rule,
    calibrate_greedy,
    most_flipped_token,
    pool_prompts,
    previous_rule_fails,
    report,
)
from harness.verify.config import GreedyCalibrationConfig
from harness.verify.forensics import ALGORITHMIC, BenignStudy, DivergenceEvent, PairComparison
from harness.verify.fp32_reference import Reference
from orthrus_core.micro import micro_model
from orthrus_core.params import GREEDY


def test_the_bias_mutant_changes_verify_passes_only():
    """The planted bug is an argument of the exact rule: the prefill's token is untouched, and the verify
    passes emit the biased token where it was within the bias of the top."""
    target = Target.of(micro_model(), "micro")
    orthrus = make_decoder("orthrus", target, block_size=4)
    prompt = [5, 9, 13, 2]
    exact = orthrus.generate(prompt, 32, GREEDY, stop_token_ids=[]).tokens
    token = exact[1]  # a token the model emits: biasing it hugely makes every later token that one
    biased = orthrus.generate(prompt, 32, GREEDY, stop_token_ids=[], rule=bias_rule(token, 100.0)).tokens
    assert biased[0] == exact[0] and set(biased[1:]) == {token}


class FixedReference:
    """A float32 reference whose logits along each path are given."""

    def __init__(self, rows: dict[int, list[list[float]]]):
        self.rows = rows

    def logits(self, prompt, tokens):
        return torch.tensor(self.rows[prompt[0]], dtype=torch.float32)[: len(tokens)]


def test_the_mutant_token_is_the_one_within_the_bias_in_the_most_generations():
    """Token 1 is the close runner-up most often, but always 0.5 below the top: a 0.3 bias flips nothing there.
    Token 2 comes within 0.3 of the top once in each of three paths (one path twice: it counts once)."""
    rows = {
        0: [[5.0, 4.5, 4.8, 0.0], [5.0, 4.5, 0.0, 0.0], [5.0, 4.5, 4.85, 0.0]],
        1: [[5.0, 4.5, 4.75, 0.0], [5.0, 4.5, 0.0, 0.0]],
        2: [[0.0, 4.5, 4.8, 5.0], [5.0, 4.5, 0.0, 0.0]],
        3: [[5.0, 4.5, 0.0, 0.0]],
    }
    paths = [([p], [7] * len(r)) for p, r in rows.items()]
    token, top = most_flipped_token(FixedReference(rows), paths, bias=0.3)
    assert token == 2 and top == 5.0
    assert most_flipped_token(FixedReference(rows), paths, bias=0.6)[0] == 1  # 0.5 below: now within reach
    with pytest.raises(ValueError, match="raise --bias"):
        most_flipped_token(FixedReference(rows), paths, bias=0.1)


@pytest.fixture(scope="module")
def calibration():
    model = micro_model(1)
    reference = Reference(copy.deepcopy(model))  # float32
    target = Target.of(model.to(torch.bfloat16), "micro")
    config = GreedyCalibrationConfig(
        pool=12, prompts=6, replicates=30, max_new_tokens=32, tie_paths=2, bias=1.0
    )
    arms, meta = calibrate_greedy(target, reference, pool_prompts(target, config), config)
    return config, arms, meta


def test_greedy_calibration_arms(calibration):
    config, (aa, lossless, mutant), meta = calibration
    assert [a.replicates for a in (aa, lossless, mutant)] == [config.replicates] * 3
    # A logit bias of 1 on the token most often within 1 of the top flips generations and FAILs the runs.
    assert mutant.diverging > lossless.diverging  # the Orthrus it is planted in
    assert mutant.rate >= 0.8 and mutant.by_margin + mutant.by_combined > 0
    assert len(mutant.previous_rule_fails) == config.replicates
    # The lossless decoders' runs pass as often as alpha allows: whatever diverges is numerics. (ar-hf shares
    # the target's RoPE, float32 frequencies through the model's move to bf16 (orthrus_core.rope), so on this
    # pool it no longer diverges from ar; with the frequencies cast to bf16 it did, and still passed.)
    for arm in (aa, lossless):
        assert arm.met(config.alpha), arm
    assert meta["previous_rule_floor"] > 0 and 0 <= meta["mutant_token"] < 320


def test_the_previous_rule_called_flips_within_its_floor_numerics():
    """What the report compares with: a margin under max(floor, largest benign flip margin) was a near-tie."""
    event = DivergenceEvent(3, "block offset 1", ALGORITHMIC, 8, 13, margin=0.2)
    compared = [({}, PairComparison(False, 3, [event], positions=400))]
    study = BenignStudy("bfloat16", ["verify width 8"], 1000, 2, [0.01, 0.05], [])
    assert not previous_rule_fails(compared, study, floor=0.25, alpha=0.01)
    assert previous_rule_fails(compared, study, floor=0.125, alpha=0.01)


def test_greedy_calibration_report(calibration):
    config, arms, meta = calibration
    markdown, data = report(arms, config, {**meta, "model": "micro", "seconds": 1.0})
    assert markdown.startswith("# Calibration of the greedy verdict in bfloat16")
    for arm in arms:
        assert f"| {arm.name} | {config.replicates} |" in markdown
    json.dumps(data)  # JSON-ready as written
    assert [a["fail"] for a in data["arms"]] == [sum(a.fails) for a in arms]
    assert data["arms"][2]["previous_rule_rate"] == sum(arms[2].previous_rule_fails) / config.replicates


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prompts", "30", "--pool", "10"], "need tie_paths <= prompts <= pool"),
        (["--dtype", "float32"], "float32 requires identity"),
        (["--bias", "0"], "bias must be > 0"),
        (["--micro"], "--greedy takes neither"),
    ],
)
def test_bad_greedy_calibration_settings(tmp_path, capsys, argv, message):
    from harness.cli import main

    assert main(["calibrate", "--greedy", "--out", str(tmp_path / "c"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
