"""`calibrate`: the planted-bug harness is faithful, the batched AR sampler is the AR decoder, and a reduced
calibration (the CI version of `orthrus-bench calibrate`) meets its requirements and writes its table."""

import json

import torch

import orthrus_core.sampling as sampling
from harness.calibrate import (
    CalibrationConfig,
    ar_samples,
    calibrate_main,
    micro_model,
    speculative_accept_variant,
)
from orthrus_core.decoding import generate_ar
from orthrus_core.sampling import SamplingParams


def test_the_unmutated_variant_is_the_real_acceptance_rule():
    """The mutants share their code with the real rule: with no mutation, the same draws, call for call."""
    g = torch.Generator().manual_seed(0)
    variant = speculative_accept_variant()
    for _ in range(50):
        q = torch.softmax(torch.randn(3, 12, generator=g) * 2, -1)
        p = torch.softmax(torch.randn(4, 12, generator=g) * 2, -1)
        drafts = torch.multinomial(q, 1, generator=g)[:, 0]
        seed = int(torch.randint(0, 2**31, (1,), generator=g))
        real = sampling.speculative_accept(drafts, q, p, torch.Generator().manual_seed(seed))
        mine = variant(drafts, q, p, torch.Generator().manual_seed(seed))
        assert [int(x) for x in real] == [int(x) for x in mine]


def test_mutations_change_the_acceptance():
    q = torch.tensor([[0.5, 0.5]])
    p = torch.tensor([[0.46, 0.54], [0.9, 0.1]])
    drafts = torch.tensor([0])
    # p/q = 0.92: the real rule rejects 8% of the time; 1.1 p/q >= 1 always accepts.
    rejected = sum(
        int(sampling.speculative_accept(drafts, q, p, torch.Generator().manual_seed(s))[0]) == 0
        for s in range(500)
    )
    inflated = speculative_accept_variant(ratio_scale=1.1)
    assert 15 < rejected < 70
    assert all(int(inflated(drafts, q, p, torch.Generator().manual_seed(s))[0]) == 1 for s in range(200))
    # Off by one: judged against p_1 (0.9 / 0.5 >= 1), so always accepted too.
    shifted = speculative_accept_variant(position_shift=1)
    assert all(int(shifted(drafts, q, p, torch.Generator().manual_seed(s))[0]) == 1 for s in range(200))


def test_batched_ar_samples_are_the_ar_decoder():
    model = micro_model()
    prompt = [5, 9, 13, 2, 44]
    greedy = generate_ar(model, prompt, 20, stop_token_ids=[]).tokens
    rows = ar_samples(model, prompt, 3, 20, SamplingParams(0.0), [], torch.Generator())
    assert rows == [greedy] * 3
    # Rows end after their first stop token, as generate_ar's outputs do.
    stop = greedy[7]
    cut = ar_samples(model, prompt, 2, 20, SamplingParams(0.0), [stop], torch.Generator())
    assert cut == [greedy[: greedy.index(stop) + 1]] * 2


def test_reduced_calibration(tmp_path):
    """CI-sized: every arm runs; the A/A and lossless arms stay at alpha, the gross mutants are caught."""
    config = CalibrationConfig(
        replicates=10,
        power_replicates=1,
        prompts=6,
        max_new_tokens=64,
        t2_samples=60,
        t2_depth=2,
        block_size=4,
    )
    out = tmp_path / "calibration"
    calibrate_main(out=str(out), micro=True, config=config, quiet=True)
    data = json.loads(out.with_suffix(".json").read_text())
    arms = {a["name"]: a for a in data["arms"]}
    assert len(arms) == 7
    aa = arms["A/A: AR vs AR (different seeds)"]
    assert aa["replicates"] == 10 and aa["rejections"] <= 1 and aa["met"]
    assert arms["lossless: Orthrus vs AR"]["rejections"] == 0
    topk = arms["mutant: top-k truncation (k=50 applied when off)"]
    assert topk["rejections"] == 1 and topk["met"]
    for arm in arms.values():
        assert arm["tokens_per_replicate"] > 200 and arm["tests"] >= 6
    table = out.with_suffix(".md").read_text()
    assert "| A/A: AR vs AR (different seeds) | 10 |" in table
    assert "random micro model" in table
