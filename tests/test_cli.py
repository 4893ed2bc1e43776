"""The orthrus-bench command line: generate and bench-engine."""

import json

import pytest
from conftest import random_model

from harness.cli import main
from orthrus_core.checkpoint import save_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_model(random_model(seed=2), tmp_path_factory.mktemp("ckpt") / "m")


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_generate_json_orthrus_equals_ar(checkpoint, capsys):
    common = [
        "generate",
        "--model",
        str(checkpoint),
        "--prompt-ids",
        "5,6,7",
        "--max-new-tokens",
        "25",
        "--json",
    ]
    orthrus = run_json(capsys, *common, "--method", "orthrus:block_size=4")
    ar = run_json(capsys, *common, "--method", "ar")
    assert orthrus["tokens"] == ar["tokens"] and len(ar["tokens"]) >= 1
    assert (orthrus["method"], ar["method"]) == ("orthrus:block_size=4", "ar")
    for spec in ("pld:num_draft_tokens=3", "ar-hf", "orthrus:cache=dynamic"):  # any registered method
        assert run_json(capsys, *common, "--method", spec)["tokens"] == ar["tokens"], spec
    for key in (
        "tokens",
        "text",
        "stop_reason",
        "accepted",
        "ar_forwards",
        "draft_forwards",
        "prefill_forwards",
        "prefill_s",
        "decode_s",
        "total_s",
        "tau",
        "tpf",
        "tokens_per_s",
    ):
        assert key in orthrus
    assert orthrus["ar_forwards"] == orthrus["draft_forwards"] == len(orthrus["accepted"])
    assert ar["draft_forwards"] == 0 and ar["accepted"] == []
    assert orthrus["text"] is None  # a checkpoint without tokenizer files


def test_generate_sampling_is_seeded(checkpoint, capsys):
    common = [
        "generate",
        "--model",
        str(checkpoint),
        "--prompt-ids",
        "5",
        "--max-new-tokens",
        "30",
        "--json",
        "--temperature",
        "1",
        "--top-k",
        "50",
        "--top-p",
        "0.95",
    ]
    a = run_json(capsys, *common, "--seed", "1")
    b = run_json(capsys, *common, "--seed", "1")
    c = run_json(capsys, *common, "--seed", "2")
    assert a["tokens"] == b["tokens"] != c["tokens"]


def test_generate_prints_tokens_and_summary(checkpoint, capsys):
    assert main(["generate", "--model", str(checkpoint), "--prompt-ids", "5,6", "--max-new-tokens", "5"]) == 0
    out, err = capsys.readouterr()
    assert len(out.split()) == 5 and "tau" in err and "tok/s" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prompt-ids", "1,99999"], "outside the vocabulary"),
        (["--prompt", "hello"], "has no tokenizer files"),
        (["--prompt-ids", "1", "--device", "cuda"], "no CUDA device"),
        (["--prompt-ids", "1", "--temperature", "-1"], "temperature must be >= 0"),
        (["--prompt-ids", "1", "--method", "medusa"], "unknown method 'medusa'"),
        (["--prompt-ids", "1", "--method", "orthrus:block=4"], "unknown option(s) block"),
        (["--prompt-ids", "1", "--method", "diffusion", "--temperature", "1"], "decodes greedily only"),
    ],
)
def test_generate_bad_input_exits_2_with_a_clear_message(checkpoint, capsys, argv, message):
    if "cuda" in argv:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    assert main(["generate", "--model", str(checkpoint), *argv]) == 2
    assert message in capsys.readouterr().err


def test_generate_missing_model_exits_2(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt-ids", "1"]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err


def test_bench_engine_prints_its_tables(checkpoint, capsys):
    assert (
        main(
            [
                "bench-engine",
                "--full",  # every baseline: ar-hf:cache=static too
                "--model",
                str(checkpoint),
                "--contexts",
                "16,32",
                "--repeats",
                "2",
                "--new-tokens",
                "6",
                "--block-sizes",
                "4",
                "--engines",
                "eager",
                "--batch-sizes",
                "1,3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "batched passes (engine eager)" in out and "ms / row" in out
    assert "engine eager" in out and "orthrus:cache=dynamic" in out and "ar-hf:cache=static" in out
    for header in (
        "roofline",
        "prefill s",
        "AR ms",
        "diffusion ms",
        "verify ms",
        "cycle / AR",
        "tokens/s",
        "identical",
    ):
        assert header in out
    assert "yes" in out and "NO" not in out


def test_an_engine_the_device_cannot_run_is_a_usage_error(capsys):
    assert main(["bench-engine", "--engines", "cudagraph"]) == 2
    assert "cudagraph needs a CUDA device" in capsys.readouterr().err
    assert main(["generate", "--prompt-ids", "1,2", "--engine", "cudagraph"]) == 2


@pytest.mark.parametrize("command", ["generate", "run", "bench-engine", "bench-overhead"])
def test_an_unknown_dtype_is_a_usage_error(capsys, command):
    with pytest.raises(SystemExit) as exit_status:
        main([command, "--dtype", "float64", *(["--prompt-ids", "1"] if command == "generate" else [])])
    assert exit_status.value.code == 2
    assert "unknown dtype 'float64'; choose one of float32, bfloat16, float16" in capsys.readouterr().err


def test_every_subcommand_is_registered():
    from harness.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    expected = {
        "generate",
        "run",
        "merge",
        "repair",
        "suites",
        "methods",
        "verify",
        "calibrate",
        "report",
        "compare",
    }
    expected |= {"dashboard"}
    assert set(commands) == expected | {
        "bench-engine",
        "bench-overhead",
        "bench-syncs",
        "train-tiny",
        "inspect",
    }


def test_methods_lists_the_registry_with_options(capsys):
    from harness.methods import METHODS

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS)
    assert (
        "eagle3:total_tokens=<int>  default 60" in out
        and "[lossy (verified: expected to fail identity), one prompt at a time, greedy only]" in out
    )
