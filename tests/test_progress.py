"""The first ten minutes: progress of the long commands on stderr (never stdout), --quiet, the run's last lines
(its directory and the commands that verify and render it), and help text that follows the registry."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from harness.cli import build_parser, main
from harness.methods import REGISTRY
from harness.progress import Reporter

ROOT = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------------------------------- the reporter


def test_plain_lines_when_stderr_is_not_a_terminal(monkeypatch):
    file = io.StringIO()
    clock = iter([0.0, 10.0, 40.0, 41.0, 80.0, 80.0])  # the start, after each of the 4 items, the close
    monkeypatch.setattr("harness.progress.time.monotonic", lambda: next(clock))
    shown = Reporter(file=file, interval=30)
    assert not shown.interactive  # a StringIO is no terminal
    assert list(shown.bar(["a", "b", "c", "d"], "verify: near-tie study, tiny-math", unit="paths")) == list(
        "abcd"
    )
    shown.say("verify: loading the target")
    assert file.getvalue().splitlines() == [
        "verify: near-tie study, tiny-math: 0/4 paths",
        "verify: near-tie study, tiny-math: 2/4 paths, 40 s",  # at most one line per 30 s while it runs
        "verify: near-tie study, tiny-math: 4/4 paths, done in 80 s",
        "verify: loading the target",
    ]


def test_a_disabled_reporter_and_an_empty_stage_say_nothing():
    file = io.StringIO()
    quiet = Reporter(enabled=False, file=file)
    assert list(quiet.bar(range(3), "x")) == [0, 1, 2]
    quiet.say("x")
    bar = quiet.bar(desc="y", total=2)
    bar.update(2)
    bar.set_postfix_str("z")
    bar.close()
    assert list(Reporter(file=file).bar([], "empty")) == []
    assert file.getvalue() == ""


# --------------------------------------------------------------------------------------- help and wording


def subparser(name: str):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


def test_batch_size_help_names_exactly_the_batched_methods():
    action = next(a for a in subparser("run")._actions if a.dest == "batch_size")
    named = set(re.findall(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*", action.help)) & {m.name for m in REGISTRY}
    assert named == {m.name for m in REGISTRY if m.batched}, action.help
    assert "orthrus:cache=dynamic" in action.help  # the option value that leaves the decode loop
    assert "tree=chain" not in action.help  # both trees batch


@pytest.mark.parametrize("command", ["run", "verify", "calibrate", "bench-overhead", "bench-syncs"])
def test_long_commands_take_quiet(command):
    assert any(a.dest == "quiet" for a in subparser(command)._actions)


def test_methods_calls_a_lossy_method_verified_and_expected_to_fail(capsys):
    assert main(["methods"]) == 0
    diffusion = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("diffusion "))
    assert "lossy (verified: expected to fail identity)" in diffusion and "unverified" not in diffusion


def test_the_deleted_batch_module_is_cited_nowhere():
    deleted = "orthrus_core" + ".batch"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    texts = [p for p in tracked if p.endswith((".py", ".md", ".toml", ".yml", ".yaml", ".cfg", ".txt"))]
    citing = [p for p in texts if (ROOT / p).is_file() and deleted in (ROOT / p).read_text(errors="replace")]
    assert citing == []


# ------------------------------------------------------------------------------------- a run's last lines


def test_a_run_ends_naming_its_directory_and_a_report_command_that_works(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the report command writes reports/<name> here
    argv = ["run", "--suite", "tiny-math", "--methods", "ar,pld", "--limit", "1", "--max-new-tokens", "4"]
    assert main([*argv, "--warmup", "0", "--out", "runs/first", "--no-verify"]) == 0
    out, err = capsys.readouterr()
    assert "run: 2/2 gen" in err and "run:" not in out  # the runner's progress on stderr only
    last = err.strip().splitlines()[-3:]
    assert last[0] == "wrote runs/first (records.jsonl, run.json)"
    assert last[1] == "verify it with: orthrus-bench verify runs/first"  # --no-verify: not verified yet
    assert last[2] == "render it with: orthrus-bench report runs/first --out reports/first"
    report = shlex.split(last[2].removeprefix("render it with: "))
    assert report[0] == "orthrus-bench" and main(report[1:]) == 0
    assert (tmp_path / "reports" / "first" / "report.html").is_file()

    assert main([*argv, "--warmup", "0", "--out", "runs/quiet", "--no-verify", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "run:" not in err and err.strip().splitlines()[0] == "wrote runs/quiet (records.jsonl, run.json)"
