"""Fast-dLLM v2: its Qwen2 checkpoints load (logits equal transformers' Qwen2), and `diffusion` decodes them as
the authors' `generate` does, checked against a cache-free restatement of that algorithm on transformers'
Qwen2 with block-causal masks (every position sees its own block and all earlier ones)."""

import json

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from harness.methods import make_decoder
from harness.methods.target import Target
from orthrus_core.checkpoint import load_model
from orthrus_core.formats import describe

B, SUB, MASK = 8, 4, 63  # block, sub-block, mask token (the last of a 64-token vocabulary)


@pytest.fixture(scope="module")
def fast_dllm(tmp_path_factory):
    """A random Qwen2 model saved as a Fast-dLLM v2 checkpoint (its architecture, model_type and bd_size)."""
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.4,  # peaked distributions, so that the threshold unmasks several tokens at once
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # transformers initialises biases to zero; real checkpoints' are not
        for name, p in hf.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.3)
    directory = tmp_path_factory.mktemp("fast_dllm")
    hf.save_pretrained(directory)
    raw = json.loads((directory / "config.json").read_text())
    raw.update(
        architectures=["Fast_dLLM_QwenForCausalLM"],
        model_type="Fast_dLLM_Qwen",
        bd_size=B,
        auto_map={"AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM"},
    )
    (directory / "config.json").write_text(json.dumps(raw))
    return hf, directory


def test_loads_as_qwen2_with_the_same_logits(fast_dllm):
    hf, directory = fast_dllm
    model = load_model(directory)
    assert model.config.model_type == "qwen2" and not model.has_diffusion_view
    ids = torch.randint(0, 63, (1, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits[0]
    actual = model(ids, 0, model.new_cache(30))[0]
    assert torch.allclose(actual, expected, atol=1e-4)


def block_causal_logits(hf, seq: list[int]) -> torch.Tensor:
    blocks = torch.arange(len(seq)) // B
    mask = torch.where(blocks[:, None] >= blocks[None, :], 0.0, float("-inf"))[None, None]
    with torch.no_grad():
        return hf(torch.tensor([seq]), attention_mask=mask).logits[0]


def reference_generate(hf, prompt, max_new_tokens, threshold, stop=None) -> list[int]:
    """Fast-dLLM v2's greedy `generate`, restated without caches: blocks at multiples of B, sub-block by
    sub-block unmask every masked position whose shifted argmax probability exceeds the threshold (and the most
    confident one), stop once a stop token has nothing masked before it, else append the next token from the
    finished block's last row."""
    n = len(prompt)
    seq = list(prompt)
    if n % B == 0:
        seq.append(int(block_causal_logits(hf, seq)[-1].argmax()))
    while len(seq) - n < max_new_tokens:
        start = len(seq) // B * B
        masked = set(range(len(seq), start + B))  # a set, not `== MASK`: a random model may predict MASK
        seq += [MASK] * len(masked)
        for s0 in range(start, start + B, SUB):
            sub = range(s0, s0 + SUB)
            while masked & set(sub):
                probs = torch.softmax(block_causal_logits(hf, seq), -1)
                best = {i: probs[i - 1].max(-1) for i in sub if i in masked}  # token shift
                top = max(best, key=lambda i: float(best[i].values))
                for i, (p, token) in best.items():
                    if float(p) > threshold or i == top:
                        seq[i] = int(token)
                        masked.discard(i)
                new = seq[n:]
                if stop in new and not masked & set(range(n, n + new.index(stop))):
                    return new[: new.index(stop) + 1][:max_new_tokens]
        seq.append(int(block_causal_logits(hf, seq)[start + B - 1].argmax()))
        new = seq[n:]
        if stop in new:
            return new[: new.index(stop) + 1][:max_new_tokens]
    return seq[n : n + max_new_tokens]


@pytest.mark.parametrize("prompt_length", [3, 8, 13, 16])
@pytest.mark.parametrize("threshold", [1.0, 0.3])
def test_decoding_is_fast_dllm_v2s_algorithm(fast_dllm, prompt_length, threshold):
    hf, directory = fast_dllm
    target = Target.of(load_model(directory), str(directory))
    decoder = make_decoder(
        f"diffusion:mask_token_id={MASK}:sub_block_size={SUB}:threshold={threshold}", target
    )
    assert decoder.config["layout"] == "fast-dllm-v2" and decoder.config["block_size"] == B
    prompt = torch.randint(0, 63, (prompt_length,), generator=torch.Generator().manual_seed(prompt_length))
    prompt = prompt.tolist()
    result = decoder.generate(prompt, 30, stop_token_ids=[])
    assert result.tokens == reference_generate(hf, prompt, 30, threshold)
    if threshold < 1:  # several tokens per denoising pass somewhere
        assert result.draft_forwards < sum(result.accepted) + len(result.accepted)
    # A stop token ends the output as soon as nothing before it is masked, without a commit pass.
    stop = result.tokens[10]
    stopped = decoder.generate(prompt, 30, stop_token_ids=[stop])
    assert stopped.tokens == reference_generate(hf, prompt, 30, threshold, stop=stop)
    assert stopped.tokens == result.tokens[: result.tokens.index(stop) + 1]


def test_mask_token_from_the_tokenizer_and_the_authors_defaults(fast_dllm):
    class Tokenizer:
        def convert_tokens_to_ids(self, token):
            return {"|<MASK>|": MASK}.get(token)

    _, directory = fast_dllm
    decoder = make_decoder("diffusion", Target.of(load_model(directory), str(directory), Tokenizer()))
    assert decoder.config["mask_token_id"] == MASK
    assert (decoder.config["block_size"], decoder.config["sub_block_size"]) == (B, min(8, B))
    assert decoder.config["threshold"] == 0.9
    with pytest.raises(ValueError, match="mask_token_id"):
        make_decoder("diffusion", Target.of(load_model(directory), str(directory)))


def test_inspect_recognises_fast_dllm_v2_from_its_converters_fields(fast_dllm):
    """No published config was found (SOURCES.md); its converters write these fields, and `inspect` reads them."""
    _, directory = fast_dllm
    info = describe(directory)
    assert info.format == "fast-dllm-v2" and info.block_size == B and info.problems == []
    assert info.architectures == ["Fast_dLLM_QwenForCausalLM"] and info.model_type == "Fast_dLLM_Qwen"
