"""The tiny-family trainer on a micro recipe: losses fall, only the diffusion view trains in its stage, the
training attention is exactly the inference attention, and an interrupted stage resumes to the same run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from orthrus_core.model import OrthrusForCausalLM, copy_ar_to_diffusion, init_weights
from orthrus_core.training import tiny, tiny_corpus
from orthrus_core.training.tiny_tokenizer import train_tokenizer

MICRO = tiny.Recipe(
    vocab_size=400,
    generated_conversations=400,
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=24,
    intermediate_size=96,
    block_size=4,
    seq_len=64,
    base_steps=40,
    base_batch=4,
    base_lr=1e-2,
    diff_steps=30,
    diff_batch=4,
    diff_lr=1e-2,
    blocks_per_seq=4,
    warmup_steps=5,
)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    tokenizer = train_tokenizer(
        tiny_corpus.tokenizer_training_text(None, count=400), MICRO.vocab_size, tmp_path_factory.mktemp("tok")
    )
    stream = tiny.token_stream(tokenizer, tiny.training_conversations(MICRO, None), MICRO.seed)
    return tokenizer, stream


def mean(xs):
    return sum(xs) / len(xs)


def test_stages_lower_their_losses_and_the_diffusion_stage_trains_only_the_diffusion_view(micro, tmp_path):
    tokenizer, stream = micro
    model = tiny.build_model(MICRO, tokenizer)
    base_log = tiny.train_base(model, stream, MICRO, tmp_path, progress=False)
    assert mean(base_log["losses"][-5:]) < 0.7 * mean(base_log["losses"][:5])

    copy_ar_to_diffusion(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    diff_log = tiny.train_diffusion(model, stream, MICRO, tmp_path, progress=False)
    assert mean(diff_log["losses"][-10:]) < 0.85 * mean(diff_log["losses"][:10])
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n in before if "_diff" in n}
    assert all(p.requires_grad for p in model.parameters())  # the freeze is undone afterwards


def test_training_blocks_see_exactly_what_inference_blocks_see():
    """The many-blocks-per-forward training pass gives each block the logits of a diffusion-view decoding
    pass over [anchor, MASK...] at that anchor, against a cache holding the AR prefix."""
    config = dataclasses.replace(MICRO, vocab_size=64).config(
        mask_token_id=63, eos_token_id=62, pad_token_id=61
    )
    model = init_weights(OrthrusForCausalLM(config), std=0.2, seed=1).eval()
    x = torch.randint(0, 60, (2, 24), generator=torch.Generator().manual_seed(0))
    anchors = torch.tensor([[3, 12, 1], [19, 5, 8]])
    K = 4
    captured = {}
    run = model.run

    def spy(ids, positions, mask, diffusion, context):
        out = run(ids, positions, mask, diffusion, context)
        if diffusion:
            captured["logits"] = out
        return out

    model.run = spy
    loss = tiny.diffusion_loss(model, x, anchors, K)
    del model.run
    block_logits = captured["logits"].view(2, 3, K, -1)
    teacher, _, _ = tiny.ar_teacher(model, x)
    kls = []
    for b in range(2):
        for j in range(3):
            a = int(anchors[b, j])
            cache = model.new_cache(a + K)
            model(x[b : b + 1, :a], 0, cache)
            block = torch.full((1, K), 63)
            block[0, 0] = x[b, a]
            reference = model(block, a, cache, diffusion=True)[0]
            torch.testing.assert_close(block_logits[b, j], reference, atol=1e-5, rtol=1e-5)
            p, log_q = teacher[b, a : a + K - 1], reference[:-1].log_softmax(-1)
            kls.append((p.exp() * (p - log_q)).sum(-1))
    assert loss.item() == pytest.approx(torch.stack(kls).mean().item(), rel=1e-5)


def test_an_interrupted_stage_resumes_to_the_same_run(micro, tmp_path):
    tokenizer, stream = micro
    recipe = dataclasses.replace(MICRO, base_steps=12)

    def stage(work_dir, fail_at=None):
        model = tiny.build_model(recipe, tokenizer)

        def loss_fn(step, generator):
            if step == fail_at:
                raise KeyboardInterrupt
            return tiny.next_token_loss(model, tiny.sample_windows(stream, 64, 4, generator))

        params = [(n, p) for n, p in model.named_parameters() if "_diff" not in n]
        log = tiny.run_stage(
            "base",
            model,
            params,
            loss_fn,
            steps=12,
            lr=1e-2,
            recipe=recipe,
            work_dir=work_dir,
            save_every=5,
            progress=False,
        )
        return model, log

    model, log = stage(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        stage(tmp_path / "crashed", fail_at=7)
    resumed, resumed_log = stage(tmp_path / "crashed")
    assert len(resumed_log["losses"]) == 12
    assert resumed_log["losses"] == pytest.approx(log["losses"], rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


def test_a_work_dir_from_another_recipe_is_refused(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "recipe.json").write_text('{"seed": 1}')
    with pytest.raises(ValueError, match="different recipe"):
        tiny.train_tiny(tmp_path / "out", None, recipe=MICRO, work_dir=tmp_path / "work", progress=False)
