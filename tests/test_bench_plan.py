"""`bench-engine` without arguments: the quick plan on a CPU (eager, few repeats, short generations, no
baseline that compiles), the full one by flag or on a GPU, and no library noise from the compile engine's
autotuning (its stats JSON and torch's TypedStorage warning, each silenced at its source)."""

from __future__ import annotations

import json
import warnings

import torch

from harness.bench.engine_bench import BASELINES, FULL_CPU, FULL_GPU, QUICK, default_plan
from harness.cli import build_parser, main
from orthrus_core.compiled import quiet_autotuning
from orthrus_core.engine import compile_options


def test_the_no_argument_plan_is_the_quick_one():
    args = build_parser().parse_args(["bench-engine"])
    given = (args.shape, args.model, args.device, args.full, args.engines, args.contexts, args.block_sizes)
    assert given == ("small", None, "cpu", False, None, None, None)
    assert (args.repeats, args.new_tokens, args.batch_sizes) == (None, None, None)  # from the plan
    assert default_plan(args.device, args.full) is QUICK
    assert QUICK.engines == ("eager",)  # nothing compiles
    assert QUICK.baselines == ("ar-hf", "orthrus:cache=dynamic")  # not ar-hf:cache=static, which compiles
    assert (QUICK.repeats, QUICK.new_tokens, QUICK.random_prompts) == (10, 16, 4)
    assert QUICK.contexts == (64, 256, 1024)


def test_the_full_plan_by_flag_and_on_a_gpu():
    assert default_plan("cpu", full=True) is FULL_CPU and default_plan("cuda") is FULL_GPU
    assert build_parser().parse_args(["bench-engine", "--full"]).full is True
    assert default_plan("cuda:0", full=False) is FULL_GPU
    for plan in (FULL_CPU, FULL_GPU):
        assert plan.engines is None  # every mode the device runs
        assert plan.baselines == BASELINES and (plan.repeats, plan.new_tokens) == (20, 128)
    assert FULL_GPU.contexts[-1] == 40000 and FULL_GPU.block_sizes == (16, 32)


def test_the_quick_plan_runs_eager_with_its_baselines_and_prints_no_library_noise(tmp_path, capfd):
    out = tmp_path / "figures.json"
    argv = ["bench-engine", "--contexts", "16", "--repeats", "1", "--new-tokens", "4", "--json", str(out)]
    assert main(argv) == 0
    figures = json.loads(out.read_text())
    assert list(figures["modes"]) == ["eager"]
    assert list(figures["baselines"]) == ["ar-hf", "orthrus:cache=dynamic"]
    assert all(row["identical_to_ar"] for row in figures["baselines"].values())
    stdout, stderr = capfd.readouterr()
    assert "identical to ar" in stdout and "vs ar-hf:cache=static" not in stdout
    for noise in ("Autotune", "TypedStorage", "Warning"):
        assert noise not in stdout + stderr


def test_inductor_is_told_not_to_write_its_autotune_stats():
    options = compile_options(torch.device("cpu"))
    assert options["max_autotune"] is True and options["autotune_num_choices_displayed"] == 0
    if hasattr(torch._inductor.config, "max_autotune_report_choices_stats"):
        assert options["max_autotune_report_choices_stats"] is False
    # each option is one this torch knows (torch._inductor.config.patch refuses others)
    with torch._inductor.config.patch(options):
        pass


def storage_from(module: str) -> list[warnings.WarningMessage]:
    """The warnings of torch's deprecated `tensor.storage()` called from code of `module`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_autotuning()
        exec(compile("torch.empty(1).storage()", "x.py", "exec"), {"__name__": module, "torch": torch})
    return [w for w in caught if "TypedStorage is deprecated" in str(w.message)]


def test_the_typed_storage_warning_is_silenced_only_from_inductors_autotuning(monkeypatch):
    monkeypatch.setattr(torch.storage, "_always_warn_typed_storage_removal", True)  # not only once a process
    assert storage_from("torch._inductor.select_algorithm") == []
    assert len(storage_from("some.user.module")) == 1  # anyone else's call still warns
