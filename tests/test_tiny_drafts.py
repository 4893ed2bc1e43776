"""The shipped tiny family (models/tiny/{orthrus,eagle3,dflash}): every lossless method reproduces AR on
held-out prompts (float32, greedy), the drafts meet their acceptance bars, and the lossy method is visibly lossy.

All three checkpoints come from `orthrus-bench train-tiny` (the drafts from its drafts stage).
"""

import pytest
from conftest import heldout_prompts

from harness.methods import load_target, make_decoder
from harness.paths import DEFAULT_MODEL


@pytest.fixture(scope="module")
def tiny():
    return load_target(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def prompts(tiny):
    return heldout_prompts(tiny.tokenizer, 6, 3)


@pytest.fixture(scope="module")
def ar_outputs(tiny, prompts):
    ar = make_decoder("ar", tiny)
    return [ar.generate(p, 160).tokens for p in prompts]


def tau(results):
    accepted = [n for r in results for n in r.accepted]
    return 1 + sum(accepted) / len(accepted)


@pytest.mark.parametrize(
    "spec,bar",
    [
        ("eagle3", 2.0),
        ("eagle3:total_tokens=16", 2.0),
        ("eagle3:tree=chain", None),
        ("dflash", 2.5),
        ("pld", None),
    ],
)
def test_lossless_on_the_tiny_family(tiny, prompts, ar_outputs, spec, bar):
    decoder = make_decoder(spec, tiny)
    results = [decoder.generate(p, 160) for p in prompts]
    for i, (r, expected) in enumerate(zip(results, ar_outputs, strict=True)):
        assert r.tokens == expected, f"{spec} diverges from AR on held-out prompt {i}"
    print(spec, "tau", tau(results))
    if bar is not None:
        assert tau(results) >= bar


def test_diffusion_only_differs_from_ar_on_some_prompts(tiny, prompts, ar_outputs):
    decoder = make_decoder("diffusion", tiny)
    results = [decoder.generate(p, 160) for p in prompts]
    assert not decoder.lossless
    assert any(r.tokens != expected for r, expected in zip(results, ar_outputs, strict=True))
