"""Checkpoint I/O in the official chiennv/Orthrus-Qwen3-* format, and its errors."""

import json

import pytest
import torch
from conftest import random_model, random_prompts
from safetensors.torch import save_file

from orthrus_core.checkpoint import CheckpointError, load_model, save_model
from orthrus_core.engine import Engine
from orthrus_core.loop import generate
from orthrus_core.orthrus import OrthrusDrafter


def official_config(**overrides) -> dict:
    """A config.json shaped like chiennv/Orthrus-Qwen3-1.7B's, scaled down."""
    config = {
        "architectures": ["OrthrusLM"],
        "auto_map": {
            "AutoConfig": "configuration.OrthrusConfig",
            "AutoModelForCausalLM": "modeling_orthrus.OrthrusLM",
        },
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 7,
        "head_dim": 16,
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 96,
        "max_position_embeddings": 40960,
        "max_window_layers": 28,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "5.8.0",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": 200,
        "block_size": 32,
        "mask_token_id": 199,
        "r": 16,
        "lora_alpha": 32,
    }
    config.update(overrides)
    return config


def official_tensors(config: dict, orthrus: bool = True) -> dict[str, torch.Tensor]:
    """Tensor names and shapes written out from the format description, independently of the model code."""
    g = torch.Generator().manual_seed(0)
    H, I, V, D = config["hidden_size"], config["intermediate_size"], config["vocab_size"], config["head_dim"]
    q, kv = config["num_attention_heads"] * D, config["num_key_value_heads"] * D
    shapes = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (V, H)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for sfx in ["", "_diff"] if orthrus else [""]:
            shapes.update(
                {
                    f"{p}self_attn.q_proj{sfx}.weight": (q, H),
                    f"{p}self_attn.k_proj{sfx}.weight": (kv, H),
                    f"{p}self_attn.v_proj{sfx}.weight": (kv, H),
                    f"{p}self_attn.o_proj{sfx}.weight": (H, q),
                    f"{p}self_attn.q_norm{sfx}.weight": (D,),
                    f"{p}self_attn.k_norm{sfx}.weight": (D,),
                }
            )
        shapes.update(
            {
                f"{p}mlp.gate_proj.weight": (I, H),
                f"{p}mlp.up_proj.weight": (I, H),
                f"{p}mlp.down_proj.weight": (H, I),
                f"{p}input_layernorm.weight": (H,),
                f"{p}post_attention_layernorm.weight": (H,),
            }
        )
    return {n: (torch.randn(s, generator=g) * 0.3).to(torch.bfloat16) for n, s in shapes.items()}


def write_official(directory, config, tensors, shards: int = 1):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    if shards == 1:
        save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
        return directory
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        save_file(part, directory / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return directory


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("tied", [True, False])
def test_loads_official_format(tmp_path, shards, tied):
    config = official_config(tie_word_embeddings=tied)
    tensors = official_tensors(config)
    model = load_model(write_official(tmp_path / "ckpt", config, tensors, shards))
    assert model.has_diffusion_view and model.block_size == 32 and model.mask_token_id == 199
    assert model.config.rope_parameters["rope_theta"] == 1000000
    state = model.state_dict()
    for name, tensor in tensors.items():
        assert torch.equal(state[name], tensor.float()), name
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    prompt, engine = [5, 6, 7], Engine(model)
    orthrus = generate(engine, OrthrusDrafter(model, 4), prompt, 20)
    assert orthrus.tokens == generate(engine, None, prompt, 20).tokens


def test_plain_qwen3_loads_ar_only(tmp_path):
    config = official_config(architectures=["Qwen3ForCausalLM"])
    del config["block_size"], config["mask_token_id"], config["auto_map"]
    model = load_model(write_official(tmp_path / "q", config, official_tensors(config, orthrus=False)))
    assert not model.has_diffusion_view
    assert len(generate(Engine(model), None, [1, 2], 5).tokens) >= 1
    with pytest.raises(ValueError, match="diffusion view"):
        OrthrusDrafter(model)


@pytest.mark.parametrize("shard_bytes", [None, 20_000])
def test_save_load_round_trip(tmp_path, shard_bytes):
    model = random_model(seed=4)
    out = save_model(model, tmp_path / "rt", max_shard_bytes=shard_bytes)
    assert (out / "model.safetensors.index.json").is_file() == bool(shard_bytes)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["OrthrusLM"] and config["model_type"] == "qwen3"
    assert config["block_size"] == 8 and config["mask_token_id"] == model.mask_token_id
    loaded = load_model(out)
    for (n1, t1), (n2, t2) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(t1, t2)
    for prompt in random_prompts(5):
        a = generate(Engine(loaded), OrthrusDrafter(loaded), prompt, 20)
        assert a.tokens == generate(Engine(model), OrthrusDrafter(model), prompt, 20).tokens


def test_save_in_bf16_and_load_in_float32(tmp_path):
    model = random_model(seed=4)
    loaded = load_model(save_model(model, tmp_path / "bf", dtype=torch.bfloat16), dtype=torch.float32)
    assert json.loads((tmp_path / "bf" / "config.json").read_text())["dtype"] == "bfloat16"
    w = model.model.layers[0].self_attn.q_proj_diff.weight
    assert torch.equal(loaded.model.layers[0].self_attn.q_proj_diff.weight, w.to(torch.bfloat16).float())


def test_ar_view_matches_transformers_qwen3(tmp_path):
    """The AR view is exactly Qwen3: transformers' Qwen3ForCausalLM on the same weights gives the same logits."""
    from transformers import Qwen3ForCausalLM

    config = official_config(architectures=["Qwen3ForCausalLM"], tie_word_embeddings=False)
    del config["block_size"], config["mask_token_id"], config["auto_map"]
    directory = write_official(tmp_path / "hf", config, official_tensors(config, orthrus=False))
    ours = load_model(directory)
    theirs = Qwen3ForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    ids = torch.tensor([random_prompts(1, max_len=30, min_len=30)[0]]) % 199
    with torch.inference_mode():
        expected = theirs(ids).logits
        got = ours(ids, 0, ours.new_cache(40))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def _broken(tmp_path, config=None, tensors=None):
    config = config or official_config()
    return write_official(
        tmp_path / "bad", config, tensors if tensors is not None else official_tensors(config)
    )


def test_error_unknown_architecture(tmp_path):
    with pytest.raises(CheckpointError, match=r"unknown architecture \['LlamaForCausalLM'\]"):
        load_model(_broken(tmp_path, official_config(architectures=["LlamaForCausalLM"])))


@pytest.mark.parametrize("key", ["block_size", "mask_token_id"])
def test_error_missing_orthrus_field(tmp_path, key):
    config = official_config()
    del config[key]
    with pytest.raises(CheckpointError, match=f"needs an integer '{key}'"):
        load_model(_broken(tmp_path, config, official_tensors(official_config())))


def test_error_mask_id_outside_vocabulary(tmp_path):
    config = official_config(mask_token_id=151669)
    with pytest.raises(CheckpointError, match=r"mask_token_id 151669 is outside the vocabulary \[0, 200\)"):
        load_model(_broken(tmp_path, config, official_tensors(official_config())))


def test_error_missing_unexpected_and_misshapen_tensors(tmp_path):
    config = official_config()
    tensors = official_tensors(config)
    del tensors["model.layers.1.self_attn.k_proj_diff.weight"]
    tensors["model.layers.0.self_attn.extra.weight"] = torch.zeros(2)
    tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros(95, 64)
    with pytest.raises(CheckpointError) as e:
        load_model(_broken(tmp_path, config, tensors))
    message = str(e.value)
    assert "missing tensors (1):\n    model.layers.1.self_attn.k_proj_diff.weight" in message
    assert "unexpected tensors (1):\n    model.layers.0.self_attn.extra.weight" in message
    assert "model.layers.0.mlp.up_proj.weight: expected (96, 64), found (95, 64)" in message


def test_error_orthrus_config_on_plain_qwen3_weights(tmp_path):
    config = official_config()
    with pytest.raises(CheckpointError, match=r"missing tensors \(12\)"):
        load_model(_broken(tmp_path, config, official_tensors(config, orthrus=False)))


def test_error_missing_files_and_bad_ids(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        (tmp_path / "empty").mkdir()
        load_model(tmp_path / "empty")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(json.dumps(official_config()))
    with pytest.raises(CheckpointError, match="no model.safetensors or model.safetensors.index.json"):
        load_model(tmp_path / "noweights")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_model(tmp_path / "does" / "not" / "exist")


def test_hub_id_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="could not be fetched from the Hugging Face hub"):
        load_model("someone/not-a-cached-model")
