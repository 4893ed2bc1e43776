"""`verify` end to end on a constructed run directory: a lossless method passes at T = 0 and T = 1, a lossy
one fails with its accuracy difference stated, and the exit status follows the lossless methods only."""

import json

import pytest
import torch
from synthetic_runs import generation_record

from harness.cli import main
from harness.methods import make_decoder
from harness.methods.target import Target
from harness.suites.config import read_suite_file
from harness.suites.suite import suite_files_dir
from harness.verify.calibrate import decoder
from harness.verify.config import VERDICTS, VerifyConfig
from harness.verify.verdicts import verify_main
from orthrus_core.checkpoint import save_model
from orthrus_core.jsonfile import write_json
from orthrus_core.micro import micro_model
from orthrus_core.params import SamplingParams

SUITE = "tiny-math"  # decoded greedy
SAMPLED = "tiny-math-t1"  # the same suite at temperature 1 (a run has one temperature per suite)
MAX_NEW = 24
ITEMS = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    save_model(micro_model(), directory)
    return directory


def prompts():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(4, 300, (8,), generator=g).tolist() for _ in range(ITEMS)]


def records_of(label, generate, temperature, samples, correct, *, lossless=True):
    """One unit per item and sample; a run's samples at T=1 are numbered after its greedy sample 0, as the store
    counts a unit (suite, item, method, sample) once."""
    out = []
    first = 0 if temperature == 0 else 1
    suite = SUITE if temperature == 0 else SAMPLED
    for k, prompt in enumerate(prompts()):
        for s in range(samples):
            r = generate(prompt, MAX_NEW, SamplingParams(temperature), seed=1000 * s + k, stop_token_ids=[3])
            out.append(
                generation_record(
                    suite=suite,
                    item_id=f"{suite}/{k}",
                    method=label,
                    method_name=label.split(":")[0],
                    lossless=lossless,
                    sample=first + s,
                    temperature=temperature,
                    prompt_ids=prompt,
                    output_ids=r.tokens,
                    stop_reason=r.stop_reason,
                    accepted=r.accepted,
                    acceptance_trace=r.acceptance_trace,
                    score_correct=correct(k, s),
                )
            )
    return out


def corrupt(generate):
    """A lossy decoder: AR's output with every fifth token replaced by a token the model finds unlikely."""

    def lossy(prompt, max_new, *args, **kw):
        r = generate(prompt, max_new, *args, **kw)
        r.tokens = [(t + 7) % 300 + 4 if i % 5 == 4 else t for i, t in enumerate(r.tokens)]
        return r

    return lossy


def write_run(directory, model_dir, records):
    directory.mkdir()
    with open(directory / "records.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r.to_json()) + "\n")
    raw = read_suite_file(suite_files_dir() / f"{SUITE}.toml")
    sampled = {**raw, "generation": {**raw["generation"], "temperature": 1.0}}
    lossless = {label: r.lossless for r in records for label in [r.method]}
    write_json(
        directory / "run.json",
        {
            "config": {
                "dtype": "float32",
                "temperature": None,
                "top_k": None,
                "top_p": None,
                "max_new_tokens": MAX_NEW,
                "samples": 9,
            },
            "models": [{"role": "target", "path": str(model_dir)}],
            "suites": {SUITE: {"config": raw}, SAMPLED: {"config": sampled}},
            "methods": {label: {"name": label, "lossless": flag} for label, flag in lossless.items()},
        },
    )
    return directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model_dir):
    target = Target.of(micro_model(), "micro")
    ar, orthrus = make_decoder("ar", target).generate, decoder(target, 4)
    ar_correct = lambda k, s: k < 4  # noqa: E731
    records = []
    for temperature, samples in ((0.0, 1), (1.0, 8)):
        records += records_of("ar", ar, temperature, samples, ar_correct)
        records += records_of("orthrus", orthrus, temperature, samples, ar_correct)
        records += records_of(
            "diffusion", corrupt(ar), temperature, samples, lambda k, s: k < 1, lossless=False
        )
    return write_run(tmp_path_factory.mktemp("runs") / "run", model_dir, records)


def by_key(result):
    return {(v["method"], v["temperature"]): v for v in result["verdicts"]}


def test_verify_writes_verdicts_and_explains_the_lossy_failure(run_dir, capsys):
    assert verify_main(run_dir, VerifyConfig(decoders=False)) == 0  # the lossy method's failure is expected
    result = json.loads((run_dir / VERDICTS).read_text())
    verdicts = by_key(result)
    assert set(verdicts) == {("orthrus", 0.0), ("orthrus", 1.0), ("diffusion", 0.0), ("diffusion", 1.0)}

    greedy = verdicts["orthrus", 0.0]
    assert greedy["verdict"] == "PASS" and greedy["greedy"]["identical"] == ITEMS
    assert greedy["accuracy"]["test"] == "exact McNemar" and greedy["accuracy"]["discordant"] == [0, 0]

    sampling = verdicts["orthrus", 1.0]
    assert sampling["verdict"] == "PASS" and sampling["sampling"]["tokens"] > 500
    names = {t["name"] for t in sampling["sampling"]["tests"]}
    assert {"T1 PIT KS", "T1 PIT CvM", "T3 surprisal z", "T4 log-prob KS", "T4 length permutation"} <= names
    assert all(t["n"] > 0 for t in sampling["sampling"]["tests"])
    assert 0 < sampling["sampling"]["min_detectable_tv"] < 1

    lossy = verdicts["diffusion", 0.0]
    assert lossy["verdict"] == "FAIL" and lossy["greedy"]["algorithmic_events"] >= 1
    assert lossy["greedy"]["first_divergences"][0]["index"] == 4
    assert lossy["accuracy"]["difference"] == pytest.approx(-0.5)
    assert "difference -50.0 points" in lossy["summary"] and "not a lossless decoder" in lossy["summary"]
    assert verdicts["diffusion", 1.0]["verdict"] == "FAIL"

    printed = capsys.readouterr().out
    assert "diffusion (lossy)" in printed and "FAILS" in printed and "-50.0 points" in printed


def test_a_failing_lossless_method_sets_the_exit_status(tmp_path, model_dir):
    ar = make_decoder("ar", Target.of(micro_model(), "micro")).generate
    records = records_of("ar", ar, 0.0, 1, lambda k, s: True)
    records += records_of("broken", corrupt(ar), 0.0, 1, lambda k, s: True)
    run = write_run(tmp_path / "run", model_dir, records)
    assert verify_main(run, VerifyConfig(decoders=False, tie_paths=1)) == 1


def test_decoders_resynchronise_and_run_t2(run_dir, model_dir, tmp_path):
    """With decoders, greedy divergences are counted after re-syncs and T2 joins the sampling family."""
    target = Target.of(micro_model(), "micro")
    factory = {"orthrus": decoder(target, 4), "diffusion": corrupt(make_decoder("ar", target).generate)}.get
    out = tmp_path / "verdicts.json"
    verify_main(run_dir, VerifyConfig(t2_samples=150, t2_depth=2, tie_paths=1), out, decoder_factory=factory)
    verdicts = by_key(json.loads(out.read_text()))
    lossy = verdicts["diffusion", 0.0]["greedy"]
    assert lossy["resynced"] and lossy["algorithmic_events"] > lossy["algorithmic_prompts"]
    names = [t["name"] for t in verdicts["orthrus", 1.0]["sampling"]["tests"]]
    assert "T2 G-test position 0" in names
    assert verdicts["orthrus", 1.0]["verdict"] == "PASS"


def test_command_line_arguments(run_dir, tmp_path, capsys):
    out = tmp_path / "v.json"
    argv = ["verify", str(run_dir), "--no-decoders", "--out", str(out), "--alpha", "0.05", "--tie-paths", "1"]
    assert main(argv) == 0
    assert json.loads(out.read_text())["alpha"] == 0.05


@pytest.mark.parametrize(
    "option, message",
    [("--alpha=0", "alpha must be in (0, 1)"), ("--margin=-0.1", "margin"), ("--t2-depth=0", "t2_depth")],
)
def test_bad_settings_exit_2_before_anything_is_loaded(tmp_path, capsys, option, message):
    assert main(["verify", str(tmp_path / "no-such-run"), option]) == 2
    assert message in capsys.readouterr().err


def test_progress_goes_to_stderr_stage_by_stage_and_quiet_silences_it(run_dir, model_dir, tmp_path, capsys):
    """verify says what it is doing and how far it is, on stderr (stdout carries the table); --quiet leaves
    stderr to the line naming what was written."""
    target = Target.of(micro_model(), "micro")
    factory = {"orthrus": decoder(target, 4), "diffusion": corrupt(make_decoder("ar", target).generate)}.get
    out = tmp_path / "v.json"
    config = VerifyConfig(tie_paths=1, t2_samples=20, t2_depth=1)
    verify_main(run_dir, config, out, decoder_factory=factory)
    printed = capsys.readouterr()
    err = printed.err.splitlines()
    records = ITEMS * (1 + 8) * 3  # greedy and 8 samples, 3 methods
    assert err[0] == f"verify: {records} records of {run_dir}; loading the target {model_dir} (float32, cpu)"
    expected = [
        "verify: near-tie study, tiny-math: 0/1 paths",
        "verify: near-tie study, tiny-math: 1/1 paths, done in",
        "verify 1/4: diffusion on tiny-math at T=0, token identity, re-synchronising after divergences: "
        f"{ITEMS}/{ITEMS} prompts, done in",
        "verify 2/4: diffusion on tiny-math-t1 at T=1, T2 draws at a fixed context: 0/20 draws",
        f"verify 2/4: diffusion on tiny-math-t1 at T=1, T1 T3 T4 T5 over its and ar's sequences: 0/{16 * ITEMS}",
        "verify 3/4: orthrus on tiny-math at T=0, token identity",
        "verify 4/4: orthrus on tiny-math-t1 at T=1, T2 draws at a fixed context: 20/20 draws, done in",
        f"wrote {out}",
    ]
    for line in expected:
        assert any(e.startswith(line) for e in err), (line, err)
    assert len(err) < 30  # a few lines per stage, not a line per step
    assert not [line for line in printed.out.splitlines() if line.startswith(("verify:", "verify 1/4"))]
    assert "verify " in printed.out  # the table's title

    argv = ["verify", str(run_dir), "--no-decoders", "--tie-paths", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert capsys.readouterr().err == f"wrote {out}\n"
