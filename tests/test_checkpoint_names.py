"""How run.json names a checkpoint (harness.paths.checkpoint_name): relative to the repository where it lies
inside it, a hub id at its revision where it came from the hub cache, else its absolute path; and the readers
(verify's target loading, compare) that find it again from any working directory, run.json files that hold
absolute paths included."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.paths import PROJECT_ROOT, TINY_DIR, checkpoint_location, checkpoint_name, checkpoint_reference
from harness.run.runner import execute
from harness.run.spec import RunSpec
from harness.store import RunInfo, load_run
from orthrus_core.checkpoint import CheckpointError, resolve

SPEC = dict(suites=["tiny-math"], methods=["ar", "orthrus", "eagle3"], limit=2, max_new_tokens=12, warmup=0)


def test_a_checkpoint_is_named_by_where_it_lies(tmp_path):
    assert checkpoint_name(TINY_DIR / "orthrus") == {
        "path": "models/tiny/orthrus",
        "origin": "repository",
        "revision": None,
    }
    snapshot = tmp_path / "hub" / "models--chiennv--Orthrus-Qwen3-8B" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    assert checkpoint_name(snapshot) == {
        "path": "chiennv/Orthrus-Qwen3-8B",
        "origin": "hub",
        "revision": "0123abcd",
    }
    assert checkpoint_reference(snapshot) == "chiennv/Orthrus-Qwen3-8B@0123abcd"
    elsewhere = tmp_path / "ckpt"
    elsewhere.mkdir()
    assert checkpoint_name(elsewhere) == {"path": str(elsewhere), "origin": "local", "revision": None}


def test_a_named_checkpoint_is_found_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert checkpoint_location("models/tiny/orthrus", "repository") == str(
        PROJECT_ROOT / "models/tiny/orthrus"
    )
    assert resolve(checkpoint_location("models/tiny/orthrus", "repository")) == TINY_DIR / "orthrus"
    assert checkpoint_location("org/name", "hub", "abc") == "org/name@abc"
    # A run.json from before: an absolute path as it is, a relative one (relative to where that run ran) too
    assert checkpoint_location("/data/ckpt") == "/data/ckpt"
    assert checkpoint_location("ckpt") == "ckpt"
    info = RunInfo.from_dict(
        {"config": {}, "models": [{"role": "target", "path": str(TINY_DIR / "orthrus")}]}
    )
    assert info.target_path == str(TINY_DIR / "orthrus")
    target = {"role": "target", "path": "models/tiny/orthrus", "origin": "repository"}
    info = RunInfo.from_dict({"config": {}, "models": [target]})
    assert info.target_path == str(PROJECT_ROOT / "models/tiny/orthrus")
    # owner/name@revision is a hub id at that revision, and a bad one is still refused before any download
    with pytest.raises(CheckpointError, match="'a/b/c@x' is not a checkpoint directory"):
        resolve("a/b/c@x")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return execute(RunSpec(**SPEC), tmp_path_factory.mktemp("runs") / "run", progress=False)


def test_run_json_names_the_tiny_checkpoints_relative_to_the_repository(run_dir):
    run = load_run(run_dir)
    names = {m["role"]: (m["path"], m["origin"]) for m in run.models}
    assert names == {
        "target": ("models/tiny/orthrus", "repository"),
        "eagle3:draft": ("models/tiny/eagle3", "repository"),
    }
    assert all(len(m["weights"]["model.safetensors"]) == 64 for m in run.models)  # sha256 beside the name
    eagle3 = run.methods["eagle3"]
    assert eagle3["checkpoints"] == {"target": "models/tiny/orthrus", "draft": "models/tiny/eagle3"}
    assert eagle3["config"]["draft"] == "models/tiny/eagle3"  # the found draft's option, named the same way
    assert run.methods["ar"]["checkpoints"] == {"target": "models/tiny/orthrus"}
    assert str(PROJECT_ROOT) not in (run_dir / "run.json").read_text()


def as_absolute(run_dir, out):
    """The run with its run.json as the code before names wrote it: absolute paths, no origin."""
    out.mkdir()
    for name in ("records.jsonl", "run.json"):
        (out / name).write_bytes((run_dir / name).read_bytes())
    data = json.loads((out / "run.json").read_text())
    for m in data["models"]:
        del m["origin"]
        m["path"] = str(PROJECT_ROOT / m["path"])
    for entry in data["methods"].values():
        entry["checkpoints"] = {k: str(PROJECT_ROOT / v) for k, v in entry["checkpoints"].items()}
        if "draft" in entry["config"]:
            entry["config"]["draft"] = str(PROJECT_ROOT / entry["config"]["draft"])
    (out / "run.json").write_text(json.dumps(data, indent=2))
    return out


def test_verify_and_compare_find_the_checkpoints_from_another_directory(
    run_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # where models/tiny/orthrus is not
    assert main(["verify", str(run_dir)]) == 0
    verdicts = json.loads((run_dir / "verdicts.json").read_text())["verdicts"]
    assert {v["method"]: v["verdict"] for v in verdicts} == {"orthrus": "PASS", "eagle3": "PASS"}

    old = as_absolute(run_dir, tmp_path / "old")
    assert load_run(old).target_path == str(PROJECT_ROOT / "models/tiny/orthrus")
    assert main(["verify", str(old)]) == 0
    verdicts = json.loads((old / "verdicts.json").read_text())["verdicts"]
    assert {v["method"]: v["verdict"] for v in verdicts} == {"orthrus": "PASS", "eagle3": "PASS"}

    # compare: the checkpoints by their weights, however each run.json names them
    capsys.readouterr()
    assert main(["compare", str(old), str(run_dir), "--no-timing-gate"]) == 0
    assert "The two runs' configurations are the same." in capsys.readouterr().out
