"""Fault injection, continued (test_faults.py's style): inputs a new user gives that used to run something else,
end in a traceback, or advise what cannot work. Each case runs the real command line and asserts the exit code,
the message, and that nothing was written or lost."""

from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from command_line import cli

from harness.cli import build_parser, main
from harness.store import RECORDS, RUN, read_records

ROOT = Path(__file__).resolve().parents[1]
TINY_MATH = ROOT / "suites" / "tiny-math.toml"

# Four units (2 items x 2 methods), a few tokens each: about a second on 2 cores (test_faults.RUN_ARGS).
BASE = ["--limit", "2", "--max-new-tokens", "8", "--warmup", "0"]
RUN_ARGS = ["--suite", "tiny-math", "--methods", "ar,pld", *BASE]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("inputs") / "run"
    assert main(["run", *RUN_ARGS, "--out", str(out), "--no-verify"]) == 0
    assert len(read_records(out)) == 4
    return out


@pytest.fixture
def half_run(finished_run, tmp_path) -> Path:
    """A copy of the finished run with its first two units only (two left for --resume)."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    kept = (out / RECORDS).read_bytes().splitlines()[:2]
    (out / RECORDS).write_bytes(b"\n".join(kept) + b"\n")
    return out


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


# ------------------------------------------------------------------------ 1. empty lists of names


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--methods", "", "argument --methods: empty; give one or more method specs"),
        ("--methods", " ", "argument --methods: empty; give one or more method specs"),
        ("--methods", "ar,,pld", "argument --methods: 'ar,,pld' has an empty item"),
        ("--methods", "ar,", "argument --methods: 'ar,' has an empty item"),
        ("--suite", "", "argument --suite: empty; give one or more suite names"),
        ("--suite", "tiny-math,,tiny-code", "argument --suite: 'tiny-math,,tiny-code' has an empty item"),
        ("--ids", "", "argument --ids: empty; give one or more dataset ids"),
    ],
)
def test_an_empty_list_of_methods_or_suites_is_refused_not_read_as_the_default(
    capsys, tmp_path, flag, value, message
):
    out = tmp_path / "out"
    argv = {"--suite": "tiny-math", "--methods": "ar,pld", flag: value}
    code, printed = cli(capsys, "run", *[x for kv in argv.items() for x in kv], *BASE, "--out", out)
    assert code == 2 and message in printed and "Traceback" not in printed, printed
    listing = {
        "--methods": "`orthrus-bench methods` lists them",
        "--suite": "`orthrus-bench suites` lists them",
    }
    assert listing.get(flag, "") in printed
    assert not out.exists()


def test_other_commands_refuse_an_empty_method_list_too(capsys):
    for argv in (["bench-overhead", "--methods", ""], ["bench-syncs", "--methods", "ar,,pld"]):
        code, printed = cli(capsys, *argv)
        assert code == 2 and "argument --methods:" in printed and "lists them" in printed, (argv, printed)


# ------------------------------------------------------------------ 2. a builtin dataset's arguments


def records(count: int):
    """A generator without annotations or defaults: only the keys are checked."""
    yield from ({"id": str(i), "problem": "1 + 1", "answer": "2"} for i in range(count))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "args = { count = 200 }",
            'args = { count = "200" }',
            "[dataset.builtin] args.count: must be an integer, as "
            "orthrus_core.training.tiny_corpus:heldout_math takes its count, not '200' (quoted: write it "
            "without the quotes)",
        ),
        (
            "args = { count = 200 }",
            "args = { count = true }",
            "[dataset.builtin] args.count: must be an integer",
        ),
        (
            "args = { count = 200 }",
            "args = { count = 2.5 }",
            "[dataset.builtin] args.count: must be an integer",
        ),
        (
            "args = { count = 200 }",
            "args = { count = 200, seed = 1 }",
            "[dataset.builtin] args.seed: orthrus_core.training.tiny_corpus:heldout_math takes no argument "
            "'seed'; its arguments: count",
        ),
        (
            'function = "orthrus_core.training.tiny_corpus:heldout_math"\nargs = { count = 200 }',
            f'function = "{__name__}:records"\nargs = {{ cont = 2 }}',
            f"[dataset.builtin] args.cont: {__name__}:records takes no argument 'cont'; its arguments: count",
        ),
        (
            'function = "orthrus_core.training.tiny_corpus:heldout_math"\nargs = { count = 200 }',
            f'function = "{__name__}:records"',
            f"[dataset.builtin] args: {__name__}:records needs count; add them to args",
        ),
    ],
)
def test_a_builtin_datasets_bad_argument_names_the_file_and_key(capsys, tmp_path, old, new, message):
    text = TINY_MATH.read_text()
    assert old in text
    suite = tmp_path / "my-math.toml"
    suite.write_text(text.replace(old, new))
    out = tmp_path / "out"
    code, printed = cli(capsys, "run", "--suite", suite, "--methods", "ar", *BASE, "--out", out)
    assert code == 2 and f"{suite}: {message}" in printed and "Traceback" not in printed, printed
    assert not out.exists()


def test_a_builtin_datasets_right_arguments_still_load(capsys, tmp_path):
    from harness.suites import load_suite

    suite = tmp_path / "few.toml"
    suite.write_text(
        TINY_MATH.read_text().replace(
            'function = "orthrus_core.training.tiny_corpus:heldout_math"\nargs = { count = 200 }',
            f'function = "{__name__}:records"\nargs = {{ count = 3 }}',
        )
    )
    assert [item.id for item in load_suite(suite).items()] == ["few/0", "few/1", "few/2"]


# ----------------------------------------------------------- 3. an --out that cannot be written


def test_out_under_a_file_says_to_choose_another_out_not_resume(capsys, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    for out in (a_file / "run", a_file / "deeper" / "run"):
        code, printed = cli(capsys, "run", *RUN_ARGS, "--out", out)
        assert code == 2 and "Traceback" not in printed, printed
        assert f"--out {out}: {a_file} is a file, not a directory; choose another --out" in printed
        assert "--resume" not in printed
    assert a_file.read_text() == "not a directory\n" and sorted(tmp_path.iterdir()) == [a_file]


def _writes(flags: int | str) -> bool:
    if isinstance(flags, str):
        return any(c in flags for c in "wax+")
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))


@contextlib.contextmanager
def read_only(directory: Path, monkeypatch, files_too: bool):
    """`directory` made read-only (chmod a-w; its files too with files_too), as a user finds a copied or
    archived run. Root writes through permission bits, so for root (the CI's user) an open for writing under
    `directory` is refused as the kernel refuses it to anyone else: EACCES where the file, or for a new file
    its directory, has no write bit."""
    paths = [directory, *(directory.iterdir() if files_too else [])]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        os.chmod(p, stat.S_IMODE(modes[p]) & ~0o222)
    if os.geteuid() == 0:
        real_open, real_os_open = builtins.open, os.open

        def refused(path) -> bool:
            if isinstance(path, int):
                return False
            path = Path(os.fsdecode(path)).absolute()
            if directory.absolute() not in path.parents:
                return False
            return not (path if path.exists() else path.parent).stat().st_mode & stat.S_IWUSR

        def fake_open(file, mode="r", *args, **kwargs):
            if _writes(mode) and refused(file):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(file))
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if _writes(flags) and refused(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            return real_os_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
    try:
        yield
    finally:
        monkeypatch.undo()
        for p, mode in modes.items():
            os.chmod(p, stat.S_IMODE(mode))


def test_resuming_a_read_only_run_says_to_make_it_writable_and_changes_nothing(capsys, half_run, monkeypatch):
    """chmod -R a-w: the writer lock cannot be taken, before anything is read or written."""
    before = snapshot(half_run)
    with read_only(half_run, monkeypatch, files_too=True):
        code, printed = cli(capsys, "run", *RUN_ARGS, "--out", half_run, "--resume", "--no-verify")
    assert code == 2 and "Traceback" not in printed, printed
    assert f"--out {half_run} cannot be written (Permission denied: {half_run}/.writer.lock)" in printed
    assert f"nothing was written: make {half_run} writable (e.g. chmod -R u+w {half_run})" in printed
    assert "or choose another --out" in printed and "the same command" not in printed
    assert snapshot(half_run) == before
    code, printed = cli(capsys, "run", *RUN_ARGS, "--out", half_run, "--resume", "--no-verify")
    assert code == 0 and len(read_records(half_run)) == 4, printed  # once writable, it runs the rest


def test_a_read_only_run_directory_with_writable_files_fails_before_any_unit(capsys, half_run, monkeypatch):
    """chmod a-w on the directory alone: the lock and records.jsonl open, run.json cannot be replaced (its
    new copy is a new file). Exit 2, the advice to make it writable then resume; no record written."""
    records, run_json = (half_run / RECORDS).read_bytes(), (half_run / RUN).read_bytes()
    with read_only(half_run, monkeypatch, files_too=False):
        code, printed = cli(capsys, "run", *RUN_ARGS, "--out", half_run, "--resume", "--no-verify")
    assert code == 2 and "Traceback" not in printed, printed
    assert "error: [Errno 13] Permission denied" in printed and f".run.json.{os.getpid()}.partial" in printed
    assert f"{half_run} cannot be written: make it writable (e.g. chmod -R u+w {half_run})" in printed
    assert f"The finished units are kept in {half_run}: once it is writable, the same command runs" in printed
    assert (half_run / RECORDS).read_bytes() == records and (half_run / RUN).read_bytes() == run_json
    assert not list(half_run.glob(".*.partial"))
    code, printed = cli(capsys, "run", *RUN_ARGS, "--out", half_run, "--resume", "--no-verify")
    assert code == 0 and len(read_records(half_run)) == 4, printed


# ------------------------------------------------------------------ 4. orthrus-lm-eval without lm-eval


def test_orthrus_lm_eval_without_lm_eval_names_the_extra(capsys, monkeypatch):
    import tomllib

    import harness.lm_eval

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["orthrus-lm-eval"] == "harness.lm_eval:main"  # importable without lm-eval
    assert harness.lm_eval.EXTRA in project["optional-dependencies"]
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if lm-eval were not installed
    for argv in (["--help"], ["--model", "orthrus", "--tasks", "gsm8k"]):
        assert harness.lm_eval.main(argv) == 2
        err = capsys.readouterr().err
        assert "orthrus-lm-eval: error: lm-eval is not installed" in err
        assert "pip install -e '.[lm-eval]'" in err and "Traceback" not in err


def test_python_m_harness_lm_eval_without_lm_eval_exits_2():
    hide = "import runpy, sys; sys.modules['lm_eval'] = None; runpy.run_module('harness.lm_eval', run_name='__main__')"
    done = subprocess.run(
        [sys.executable, "-c", hide, "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "pip install -e '.[lm-eval]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------- 5. a report of a 1-token run


def test_the_report_of_a_one_token_run_prints_no_warning(capsys, tmp_path):
    run = tmp_path / "one-token"
    code, printed = cli(capsys, "run", *RUN_ARGS, "--max-new-tokens", "1", "--out", run, "--no-verify")
    assert code == 0, printed
    assert all(
        r["new_tokens"] == 1 and r["draft_forwards"] + r["ar_forwards"] == 0 for r in read_records(run)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning, a NumPy divide-by-zero included, fails the command
        code, printed = cli(capsys, "report", run, "--out", tmp_path / "report")
    assert code == 0 and "Warning" not in printed and "Traceback" not in printed, printed
    table = (tmp_path / "report" / "report.md").read_text()
    rows = [
        line for line in table.splitlines() if line.startswith("| embedded tiny family | tiny-math | pld")
    ]
    assert rows and rows[0].split(" | ")[5:7] == ["–", "–"]  # τ and TPF undefined, no interval of inf


def test_pooled_figures_without_forwards_are_undefined_without_dividing_by_zero():
    import numpy as np

    from harness.report.stats import bootstrap_ci, pooled_tau, pooled_tpf

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(pooled_tpf([1, 1], [0, 0])) and np.isnan(pooled_tau([0, 0], [0, 0]))
        assert float(pooled_tpf([3, 1], [2, 0])) == 2.0 and float(pooled_tau([2, 0], [1, 0])) == 3.0
        resamples = pooled_tpf(np.array([[1, 1], [3, 1]]), np.array([[0, 0], [2, 0]]))
        assert np.isnan(resamples[0]) and resamples[1] == 2.0
        assert bootstrap_ci(pooled_tpf, [1, 1, 1], [0, 0, 0]) is None
        # Some resamples draw only one-token items (1 in 16 here): left out of the percentiles, not inf or NaN.
        low, high = bootstrap_ci(pooled_tpf, [5, 1, 4, 1], [2, 0, 2, 0])
        assert (
            2.0 <= low <= 2.5 <= high <= 4.0
        )  # 2.5 pooled; 4: one 5-token item of 2 forwards, three 1-token


# -------------------------------------------------------------------------- 6. SIGTERM during a run


def test_sigterm_is_handled_as_ctrl_c_and_the_handler_is_restored(capsys, tmp_path, monkeypatch):
    from harness.run import runner

    out = tmp_path / "run"
    real = runner.unit_records
    calls = {"n": 0}

    def terminated(*args, **kwargs):  # SIGTERM while the third unit is being recorded
        calls["n"] += 1
        if calls["n"] == 3:
            # were the handler not installed, the signal would end the test process: refuse instead
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs (and raises) before this returns
        return real(*args, **kwargs)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(runner, "unit_records", terminated)
    code, printed = cli(capsys, "run", *RUN_ARGS, "--out", out)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) == before  # only for the run's duration
    assert code == 143, printed
    assert (
        f"run: terminated (SIGTERM); the finished units are kept in {out}: the same command with --resume"
        in printed
    )
    assert len(read_records(out)) == 2 and json.loads((out / RUN).read_text())["status"] == "interrupted"
    code, printed = cli(capsys, "run", *RUN_ARGS, "--out", out, "--resume", "--no-verify")
    assert code == 0 and len(read_records(out)) == 4, printed


def test_sigterm_to_a_real_run_marks_it_interrupted_and_keeps_its_units(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--suite", "tiny-math", "--methods", "ar,pld", "--limit", "3", "--max-new-tokens", "16"]
    argv += ["--warmup", "0", "--out", str(out), "--no-verify"]
    run = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *argv],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ((out / RECORDS).exists() and (out / RECORDS).read_bytes().count(b"\n") >= 1):
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before its first unit"
            time.sleep(0.02)
        run.send_signal(signal.SIGTERM)
        code, err = run.wait(timeout=60), run.stderr.read()
    finally:
        if run.poll() is None:
            run.kill()
    assert code == 143, err
    assert (
        f"terminated (SIGTERM); the finished units are kept in {out}: the same command with --resume" in err
    )
    assert "Traceback" not in err
    assert json.loads((out / RUN).read_text())["status"] == "interrupted"
    kept = read_records(out)  # every line a good record (the unit being written left out)
    assert 1 <= len(kept) < 6
    code, printed = cli(capsys, *argv, "--resume")
    assert code == 0, printed
    done = read_records(out)
    assert len(done) == 6 and done[: len(kept)] == kept


# -------------------------------------------------------------- no prefix matching of options


def test_an_abbreviated_option_is_refused_not_read_as_another(capsys, tmp_path):
    code, printed = cli(capsys, "generate", "--mode", "ar", "--prompt-ids", "1,2,3")
    assert code == 2 and "unrecognized arguments: --mode ar" in printed, printed  # not --model ar
    code, printed = cli(capsys, "run", *RUN_ARGS, "--limi", "1", "--out", tmp_path / "out")
    assert code == 2 and "unrecognized arguments: --limi 1" in printed and not (tmp_path / "out").exists()


def test_every_parser_of_the_command_line_refuses_abbreviations():
    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    found = list(parsers(build_parser()))
    assert len(found) > 10 and all(not p.allow_abbrev for p in found), [
        p.prog for p in found if p.allow_abbrev
    ]


def test_every_argument_parser_the_project_makes_refuses_abbreviations():
    """Read off the source: every argparse.ArgumentParser(...) call outside harness/cli/args.py (whose
    ArgumentParser every orthrus-bench parser is) passes allow_abbrev=False."""
    files = [ROOT / "noxfile.py", *sorted((ROOT / "benchmarks").glob("*.py"))]
    files += [p for p in sorted((ROOT / "harness").rglob("*.py")) if p != ROOT / "harness/cli/args.py"]
    calls = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "ArgumentParser":
                ok = any(
                    k.arg == "allow_abbrev" and isinstance(k.value, ast.Constant) and k.value.value is False
                    for k in node.keywords
                )
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert len(calls) >= 3 and all(ok for _, ok in calls), calls


def test_a_benchmark_script_refuses_an_abbreviation(capsys, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # as when run (test_gpu_check's fixture)
    spec.loader.exec_module(gpu_check)
    with pytest.raises(SystemExit) as exit:
        gpu_check.main(["--out", "somewhere", "--rehears"])
    assert exit.value.code == 2 and "unrecognized arguments: --rehears" in capsys.readouterr().err


def test_orthrus_lm_eval_refuses_an_abbreviation(capsys):
    import harness.lm_eval

    with pytest.raises(SystemExit) as exit:
        harness.lm_eval.main(["--model", "orthrus", "--task", "gsm8k"])  # not --tasks
    assert exit.value.code == 2 and "unrecognized arguments: --task gsm8k" in capsys.readouterr().err
