"""The draft trainers learn on a random micro target: the loss falls, and the trained drafters raise the
acceptance length over untrained ones while the output stays the target's."""

import pytest
import torch
from conftest import VOCAB, random_model, random_prompts

from harness.cli import main
from orthrus_core.checkpoint import save_model
from orthrus_core.dflash import DFlashDrafter
from orthrus_core.eagle3 import Eagle3Drafter
from orthrus_core.engine import Engine
from orthrus_core.loop import generate
from orthrus_core.training import tiny_corpus
from orthrus_core.training.dflash import train_dflash
from orthrus_core.training.eagle3 import train_eagle3
from orthrus_core.training.tiny_tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def target():
    return random_model(seed=0, num_hidden_layers=4)


@pytest.fixture(scope="module")
def sequences(target):
    """The target's greedy continuations of random prompts."""
    out, engine = [], Engine(target)
    for prompt in random_prompts(40, seed=11, min_len=4, max_len=12):
        out.append((prompt + generate(engine, None, prompt, 48, stop_token_ids=[]).tokens, len(prompt)))
    return out


def taus(target, drafter, sequences):
    accepted, engine = [], Engine(target)
    for ids, start in sequences[:6]:
        r = generate(engine, drafter, ids[:start], 40, stop_token_ids=[])
        assert r.tokens == ids[start : start + 40]  # still the target's output
        accepted += r.accepted
    return 1 + sum(accepted) / len(accepted)


def test_eagle3_trainer_learns(target, sequences):
    losses = []
    log = lambda line: losses.append(float(line.rsplit(" ", 1)[1]))  # noqa: E731
    head0 = train_eagle3(target, sequences, draft_vocab_size=200, steps=1, ttt_steps=3, log=lambda _: None)
    head = train_eagle3(
        target, sequences, draft_vocab_size=200, steps=200, ttt_steps=3, batch_size=8, log=log
    )
    assert losses[-1] < 0.75 * losses[0]
    tau0 = taus(target, Eagle3Drafter(head0, target, 4, 4, 16), sequences)
    tau = taus(target, Eagle3Drafter(head, target, 4, 4, 16), sequences)
    print("eagle3 tau before/after training:", tau0, tau)
    assert tau > tau0 + 0.3
    assert int(head.t2d.sum()) == 200 and torch.equal(
        head.to_target(torch.arange(200)), head.t2d.nonzero()[:, 0]
    )


def test_dflash_trainer_learns(target, sequences):
    losses = []
    log = lambda line: losses.append(float(line.rsplit(" ", 1)[1]))  # noqa: E731
    kw = dict(num_layers=1, block_size=6, mask_token_id=target.config.mask_token_id, anchors=8)
    draft0 = train_dflash(target, sequences, steps=1, log=lambda _: None, **kw)
    draft = train_dflash(target, sequences, steps=250, log=log, **kw)
    assert losses[-1] < 0.75 * losses[0]
    tau0 = taus(target, DFlashDrafter(draft0, target), sequences)
    tau = taus(target, DFlashDrafter(draft, target), sequences)
    print("dflash tau before/after training:", tau0, tau)
    assert tau > tau0 + 0.3


def test_train_tiny_drafts_stage_writes_both_drafts_beside_the_base(tmp_path, capsys):
    """`train-tiny --stage drafts` on a micro base with a tokenizer: both drafts are written where the method
    registry finds them, load, and keep every lossless method's output the base's."""
    base = tmp_path / "orthrus"
    tokenizer = train_tokenizer(tiny_corpus.tokenizer_training_text(None, count=200), VOCAB, base)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    save_model(random_model(seed=0, num_hidden_layers=4, eos_token_id=eos), base)  # EAGLE-3 reads 3 layers
    argv = [
        "train-tiny",
        "--stage",
        "drafts",
        "--out",
        str(base),
        "--draft-prompts",
        "6",
        "--draft-steps",
        "3",
        "--draft-max-new-tokens",
        "32",
    ]
    assert main([*argv, "--eval-limit", "1"]) == 0
    assert (tmp_path / "eagle3" / "config.json").is_file() and (tmp_path / "dflash" / "config.json").is_file()
    rows = {
        line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "differs from AR" in line
    }
    assert set(rows) == {"ar", "orthrus", "eagle3:tree=chain", "eagle3", "eagle3:total_tokens=16", "dflash", "pld",
                         "diffusion"}  # fmt: skip
    for spec, line in rows.items():
        if spec != "diffusion":
            assert "differs from AR on 0/2" in line, line
