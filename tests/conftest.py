"""Shared fixtures: tiny Qwen3-shaped Orthrus models with random weights, an oracle drafter for the decode loop, the
project's data folder (``../shared/data`` beside the checkout, or ``$ORTHRUS_DATA_DIR``) and the Qwen3
tokenizer stored in it. With ``ORTHRUS_REQUIRE_ALL_TESTS=1`` (CI sets it) a skipped test is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import Qwen3Config

from orthrus_core.loop import Proposal
from orthrus_core.micro import micro_config
from orthrus_core.model import OrthrusForCausalLM, init_weights
from orthrus_core.orthrus import OrthrusDrafter
from orthrus_core.params import GREEDY

VOCAB = micro_config().vocab_size
MASK_ID = micro_config().mask_token_id


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Where every test must run (CI), a skip means a missing install step: report it as a failure."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("ORTHRUS_REQUIRE_ALL_TESTS") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but ORTHRUS_REQUIRE_ALL_TESTS is set: {reason}"


@pytest.fixture
def vllm_cache(tmp_path_factory, monkeypatch):
    """The views exported for vLLM (harness.methods.vllm.CACHE) go into a cache of the tests' own."""
    from harness.methods import vllm

    monkeypatch.setattr(vllm, "CACHE", tmp_path_factory.getbasetemp() / "orthrus-cache")


def check_emissions(result, count: int) -> None:
    """A generation's emission offsets (GenerationResult.emit_offsets_s): `count` of them, seconds since the
    first token, non-decreasing, within the decode time, their gaps (the inter-token latencies) summing to the
    last."""
    offsets = result.emit_offsets_s
    assert offsets is not None and len(offsets) == count, (offsets, count)
    assert all(0 <= a <= b for a, b in zip([0.0, *offsets], offsets, strict=False))
    assert all(round(t, 6) == t for t in offsets)  # to the microsecond
    assert not offsets or offsets[-1] <= result.decode_s + 1e-6
    assert len(result.itl_s) == count and sum(result.itl_s) == pytest.approx(offsets[-1] if offsets else 0)


def two_layer_micro_config(**overrides) -> Qwen3Config:
    """The calibration's micro shape with two layers."""
    return micro_config(**{"num_hidden_layers": 2, **overrides})


def random_model(seed: int = 0, **overrides) -> OrthrusForCausalLM:
    # std 0.25 (not Qwen3's 0.02) so that logits are spread out: greedy outputs vary and ties are rare.
    return init_weights(OrthrusForCausalLM(two_layer_micro_config(**overrides)), std=0.25, seed=seed).eval()


@pytest.fixture(scope="session")
def model() -> OrthrusForCausalLM:
    return random_model()


@pytest.fixture(scope="module")
def micro():
    """A one-layer random target (compilation stays short) and every batched method's drafter on it. The
    drafters are shaped so that the methods share pass shapes where they can, which keeps the number of graphs
    compiled down: every chain verify pass is 8 tokens wide (Orthrus' block, prompt lookup's 7 drafts, EAGLE-3's
    chain of 7, DFlash's block), the EAGLE-3 tree has 8 nodes, and EAGLE-3 and DFlash read the same target
    features (index 1, the final hidden states, three times)."""
    from test_drafters import random_dflash, random_head

    from orthrus_core.dflash import DFlashDrafter
    from orthrus_core.eagle3 import Eagle3Drafter
    from orthrus_core.orthrus import OrthrusDrafter
    from orthrus_core.prompt_lookup import PromptLookupDrafter

    target = random_model(seed=2, num_hidden_layers=1)
    assert target.block_size == 8
    head = random_head(target, seed=3, aux=[1, 1, 1])
    draft = random_dflash(target, seed=4, layers=1, block_size=8, target_layer_ids=[0, 0, 0])
    drafters = {
        "ar": None,
        "orthrus": OrthrusDrafter(target),
        "pld": PromptLookupDrafter(3, 7),
        "eagle3:tree=chain": Eagle3Drafter.chain(head, target, depth=7),
        "eagle3": Eagle3Drafter(head, target, top_k=2, depth=3, total_tokens=8),
        "dflash": DFlashDrafter(draft, target),
    }
    assert drafters["eagle3"].max_nodes == 8 and drafters["dflash"].capture == drafters["eagle3"].capture
    return target, drafters


def heldout_prompts(tokenizer, n_math: int, n_code: int) -> list[list[int]]:
    """The tiny family's held-out math and code prompts, in its chat template."""
    from orthrus_core.training import tiny_corpus

    def render(messages):
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, enable_thinking=False, tokenize=True, return_dict=False
        )

    math = [render(tiny_corpus.math_messages(p)) for p in tiny_corpus.heldout_math(n_math)]
    return math + [render(tiny_corpus.code_messages(p)) for p in tiny_corpus.heldout_code(n_code)]


def random_prompts(n: int, seed: int = 0, min_len: int = 1, max_len: int = 24) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g).tolist()
    return [torch.randint(4, MASK_ID, (k,), generator=g).tolist() for k in lengths]


class OracleDrafter(OrthrusDrafter):
    """Orthrus' drafter with its diffusion view replaced by an oracle over known continuations.

    `sequences` holds one sequence per request, in the order the loop admits them (a single sequence: every
    request's): prompt + the continuation the AR decoder produces. The draft at block position i (which predicts
    absolute position start+i+1, start being the root's position) is that sequence's token, replaced by a wrong
    token with probability `error_rate` (deterministic per position). error_rate 0 is a perfect draft view, 1 one
    that is always wrong. The real diffusion pass still runs first (its scratch K/V land in the target cache
    where the verify pass overwrites them), so one drafter forward per cycle, as Orthrus takes; only its drafts
    are replaced.
    """

    def __init__(self, model, sequences, block_size=None, error_rate: float = 0.0, seed: int = 0):
        super().__init__(model, block_size)
        self.sequences = [sequences] if isinstance(sequences[0], int) else sequences
        self.vocab = model.config.vocab_size
        g = torch.Generator().manual_seed(seed)
        self.wrong = [(torch.rand(len(s) + 64, generator=g) < error_rate).tolist() for s in self.sequences]

    def bind(self, engine, cache):
        super().bind(engine, cache)
        self.admitted, self.rows = 0, []  # the sequence each active row decodes

    def admit(self, b, prompt, features):
        self.rows.append(self.admitted % len(self.sequences))
        self.admitted += 1

    def keep(self, rows):
        self.rows = [self.rows[b] for b in rows]

    def propose(self, roots, params, generators):
        proposal = super().propose(roots, GREEDY, generators)  # the diffusion pass; its drafts are replaced
        tokens = proposal.tokens.clone()
        for b, s in enumerate(self.rows):
            start, sequence, wrong = self.cache.lengths[b], self.sequences[s], self.wrong[s]
            for i in range(self.block_size - 1):
                pos = start + i + 1
                token = sequence[pos] if pos < len(sequence) else 0
                if wrong[pos]:
                    token = (token + 1) % (self.vocab - 1)
                tokens[b, i + 1] = token
        return Proposal(tokens, proposal.drafts, proposal.passes)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    configured = os.environ.get("ORTHRUS_DATA_DIR")
    path = Path(configured) if configured else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (path / "MANIFEST.md").is_file():
        raise RuntimeError(
            f"the benchmark data folder is missing at {path}: check out ../shared beside the repository or "
            f"set ORTHRUS_DATA_DIR"
        )
    return path


@pytest.fixture(scope="session")
def qwen3_tokenizer(data_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(data_dir / "tokenizers" / "qwen3")
