"""Every public checkpoint the harness names, built from its published files (../shared/checkpoint-configs;
tests/published.py says how), loads through the public paths and decodes: `load_target`, `make_decoder(...,
draft=PATH)`, `orthrus-bench generate`, `run` (whose verify holds every lossless method to AR, greedy,
float32) and `inspect`; nothing prompts for or runs remote code. The narrow cases decode in float32; the wide
ones keep the published widths, vocabulary and dtype."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from published import cut, published, write_dflash, write_eagle3, write_target
from vllm_support import needs_vllm

from harness.cli import main
from harness.methods import load_target, make_decoder
from orthrus_core.checkpoint import CheckpointError
from orthrus_core.formats import describe
from orthrus_core.generation import stop_ids

REPO = Path(__file__).resolve().parents[1]
IM_END, ENDOFTEXT, MASK = 151645, 151643, 151669


@pytest.fixture(scope="session")
def configs(data_dir) -> Path:
    path = data_dir.parent / "checkpoint-configs"
    assert (path / "SOURCES.md").is_file(), f"the published checkpoint configs are missing at {path}"
    return path


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir(data_dir) -> Path:
    return data_dir / "tokenizers" / "qwen3"


def head_config(configs: Path, repo: str, target: dict, *, reported: bool = False) -> dict:
    """An EAGLE-3 head's config (AngelSlim's 1.7B: the reported fields only) with the target's widths."""
    raw = published(configs, repo, "config.reported-fields.json" if reported else "config.json")
    raw = {k: v for k, v in raw.items() if not k.startswith("_")}
    widths = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
    return {**raw, **{k: target[k] for k in widths}, "rms_norm_eps": target.get("rms_norm_eps", 1e-6)}


def dflash_config(raw: dict, target_layers: int, draft_layers: int) -> dict:
    """z-lab's drafter config with its layers cut and its target layers mapped onto a target cut to
    `target_layers` (the published ids, [1, 9, 17, 25, 33] of 36, scaled)."""
    extra = dict(raw.get("dflash_config") or {})
    ids = extra.get("target_layer_ids")
    if ids:
        extra["target_layer_ids"] = [
            min(i * target_layers // raw["num_target_layers"], target_layers - 1) for i in ids
        ]
    return {**raw, "num_hidden_layers": draft_layers, "layer_types": ["full_attention"] * draft_layers,
            "max_window_layers": draft_layers, "num_target_layers": target_layers, "dflash_config": extra}  # fmt: skip


def narrow_target(raw: dict) -> dict:
    return {**cut(raw, 4, narrow=True), "torch_dtype": "float32", "dtype": "float32"}


# ------------------------------------------------------------------------------------------ narrow (float32)


@pytest.fixture(scope="module")
def orthrus_1_7b(configs, qwen3_tokenizer_dir, tmp_path_factory):
    """chiennv/Orthrus-Qwen3-1.7B (config and generation_config verbatim) and AngelSlim/Qwen3-1.7B_eagle3 (the
    reported fields), side by side as the registry finds them."""
    root = tmp_path_factory.mktemp("orthrus-1.7b")
    raw = narrow_target(published(configs, "chiennv/Orthrus-Qwen3-1.7B"))
    generation = published(configs, "chiennv/Orthrus-Qwen3-1.7B", "generation_config.json")
    target = write_target(root / "orthrus", raw, orthrus=True, tokenizer=qwen3_tokenizer_dir,
                          extra_files={"generation_config.json": generation})  # fmt: skip
    head = write_eagle3(root / "eagle3", head_config(configs, "AngelSlim/Qwen3-1.7B_eagle3", raw, reported=True),
                        dtype="float32")  # fmt: skip
    return target, head


@pytest.fixture(scope="module")
def qwen3_8b(configs, qwen3_tokenizer_dir, tmp_path_factory):
    """Qwen/Qwen3-8B with AngelSlim/Qwen3-8B_eagle3 and z-lab/Qwen3-8B-DFlash-b16 (SpecForge's config plus the
    dflash_config the published one has, SOURCES.md)."""
    root = tmp_path_factory.mktemp("qwen3-8b")
    raw = narrow_target(published(configs, "Qwen/Qwen3-8B"))
    target = write_target(root / "qwen3", raw, tokenizer=qwen3_tokenizer_dir)
    head = write_eagle3(
        root / "eagle3", head_config(configs, "AngelSlim/Qwen3-8B_eagle3", raw), dtype="float32"
    )
    specforge = published(configs, "z-lab/Qwen3-8B-DFlash-b16", "specforge-configs-qwen3-8b-dflash.json")
    with_layers = {
        **specforge,
        "dflash_config": {"mask_token_id": MASK, "target_layer_ids": [1, 9, 17, 25, 33]},
    }
    drafter = {**dflash_config(with_layers, 4, 2), **{k: raw[k] for k in ("hidden_size", "intermediate_size",
               "num_attention_heads", "num_key_value_heads", "head_dim")}, "dtype": "float32"}  # fmt: skip
    dflash = write_dflash(root / "dflash", drafter)
    as_published = write_dflash(root / "dflash-specforge", {**drafter, "dflash_config": None})
    return target, head, dflash, as_published


def qwen3_4b_raw(configs, layers: int, narrow: bool) -> dict:
    """Qwen3-4B's config: no config of Qwen/Qwen3-4B was found, so SDAR-4B's (Qwen3-4B's architecture) as
    Qwen3ForCausalLM, with tied embeddings and <|im_end|> as Qwen3's configs have."""
    sdar_raw = published(configs, "JetLM/SDAR-4B-Chat")
    raw = {k: v for k, v in sdar_raw.items() if k not in ("auto_map", "block_size", "mask_token_id")}
    raw.update(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", tie_word_embeddings=True, eos_token_id=IM_END
    )
    return cut(raw, layers, narrow)


@pytest.fixture(scope="module")
def qwen3_4b(configs, qwen3_tokenizer_dir, tmp_path_factory):
    """A Qwen3-4B target (qwen3_4b_raw), AngelSlim/Qwen3-4B_eagle3 (its training config) and
    z-lab/Qwen3-4B-DFlash-b16."""
    root = tmp_path_factory.mktemp("qwen3-4b")
    raw = {**qwen3_4b_raw(configs, 4, narrow=True), "torch_dtype": "float32", "dtype": "float32"}
    target = write_target(root / "qwen3", raw, tokenizer=qwen3_tokenizer_dir)
    training = published(
        configs, "AngelSlim/Qwen3-4B_eagle3", "angelslim-repo-configs-qwen3-eagle3-qwen3-4b-eagle3.json"
    )
    widths = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
    head = write_eagle3(root / "eagle3", {**training, **{k: raw[k] for k in widths}}, dtype="float32")
    # The hub config says head_dim 80 (AngelSlim issue #5) where the weights have 128: the weights decide.
    (head / "config.json").write_text(json.dumps({**training, **{k: raw[k] for k in widths}, "head_dim": 80}))
    drafter = dflash_config(published(configs, "z-lab/Qwen3-4B-DFlash-b16"), 4, 2)
    drafter.update({k: raw[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                    "num_key_value_heads", "head_dim")}, dtype="float32")  # fmt: skip
    return target, head, write_dflash(root / "dflash", drafter)


def sdar(configs, qwen3_tokenizer_dir, root: Path, repo: str, *, narrow: bool) -> Path:
    """JetLM/SDAR-*-Chat from the authors' files: config, generation_config, the weight_map, tokenizer_config
    (auto_map to remote code) and special tokens; tokenizer.json from Qwen3 (the snapshot lacks it)."""
    raw = published(configs, repo)
    raw = narrow_target(raw) if narrow else cut(raw, 2, narrow=False)
    files = {name: published(configs, repo, name) for name in
             ("generation_config.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")}  # fmt: skip
    weight_map = published(configs, repo, "model.safetensors.index.json")["weight_map"]
    return write_target(root, raw, weight_map=weight_map, tokenizer=qwen3_tokenizer_dir, extra_files=files)


@pytest.fixture(scope="module")
def sdar_checkpoints(configs, qwen3_tokenizer_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sdar")
    return {
        size: sdar(configs, qwen3_tokenizer_dir, root / size, f"JetLM/SDAR-{size}-Chat", narrow=True)
        for size in ("4B", "8B")
    }


PROMPTS = [
    [151644, 872, 198, 9707, 11, 1879, 0, 151645, 198, 151644, 77091, 198],
    [785, 4226, 315, 220, 17, 10, 17, 374],
]


def outputs(target, spec, **draft):
    decoder = make_decoder(spec, target, **draft)
    return [decoder.generate(p, 24, stop_token_ids=[]).tokens for p in PROMPTS]


def test_orthrus_1_7b_loads_as_published_and_every_lossless_method_is_ar(orthrus_1_7b):
    directory, head = orthrus_1_7b
    target = load_target(directory)
    model = target.model
    assert model.has_diffusion_view and model.block_size == 32 and model.mask_token_id == MASK
    assert stop_ids(model) == [IM_END]
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: no lm_head.weight is stored
    ar = outputs(target, "ar")
    for spec in ("ar-hf", "orthrus", "orthrus:block_size=8", "pld", "eagle3", "eagle3:tree=chain"):
        assert outputs(target, spec, **({"draft": str(head)} if spec.startswith("eagle3") else {})) == ar, (
            spec
        )


@needs_vllm
def test_orthrus_1_7b_decodes_in_vllm_as_published_as_ar_and_as_orthrus_accepts(
    configs, qwen3_tokenizer_dir, vllm_cache, tmp_path
):
    """vllm-orthrus loads the published format itself (auto_map, tied embeddings, the Qwen3 vocabulary, block 32,
    the mask token past the tokenizer's): ar's tokens, orthrus' accepted drafts. Narrow, with heads of 32, the
    narrowest vLLM's CPU attention takes."""
    raw = {**narrow_target(published(configs, "chiennv/Orthrus-Qwen3-1.7B")), "head_dim": 32}
    directory = write_target(tmp_path / "orthrus", raw, orthrus=True, tokenizer=qwen3_tokenizer_dir)
    assert "auto_map" in json.loads((Path(directory) / "config.json").read_text())
    target = load_target(directory)
    decoder = make_decoder("vllm-orthrus", target)
    try:
        mine = [decoder.generate(p, 24, stop_token_ids=[]) for p in PROMPTS]
    finally:
        decoder.close()
    orthrus = make_decoder("orthrus", target)
    assert [r.tokens for r in mine] == outputs(target, "ar")
    assert [r.accepted for r in mine] == [
        orthrus.generate(p, 24, stop_token_ids=[]).accepted for p in PROMPTS
    ]


def test_the_registry_finds_the_head_beside_the_target(orthrus_1_7b):
    directory, head = orthrus_1_7b
    decoder = make_decoder("eagle3", load_target(directory))  # no draft= : the sibling eagle3/ directory
    assert decoder.checkpoints["draft"] == str(head)
    assert decoder.drafter.head.draft_vocab_size == 32000 and decoder.drafter.head.config.architectures == [
        "LlamaForCausalLMEEagle3"
    ]


def test_qwen3_8b_with_its_eagle3_head_and_dflash_drafter(qwen3_8b):
    directory, head, dflash, as_published = qwen3_8b
    target = load_target(directory)
    assert not target.model.has_diffusion_view and stop_ids(target.model) == [IM_END]
    ar = outputs(target, "ar")
    assert outputs(target, "eagle3", draft=str(head)) == ar
    assert outputs(target, "dflash", draft=str(dflash)) == ar
    with pytest.raises(CheckpointError, match=r"dflash_config.mask_token_id None is not a token"):
        make_decoder("dflash", target, draft=str(as_published))


def test_qwen3_4b_drafts_load_whatever_their_config_says_of_head_dim_and_architecture(qwen3_4b):
    directory, head, dflash = qwen3_4b
    target = load_target(directory)
    ar = outputs(target, "ar")
    decoder = make_decoder("eagle3", target, draft=str(head))
    assert json.loads((head / "config.json").read_text())["architectures"] == ["Eagle3LLamaforCausalLM"]
    assert (
        decoder.drafter.head.config.head_dim == target.model.config.head_dim
    )  # from the weights, not the config's 80
    assert outputs(target, "eagle3", draft=str(head)) == ar
    assert outputs(target, "dflash", draft=str(dflash)) == ar


def test_sdar_stops_where_its_generation_config_says_and_decodes_as_its_layout(sdar_checkpoints):
    for directory in sdar_checkpoints.values():
        target = load_target(directory)
        assert stop_ids(target.model) == [IM_END, ENDOFTEXT]  # config.json alone says 151643
        assert type(target.tokenizer).__name__ == "Qwen2Tokenizer"  # transformers' own, not the repo's copy
        decoder = make_decoder("diffusion", target)
        assert decoder.config["layout"] == "sdar" and decoder.config["block_size"] == 4
        assert decoder.config["mask_token_id"] == MASK
        assert decoder.generate(PROMPTS[0], 8).new_tokens > 0
        assert outputs(target, "pld") == outputs(target, "ar")


def test_qwen3_1_7b_stores_a_tied_lm_head_and_still_loads(configs, qwen3_tokenizer_dir, tmp_path):
    """Qwen/Qwen3-1.7B's published index maps lm_head.weight to a shard although its embeddings are tied (its
    config was not found: Orthrus-1.7B's, the same Qwen3-1.7B with a diffusion view, as Qwen3ForCausalLM)."""
    orthrus = published(configs, "chiennv/Orthrus-Qwen3-1.7B")
    raw = narrow_target(
        {k: v for k, v in orthrus.items() if k not in ("auto_map", "block_size", "mask_token_id")}
    )
    raw["architectures"] = ["Qwen3ForCausalLM"]
    directory = write_target(tmp_path / "qwen3-1.7b", raw, stored_lm_head=True)
    target = load_target(directory)
    assert (
        target.model.lm_head.weight is target.model.model.embed_tokens.weight
    )  # tied, as transformers ties it
    assert describe(directory).problems == []


def test_no_checkpoint_prompts_for_remote_code(sdar_checkpoints):
    """SDAR's tokenizer_config maps AutoTokenizer to remote code: with stdin closed, a prompt would show."""
    command = [sys.executable, "-m", "harness.cli", "generate", "--model", str(sdar_checkpoints["8B"]),
               "--prompt", "hi", "--method", "ar", "--max-new-tokens", "4", "--json"]  # fmt: skip
    done = subprocess.run(
        command, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "custom code" not in done.stdout + done.stderr
    assert len(json.loads(done.stdout)["tokens"]) >= 1


def test_run_verifies_every_lossless_method_on_the_published_orthrus_1_7b(orthrus_1_7b, tmp_path, capsys):
    directory, head = orthrus_1_7b
    argv = ["run", "--model", str(directory), "--suite", "tiny-math", "--limit", "2", "--max-new-tokens", "16",
            "--warmup", "0", "--methods", f"ar,ar-hf,orthrus,pld,eagle3:draft={head},eagle3:tree=chain",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0  # verify's exit status: 1 if a lossless method left AR
    verdicts = json.loads((tmp_path / "run" / "verdicts.json").read_text())["verdicts"]
    assert len(verdicts) == 5 and all(v["verdict"] == "PASS" for v in verdicts)


# -------------------------------------------------------------------------------------------- inspect


def test_inspect_names_every_format_and_its_problems(
    orthrus_1_7b, qwen3_8b, qwen3_4b, sdar_checkpoints, capsys
):
    orthrus, head_1_7b = orthrus_1_7b
    qwen3, head_8b, dflash_8b, specforge = qwen3_8b
    seen = {describe(p).format for p in (orthrus, head_1_7b, qwen3, dflash_8b, *sdar_checkpoints.values())}
    assert seen == {"orthrus", "eagle3", "qwen3", "dflash", "sdar"}
    info = describe(orthrus)
    assert (
        info.parameters["diffusion_view_only"] > 0 and info.stop_token_ids == [IM_END] and not info.problems
    )
    assert describe(sdar_checkpoints["4B"]).stop_token_ids == [IM_END, ENDOFTEXT]
    assert describe(head_8b, target=qwen3).problems == []
    assert describe(head_8b, target=qwen3).reads_target_states == [2, 2, 1]
    assert any("mask_token_id None" in p for p in describe(specforge, target=qwen3).problems)
    shallow = describe(head_8b, target=sdar_checkpoints["4B"])  # 4 layers too: the head fits its shape
    assert shallow.problems == []

    assert main(["inspect", str(orthrus)]) == 0
    printed = capsys.readouterr().out
    assert "orthrus (OrthrusLM" in printed and "stop tokens  151645 (<|im_end|>)" in printed
    assert main(["inspect", str(specforge), "--target", str(qwen3), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["problems"]


def test_inspect_reports_what_load_would_raise(orthrus_1_7b, tmp_path, capsys):
    orthrus, _ = orthrus_1_7b
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in orthrus.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    with pytest.raises(CheckpointError) as raised:
        load_target(broken)
    assert describe(broken).problems == [str(raised.value)]
    assert main(["inspect", str(broken)]) == 1
    assert "shape mismatches" in capsys.readouterr().out


# ------------------------------------------------------------------------------ wide (published widths)


@pytest.fixture(scope="module")
def wide(configs, qwen3_tokenizer_dir, tmp_path_factory):
    """Published widths, vocabulary and dtype, layers cut: Orthrus-1.7B (bf16, 3 layers: EAGLE-3 reads states
    2, 1 and 0 of it) with AngelSlim's 1.7B head (fp16 pytorch_model.bin, 274 MB as published), SDAR-4B (bf16,
    2 layers, untied, sharded as its index), and a Qwen3-4B target (3 layers) with z-lab's 4B DFlash drafter
    (2 layers, its five target layers mapped onto the three)."""
    root = tmp_path_factory.mktemp("wide")
    raw = cut(published(configs, "chiennv/Orthrus-Qwen3-1.7B"), 3, narrow=False)
    orthrus = write_target(root / "orthrus", raw, orthrus=True, tokenizer=qwen3_tokenizer_dir)
    head_raw = {
        **head_config(configs, "AngelSlim/Qwen3-1.7B_eagle3", raw, reported=True),
        "intermediate_size": 6144,
    }
    head = write_eagle3(root / "eagle3", head_raw, dtype="float16")
    sdar_4b = sdar(configs, qwen3_tokenizer_dir, root / "sdar-4b", "JetLM/SDAR-4B-Chat", narrow=False)
    qwen3 = write_target(root / "qwen3-4b", qwen3_4b_raw(configs, 3, narrow=False))
    dflash = write_dflash(
        root / "dflash", dflash_config(published(configs, "z-lab/Qwen3-4B-DFlash-b16"), 3, 2)
    )
    return orthrus, head, sdar_4b, qwen3, dflash


def test_published_widths_load_in_their_dtype_and_decode(wide):
    orthrus, head, sdar_4b, qwen3, dflash = wide
    assert (head / "pytorch_model.bin").stat().st_size == pytest.approx(274_132_734, rel=0.002)
    target = load_target(orthrus, "bfloat16")
    assert target.model.config.hidden_size == 2048 and target.model.lm_head.weight.dtype == torch.bfloat16
    for spec in ("ar", "orthrus", "eagle3"):
        decoder = make_decoder(spec, target, **({"draft": str(head)} if spec == "eagle3" else {}))
        assert decoder.generate(PROMPTS[1], 3).new_tokens == 3
    info = describe(head, target=orthrus)
    assert info.format == "eagle3" and info.dtype == "float16" and info.problems == []
    assert info.parameters["total"] == 136_847_360 + 32000 + 151936  # the published tensors' elements
    sdar_target = load_target(sdar_4b, "bfloat16")
    assert sdar_target.model.config.vocab_size == 151936 and not sdar_target.model.config.tie_word_embeddings
    assert make_decoder("ar", sdar_target).generate(PROMPTS[0], 2).new_tokens == 2
    assert describe(sdar_4b).problems == []
    qwen3_target = load_target(qwen3, "bfloat16")
    assert make_decoder("dflash", qwen3_target, draft=str(dflash)).generate(PROMPTS[1], 3).new_tokens == 3
    assert describe(dflash, target=qwen3).problems == [] and describe(qwen3).format == "qwen3"
