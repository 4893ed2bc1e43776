"""Damaged checkpoints (issue 25): a truncated or garbled safetensors file, a JSON file that does not parse, a
sharded checkpoint's broken index, a missing or garbled tokenizer.json, in a target or in an EAGLE-3 / DFlash
draft. `inspect` and `run` exit 2 with one line naming the file, the problem and what to do (no traceback), and
`run` fails in its pre-flight, before anything is written.

The checkpoints are copies of the shipped tiny family (models/tiny), damaged in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.cli import main
from harness.paths import TINY_DIR, default_model
from orthrus_core.checkpoint import (
    INDEX_FILE,
    CheckpointError,
    CorruptFileError,
    check_safetensors,
    load_model,
    refetch_hint,
    save_model,
)
from orthrus_core.tokenizer import load_tokenizer

GARBLED_JSON = '{"architectures": ["OrthrusLM"],\n  "hidden_size": ,\n}\n'
REFETCH = "re-download it"


# ------------------------------------------------------------------------------------------------ damage


def truncate(path: Path, keep: float = 0.5) -> None:
    with open(path, "r+b") as f:
        f.truncate(int(path.stat().st_size * keep))


def garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:40] = b"#" * 32  # the start of the JSON header; its length field is intact
    path.write_bytes(bytes(data))


def garble_json(path: Path) -> None:
    path.write_text(GARBLED_JSON)


def copy_of(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("*.png", "training_log.json"))
    return destination


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """The tiny target saved in three shards with an index, with its tokenizer files."""
    source = default_model()
    directory = save_model(
        load_model(source),
        tmp_path_factory.mktemp("sharded") / "ckpt",
        dtype=torch.bfloat16,
        max_shard_bytes=5_000_000,
    )
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(source / name, directory / name)
    assert len(list(directory.glob("model-*-of-*.safetensors"))) > 1
    return directory


# -------------------------------------------------------------------------------------------- the CLI


def inspect(capsys, directory: Path) -> tuple[int, str]:
    code = main(["inspect", str(directory)])
    return code, capsys.readouterr().err


def run(capsys, tmp_path: Path, data_dir: Path, model: Path, method: str = "ar") -> tuple[int, str, Path]:
    out = tmp_path / "results"
    argv = ["run", "--model", str(model), "--suite", "tiny-math", "--methods", method, "--limit", "1"]
    argv += ["--max-new-tokens", "4", "--out", str(out), "--no-verify", "--data-dir", str(data_dir)]
    code = main(argv)
    return code, capsys.readouterr().err, out


def assert_clear_error(command: str, code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith(f"orthrus-bench {command}: error: "), err
    assert err.count("\n") == 1, err  # one line
    for text in expected:
        assert text in err, (text, err)


def check_both(capsys, tmp_path, data_dir, checkpoint: Path, *expected: str, method: str = "ar") -> str:
    """inspect `checkpoint` and a run on it (with `method`; a draft is the method's draft= option, its target the
    tiny one) exit 2 with `expected` in one line, and the run leaves nothing behind. -> the run's message."""
    code, err = inspect(capsys, checkpoint)
    assert_clear_error("inspect", code, err, *expected)
    model = checkpoint if method == "ar" else default_model()
    code, err, out = run(capsys, tmp_path, data_dir, model, method)
    assert_clear_error("run", code, err, *expected)
    assert not out.exists(), "the pre-flight must fail before the results directory is written"
    return err


# -------------------------------------------------------------------------------------------- controls


def test_the_undamaged_copies_inspect(capsys, tmp_path, sharded):
    target = copy_of(default_model(), tmp_path / "orthrus")
    for directory in (target, sharded, TINY_DIR / "eagle3", TINY_DIR / "dflash"):
        assert main(["inspect", str(directory)]) == 0, capsys.readouterr()


def test_an_undamaged_run_writes_the_results_directory(capsys, tmp_path, data_dir):
    """What the damaged runs below must not leave behind (the slowest test here: the suite's items are
    generated from the tiny corpus)."""
    code, err, out = run(capsys, tmp_path, data_dir, copy_of(default_model(), tmp_path / "orthrus"))
    assert code == 0, err
    assert out.is_dir()


# ---------------------------------------------------------------------------------------------- target


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (truncate, ["truncated: the tensor data is", "bytes shorter than its header says"]),
        (
            lambda p: truncate(p, keep=0.9999),
            ["truncated: the tensor data is", "shorter than its header says"],
        ),
        (lambda p: truncate(p, keep=0.0), ["truncated: 0 bytes, too short for a safetensors header"]),
        (garble_header, ["corrupt safetensors header (not valid JSON"]),
    ],
    ids=["half", "last-bytes", "empty", "garbled-header"],
)
def test_damaged_target_weights(capsys, tmp_path, data_dir, damage, expected):
    target = copy_of(default_model(), tmp_path / "orthrus")
    damage(target / "model.safetensors")
    where = f"{target / 'model.safetensors'}: "
    check_both(capsys, tmp_path, data_dir, target, where, *expected, REFETCH, "hf download")


def test_garbled_header_length(capsys, tmp_path, data_dir):
    target = copy_of(default_model(), tmp_path / "orthrus")
    path = target / "model.safetensors"
    with open(path, "r+b") as f:
        f.write((10**12).to_bytes(8, "little"))
    check_both(
        capsys, tmp_path, data_dir, target, f"{path}: truncated or corrupt safetensors header", REFETCH
    )


@pytest.mark.parametrize("name", ["config.json", "generation_config.json"])
def test_config_that_is_not_json(capsys, tmp_path, data_dir, name):
    target = copy_of(default_model(), tmp_path / "orthrus")
    garble_json(target / name)  # the tiny family has no generation_config.json: this one is new
    check_both(
        capsys,
        tmp_path,
        data_dir,
        target,
        f"{target / name}: not valid JSON (line 2, column 18: Expecting value)",
        "fix it, or re-download it",
    )


def test_config_that_is_not_an_object(capsys, tmp_path, data_dir):
    target = copy_of(default_model(), tmp_path / "orthrus")
    (target / "config.json").write_text("[]\n")
    check_both(
        capsys, tmp_path, data_dir, target, f"{target / 'config.json'}: expected a JSON object, found a list"
    )


# --------------------------------------------------------------------------------------------- tokenizer


def test_missing_tokenizer_json(capsys, tmp_path, data_dir):
    target = copy_of(default_model(), tmp_path / "orthrus")
    (target / "tokenizer.json").unlink()
    check_both(
        capsys,
        tmp_path,
        data_dir,
        target,
        f"{target}: has tokenizer_config.json but no tokenizer.json",
        f"`hf download Qwen/Qwen3-8B tokenizer.json --local-dir {target}`",
    )


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_tokenizer_file_that_is_not_json(capsys, tmp_path, data_dir, name):
    target = copy_of(default_model(), tmp_path / "orthrus")
    garble_json(target / name)
    check_both(
        capsys, tmp_path, data_dir, target, f"{target / name}: not valid JSON (line 2", "the file is damaged"
    )


def test_tokenizer_json_of_the_wrong_shape(capsys, tmp_path, data_dir):
    target = copy_of(default_model(), tmp_path / "orthrus")
    (target / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": 5}))
    check_both(capsys, tmp_path, data_dir, target, f"{target}: its tokenizer files cannot be loaded")


def test_no_tokenizer_files_at_all_is_still_no_tokenizer(capsys, tmp_path, data_dir):
    """Without any tokenizer file there is no tokenizer (prompts must be token ids), as before: inspect says so
    and succeeds; a run, which needs the chat template, says so and exits 2."""
    target = copy_of(default_model(), tmp_path / "orthrus")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (target / name).unlink()
    assert load_tokenizer(target) is None
    assert main(["inspect", str(target)]) == 0
    assert "tokenizer    none (prompts must be token ids)" in capsys.readouterr().out
    code, err, out = run(capsys, tmp_path, data_dir, target)
    assert_clear_error("run", code, err, "has no tokenizer files")
    assert not out.exists()


def test_slow_tokenizer_vocabulary_is_left_to_transformers(tmp_path):
    """tokenizer_config.json with vocab.json and merges.txt but no tokenizer.json is a slow tokenizer's
    layout: not refused up front."""
    from orthrus_core.tokenizer import check_tokenizer_files

    for name in ("tokenizer_config.json", "vocab.json", "merges.txt"):
        (tmp_path / name).write_text("{}")
    check_tokenizer_files(tmp_path)
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        check_tokenizer_files(tmp_path)


# ----------------------------------------------------------------------------------------------- shards


def _damage_index(kind: str, directory: Path) -> list[str]:
    index = directory / INDEX_FILE
    if kind == "not-json":
        garble_json(index)
        return [f"{index}: not valid JSON (line 2"]
    if kind == "no-weight-map":
        index.write_text(json.dumps({"metadata": {"total_size": 1}}))
        return [f"{index}: no valid weight_map"]
    if kind == "missing-shard":
        shard = sorted(directory.glob("model-*-of-*.safetensors"))[1]
        shard.unlink()
        return [f"{index} lists shard files that are not there: ['{shard.name}']", "download is incomplete"]
    shard = sorted(directory.glob("model-*-of-*.safetensors"))[-1]
    truncate(shard)
    return [f"{shard}: truncated: the tensor data is"]


@pytest.mark.parametrize("kind", ["not-json", "no-weight-map", "missing-shard", "truncated-shard"])
def test_damaged_sharded_checkpoint(capsys, tmp_path, data_dir, sharded, kind):
    target = copy_of(sharded, tmp_path / "sharded")
    expected = _damage_index(kind, target)
    check_both(capsys, tmp_path, data_dir, target, *expected, "re-download")


# ------------------------------------------------------------------------------------------------ drafts


@pytest.mark.parametrize("draft", ["eagle3", "dflash"])
@pytest.mark.parametrize("damage", ["truncated", "garbled-header", "config-not-json"])
def test_damaged_draft(capsys, tmp_path, data_dir, draft, damage):
    directory = copy_of(TINY_DIR / draft, tmp_path / draft)
    weights, config = directory / "model.safetensors", directory / "config.json"
    if damage == "truncated":
        truncate(weights)
        expected = [f"{weights}: truncated: the tensor data is", REFETCH]
    elif damage == "garbled-header":
        garble_header(weights)
        expected = [f"{weights}: corrupt safetensors header", REFETCH]
    else:
        garble_json(config)
        expected = [f"{config}: not valid JSON (line 2, column 18", "fix it, or re-download it"]
    check_both(capsys, tmp_path, data_dir, directory, *expected, method=f"{draft}:draft={directory}")


def test_damaged_eagle3_bin_weights(capsys, tmp_path, data_dir):
    """EAGLE's other format, pytorch_model.bin, truncated."""
    directory = copy_of(TINY_DIR / "eagle3", tmp_path / "eagle3")
    torch.save(load_file(directory / "model.safetensors"), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    assert main(["inspect", str(directory)]) == 0, capsys.readouterr()
    capsys.readouterr()
    truncate(directory / "pytorch_model.bin")
    path = directory / "pytorch_model.bin"
    check_both(
        capsys,
        tmp_path,
        data_dir,
        directory,
        f"{path}: truncated or damaged, torch.load cannot read it",
        REFETCH,
        method=f"eagle3:draft={directory}",
    )


# ------------------------------------------------------------------------------------------------- units


def test_check_safetensors_rejects_bytes_after_the_last_tensor(tmp_path):
    path = tmp_path / "model.safetensors"
    shutil.copy(TINY_DIR / "dflash" / "model.safetensors", path)
    check_safetensors(path)
    with open(path, "ab") as f:
        f.write(b"\0" * 16)
    with pytest.raises(CorruptFileError, match="16 bytes follow the last tensor its header lists"):
        check_safetensors(path)


def test_refetch_hint_names_the_hub_repository_of_a_cached_file():
    path = Path("/cache/hub/models--Qwen--Qwen3-8B/snapshots/0123abc/model-00002-of-00005.safetensors")
    assert refetch_hint(path).startswith(
        "re-download it: `hf download Qwen/Qwen3-8B model-00002-of-00005.safetensors --force-download`"
    )
    local = refetch_hint(Path("/ckpt/model.safetensors"))
    assert "`hf download <owner/name> model.safetensors --local-dir /ckpt`" in local
