"""Simulated weight quantization (orthrus_core.quantize, `run --quantize`): each format's error bound, what is
quantized, and a quantized run verified against `ar` of the same quantized model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from harness.cli import main
from harness.methods import load_target
from harness.report.page import write_report
from harness.report.quantize import quantization_tables
from harness.report.runs import generations, load_runs, units
from harness.run.runner import execute, prepare
from harness.run.spec import RunError, RunSpec
from harness.store import load_run, read_records
from harness.verify.config import VERDICTS, VerifyConfig
from harness.verify.verdicts import RunVerification, verify_main
from orthrus_core.quantize import FORMATS, GROUP, fake_quantize, quantize_, scales


@pytest.fixture(scope="module")
def weight():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 2 * GROUP + 40, generator=g) * 0.05  # a partial last int4 group
    w[3, 7] = 1.5  # an outlier: per-tensor and per-channel scales differ
    w[5] = 0.0  # an all-zero row stays zero
    return w


def test_int8_channel_error_is_at_most_half_a_step_per_row(weight):
    q, s = fake_quantize(weight, "int8-channel"), scales(weight, "int8-channel")
    assert s.shape == (weight.shape[0], 1)
    assert torch.all((q - weight).abs() <= s / 2 + 1e-7)
    codes = q / s
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 127 + 1e-4
    assert torch.all(q[5] == 0)


def test_int4_group_error_is_at_most_half_a_step_per_group(weight):
    q, s = fake_quantize(weight, "int4-group"), scales(weight, "int4-group")
    groups = -(-weight.shape[1] // GROUP)
    assert s.shape == (weight.shape[0], groups, 1)
    step = s.expand(-1, -1, GROUP).reshape(weight.shape[0], -1)[:, : weight.shape[1]]
    assert torch.all((q - weight).abs() <= step / 2 + 1e-7)
    codes = q / step
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 7 + 1e-4
    # one outlier coarsens its own group only
    assert step[3, 0] > 10 * step[3, GROUP] and step[4, 0] == pytest.approx(step[4, 0].item())


@pytest.mark.parametrize("fmt", ["fp8-tensor", "fp8-channel"])
def test_fp8_values_are_representable_in_e4m3(weight, fmt):
    q, s = fake_quantize(weight, fmt), scales(weight, fmt)
    assert s.numel() == (1 if fmt == "fp8-tensor" else weight.shape[0])
    codes = q / s
    # every value is an e4m3 value times the scale (up to the float32 rounding of the division)
    assert torch.allclose(codes.to(torch.float8_e4m3fn).float(), codes, rtol=1e-6, atol=0)
    assert codes.abs().max() <= 448 * (1 + 1e-6)
    # e4m3 has 3 mantissa bits: relative error <= 2^-4 for normal values
    normal = (weight / s).abs() >= 2**-6
    assert torch.all(((q - weight).abs() <= weight.abs() * 2**-4 + 1e-12)[normal])
    if fmt == "fp8-channel":  # rows without the outlier keep more precision than per-tensor gives them
        tensor_err = (fake_quantize(weight, "fp8-tensor") - weight).abs()
        assert (q - weight).abs()[10].mean() < tensor_err[10].mean()


def test_bad_format_is_refused():
    with pytest.raises(ValueError, match="int8-channel"):
        fake_quantize(torch.zeros(2, 2), "int3")


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_touches_linear_weights_only_and_is_idempotent(fmt):
    target = load_target(None)
    before = {k: v.clone() for k, v in target.model.state_dict().items()}
    done = quantize_(target.model, fmt)
    after = target.model.state_dict()
    assert done["format"] == fmt and done["quantized"] and done["skipped"] == ["lm_head"]
    assert any(n.endswith("q_proj_diff") for n in done["quantized"])  # both views
    assert any(n.endswith("mlp.down_proj") for n in done["quantized"])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith("_proj.weight") or k.endswith("_proj_diff.weight") for k in changed)
    assert "lm_head.weight" not in changed and "model.embed_tokens.weight" not in changed
    again = quantize_(target.model, fmt)
    assert again["quantized"] == [] and all(
        torch.equal(after[k], v) for k, v in target.model.state_dict().items()
    )


# Four tiny-math items, 64 tokens: fp8 per-tensor changes one of them (the tiny family is confident; most
# prompts keep their greedy tokens under every format).
SPEC = dict(suites=["tiny-math"], methods=["ar", "orthrus", "eagle3", "dflash"], limit=4, max_new_tokens=64)
FORMAT = "fp8-tensor"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantize")
    full = execute(RunSpec(**SPEC, warmup=0), root / "full", progress=False)
    quantized = execute(RunSpec(**SPEC, warmup=0, quantize=FORMAT), root / FORMAT, progress=False)
    return full, quantized


def outputs(run, method):
    return {r["item_id"]: r["output_ids"] for r in read_records(run) if r["method"] == method}


def test_a_quantized_run_is_lossless_against_ar_of_the_same_quantized_model(runs):
    full, quantized = runs
    run = load_run(quantized)
    assert run.config["quantize"] == FORMAT and "quantize" not in load_run(full).config
    assert run.config_hash != load_run(full).config_hash
    assert outputs(quantized, "ar") != outputs(full, "ar")  # the quantization changes the model's tokens
    for method in ("orthrus", "eagle3", "dflash"):
        assert outputs(quantized, method) == outputs(quantized, "ar"), method

    verification = RunVerification(quantized, VerifyConfig(decoders=False), None)
    assert verification.target.quantize == FORMAT  # verify reloads the target as the run quantized it
    reference = load_target(None, quantize=FORMAT).model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in verification.target.model.state_dict().items())

    assert verify_main(quantized, VerifyConfig(decoders=False)) == 0
    verdicts = json.loads((quantized / VERDICTS).read_text())
    greedy = [v for v in verdicts["verdicts"] if v["method"] != "ar"]
    assert {v["method"] for v in greedy} == {"orthrus", "eagle3", "dflash"}
    assert all(v["verdict"] == "PASS" for v in greedy)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--quantize", "int3"], "--quantize: unknown quantization format 'int3'"),
        (["--quantize", "fp8-tensor", "--methods", "ar,vllm-ar"], "vLLM loads the checkpoint itself"),
    ],
)
def test_bad_quantize_fails_before_anything_loads(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(["run", "--limit", "1", "--out", str(out), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_report_puts_each_format_beside_full_precision(runs, tmp_path):
    full, quantized = runs
    tables = quantization_tables(generations(load_runs([full, quantized])))
    assert len(tables) == 1
    table = tables[0]
    assert table.columns == ["method", "full precision", FORMAT]
    rows = {row[0]: row[1:] for row in table.rows}
    assert set(rows) == {"ar", "orthrus", "eagle3", "dflash"}
    for text in rows["ar"]:  # ar: no drafts (no τ), about one token per forward (the prefill's token over)
        assert text.startswith("– / ") and 1 <= float(text.removeprefix("– / ")) < 1.1
    for method in ("orthrus", "eagle3", "dflash"):
        for text in rows[method]:
            tau, tpf = (float(x) for x in text.split(" / "))
            assert tau > 1 and tpf > 0, (method, text)  # TPF counts draft forwards too (methodology.md)
    assert quantization_tables(generations(load_runs([quantized]))) == []  # one format: no table

    markdown = (write_report([str(full), str(quantized)], tmp_path / "report") / "report.md").read_text()
    assert "## Weight quantization" in markdown and f"| method | full precision | {FORMAT} |" in markdown
    # Every other table keeps the quantized model apart from full precision's: a headline each, with the
    # verdicts of its own run (the quantized run is not verified here, the full-precision one neither).
    assert "**Embedded tiny family, T=0**" in markdown  # under ## Headline
    assert f"**Embedded tiny family ({FORMAT} weights), T=0**" in markdown
    u = units(generations(load_runs([full, quantized])))
    assert len(u) == 2 * len(units(generations(load_runs([full]))))  # no unit sums two runs' generations


def test_a_prepared_target_must_be_quantized_as_the_run_says(tmp_path):
    spec = RunSpec(suites=["tiny-math"], methods=["ar"], limit=1, max_new_tokens=4, warmup=0)
    prepared = prepare(spec)
    with pytest.raises(RunError, match="--quantize int8-channel"):
        execute(dataclasses.replace(spec, quantize="int8-channel"), tmp_path / "run", prepared=prepared)
