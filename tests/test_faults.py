"""Fault injection, as a new user meets faults: a damaged records.jsonl, two writers on one directory, bad run
options, a full disk, Ctrl-C. Each case runs the real command line and asserts the exit code, the message, and
that every good record is still there (the file's bytes, where nothing may change). Checkpoint faults:
test_faults_checkpoints.py; the lm-eval adapter's: test_lm_eval_adapter.py."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from command_line import cli

import harness.store
from harness.cli import main
from harness.records import unit_key
from harness.store import LOCK, RECORDS, REJECTED, RUN, CorruptStoreError, WriterLock, load, read_records

# Four units (2 items x 2 methods), a few tokens each: about a second on 2 cores.
RUN_ARGS = [
    "--suite",
    "tiny-math",
    "--methods",
    "ar,pld",
    "--limit",
    "2",
    "--max-new-tokens",
    "8",
    "--warmup",
    "0",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    assert main(["run", *RUN_ARGS, "--out", str(out)]) == 0
    assert len(read_records(out)) == 4 and (out / "verdicts.json").exists()
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def lines(run: Path) -> list[bytes]:
    return (run / RECORDS).read_bytes().splitlines()


def garble_line(run: Path, number: int) -> bytes:
    """Replace line `number` (1-based) with garbage; -> the file's new bytes."""
    data = lines(run)
    data[number - 1] = data[number - 1][:40] + b"\x00garbled"
    (run / RECORDS).write_bytes(b"\n".join(data) + b"\n")
    return (run / RECORDS).read_bytes()


# ------------------------------------------------------------------------------------------ the store


def test_a_garbled_middle_line_stops_every_reader_and_changes_nothing(run_copy, capsys, tmp_path):
    before_verdicts = (run_copy / "verdicts.json").read_bytes()
    before = garble_line(run_copy, 2)
    for argv in (
        ["run", *RUN_ARGS, "--out", run_copy, "--resume", "--no-verify"],
        ["verify", run_copy, "--no-decoders"],
        ["report", run_copy, "--out", tmp_path / "report"],
        ["compare", run_copy, run_copy],
        ["merge", run_copy, "--out", tmp_path / "merged"],
    ):
        code, message = cli(capsys, *argv)
        assert code == 2, (argv, message)
        assert f"{run_copy / RECORDS}, line 2: not valid JSON" in message, message
        assert "3 good records (2 of them after that line) are intact" in message
        assert f"orthrus-bench repair {run_copy}" in message and "Traceback" not in message
        assert (run_copy / RECORDS).read_bytes() == before  # resume truncated nothing
    assert (run_copy / "verdicts.json").read_bytes() == before_verdicts  # not replaced by an empty table
    assert not (tmp_path / "report").exists() and not (tmp_path / "merged" / RECORDS).exists()
    with pytest.raises(CorruptStoreError, match="line 2"):
        load(run_copy)


def test_repair_moves_bad_lines_aside_and_resume_reruns_only_their_unit(run_copy, capsys):
    good = lines(run_copy)
    garble_line(run_copy, 2)
    code, message = cli(capsys, "repair", run_copy)
    assert code == 0 and "moved 1 line(s) (2)" in message and "kept 3 good records" in message
    assert (run_copy / REJECTED).read_bytes().startswith(good[1][:40])
    assert lines(run_copy) == [good[0], good[2], good[3]]  # every good record, byte for byte, in order
    code, message = cli(capsys, "run", *RUN_ARGS, "--out", run_copy, "--resume", "--no-verify")
    assert code == 0, message
    records = read_records(run_copy)
    assert len(records) == 4 and len({unit_key(r) for r in records}) == 4
    assert cli(capsys, "repair", run_copy)[1].endswith("nothing to repair (4 good records)\n")


def test_a_unit_written_twice_is_refused_then_repaired_to_its_first_copy(run_copy, capsys):
    good = lines(run_copy)
    with open(run_copy / RECORDS, "ab") as f:  # what two --resume runs of older versions left
        f.write(good[0] + b"\n")
    code, message = cli(capsys, "run", *RUN_ARGS, "--out", run_copy, "--resume", "--no-verify")
    assert (
        code == 2
        and "line 5: the unit of item tiny-math/" in message
        and "by ar (sample 0) written again" in message
    )
    assert "first copy starts at line 1" in message
    code, message = cli(capsys, "repair", run_copy)
    assert code == 0 and lines(run_copy) == good and (run_copy / REJECTED).read_bytes() == good[0] + b"\n"


@pytest.mark.parametrize("tail", [b'{"suite": "tiny-math", "item_', b"\x00\x00\x00"])
def test_the_torn_last_line_of_a_stopped_writer_is_cut_on_resume(run_copy, capsys, tail):
    good = lines(run_copy)
    run = json.loads((run_copy / RUN).read_text())
    (run_copy / RUN).write_text(json.dumps({**run, "status": "running"}))  # what a kill -9 leaves
    with open(run_copy / RECORDS, "ab") as f:
        f.write(tail)
    assert len(read_records(run_copy)) == 4  # readers leave it out
    code, message = cli(capsys, "run", *RUN_ARGS, "--out", run_copy, "--resume", "--no-verify")
    assert code == 0, message
    assert lines(run_copy) == good  # cut, and nothing was left to run


def test_verify_never_replaces_verdicts_computed_from_more_records(run_copy, capsys):
    verdicts = json.loads((run_copy / "verdicts.json").read_text())
    assert verdicts["records"] == 4
    kept = lines(run_copy)[:2]  # two records gone (say, a copy of the directory cut short)
    (run_copy / RECORDS).write_bytes(b"\n".join(kept) + b"\n")
    before = (run_copy / "verdicts.json").read_bytes()
    code, message = cli(capsys, "verify", run_copy, "--no-decoders")
    assert code == 2 and "computed from 4 records" in message and "now holds 2" in message
    assert (run_copy / "verdicts.json").read_bytes() == before


# ---------------------------------------------------------------------------------------- one writer


HOLDER = """
import sys, time
from harness.store import WriterLock
lock = WriterLock(sys.argv[1], "a test's holder")
print("held", flush=True)
time.sleep(120)
"""


def hold_lock(directory: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_with_the_holders_pid_and_host(run_copy, capsys, tmp_path):
    before = (run_copy / RECORDS).read_bytes()
    holder = hold_lock(run_copy)
    try:
        for argv in (
            ["run", *RUN_ARGS, "--out", run_copy, "--resume", "--no-verify"],
            ["verify", run_copy, "--no-decoders"],
            ["repair", run_copy],
        ):
            code, message = cli(capsys, *argv)
            assert code == 2, (argv, message)
            assert f"{run_copy} is being written by pid {holder.pid} on {socket.gethostname()}" in message
        code, message = cli(capsys, "verify", run_copy, "--no-decoders", "--out", tmp_path / "v.json")
        assert code == 0, message  # reading is not writing: verdicts written elsewhere
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run_copy / RECORDS).read_bytes() == before
    # The kernel released the dead holder's lock: the directory is writable again, no stale lock to clear.
    with WriterLock(run_copy, "after"):
        assert (run_copy / LOCK).exists()


def test_two_resumes_started_together_write_each_unit_once(finished_run, tmp_path):
    """Which one gets the directory first is the scheduler's: the other is refused while it runs (exit 2, the
    holder named) or, if it comes after, finds nothing left to do (exit 0). Never both writing: each unit once.
    The refusal itself is test_a_second_writer_is_refused_with_the_holders_pid_and_host's, deterministically."""
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    kept = lines(out)[:1]  # three units to go
    (out / RECORDS).write_bytes(kept[0] + b"\n")
    command = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        *RUN_ARGS,
        "--out",
        str(out),
        "--resume",
        "--no-verify",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    first, second = (subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2))
    results = [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]
    assert 0 in [code for code, _ in results], results
    for code, err in results:
        assert code == 0 or (code == 2 and "is being written by pid" in err), results
    records = read_records(out)
    assert len(records) == 4 and len({unit_key(r) for r in records}) == 4


# ------------------------------------------------------------------------------------------ run options


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--top-p", "2"], "--top-p must be in (0, 1]"),
        (["--top-k", "-5"], "--top-k must be an integer >= 0"),
        (["--max-new-tokens", "-5"], "--max-new-tokens must be an integer >= 1, got -5"),
        (["--max-new-tokens", "100000000"], "plus max_new_tokens 100000000 needs"),
        (["--samples", "0"], "--samples must be an integer >= 1, got 0"),
        (["--limit", "0"], "--limit must be an integer >= 1, got 0"),
        (["--seed", "-1"], "--seed must be an integer >= 0"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["--continuous"], "--continuous needs --batch-size"),
        (["--device", "gpu"], "--device gpu: not a device; use cpu, cuda or cuda:N"),
        (["--device", "cuda:1"], "--device cuda:1: no CUDA device is available here"),
        (["--methods", "ar,ar"], "a method is listed twice"),
        (["--temperature", "inf"], "--temperature must be >= 0 and finite (0 is greedy), got inf"),
        (["--temperature=-inf"], "--temperature must be >= 0 and finite (0 is greedy), got -inf"),
        (["--temperature", "nan"], "--temperature must be >= 0 and finite (0 is greedy), got nan"),
        (["--top-p", "inf"], "--top-p must be in (0, 1]"),
        (["--top-p", "nan"], "--top-p must be in (0, 1]"),
        (["--engine", "fast"], "argument --engine: invalid choice: 'fast'"),
        (["--engine", "cudagraph"], "engine cudagraph needs a CUDA device, not cpu"),
    ],
)
def test_bad_run_options_stop_before_anything_is_written(capsys, tmp_path, flags, message):
    out = tmp_path / "out"
    code, printed = cli(capsys, "run", *RUN_ARGS, *flags, "--out", out)
    assert code == 2 and message in printed and "Traceback" not in printed, printed
    assert not out.exists()


def test_the_length_check_names_the_prompt_and_the_room_left(capsys, tmp_path):
    code, printed = cli(capsys, "run", *RUN_ARGS, "--max-new-tokens", "4090", "--out", tmp_path / "out")
    assert code == 2 and "tiny-math/" in printed and "more than the model's 4096" in printed
    assert "lower --max-new-tokens to" in printed and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1"),
        (["--max-new-tokens", "5000"], "plus max_new_tokens 5000 needs"),
        (["--device", "gpu"], "not a device"),
        (["--temperature", "inf"], "--temperature must be >= 0 and finite (0 is greedy), got inf"),
        (["--temperature=-inf"], "--temperature must be >= 0 and finite (0 is greedy), got -inf"),
        (["--temperature", "nan"], "--temperature must be >= 0 and finite (0 is greedy), got nan"),
        (["--top-p", "inf"], "--top-p must be in (0, 1]"),
        (["--top-p", "nan"], "--top-p must be in (0, 1]"),
    ],
)
def test_generate_checks_the_same_options(capsys, flags, message):
    code, printed = cli(capsys, "generate", "--prompt-ids", "1,2,3", "--method", "ar", *flags)
    assert code == 2 and message in printed and "Traceback" not in printed, printed


# ----------------------------------------------------------------------------- a full disk, Ctrl-C


def test_a_full_disk_fails_the_run_with_a_message_and_keeps_what_was_written(capsys, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd):  # the third sync: run.json, then one unit's records, then the disk is full
        calls["n"] += 1
        if calls["n"] >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(harness.store.os, "fsync", fsync)
    code, printed = cli(capsys, "run", *RUN_ARGS, "--out", out)
    monkeypatch.undo()
    assert code == 1 and "failed: [Errno 28] No space left on device" in printed, printed
    assert f"the same command with --resume --out {out} runs the rest" in printed
    assert "Traceback" not in printed
    assert not list(out.glob(".*.partial"))  # no half-written run.json left behind
    done = read_records(out)
    assert len(done) >= 1
    code, printed = cli(capsys, "run", *RUN_ARGS, "--out", out, "--resume", "--no-verify")
    assert code == 0, printed
    records = read_records(out)
    assert len(records) == 4 and records[: len(done)] == done


def test_ctrl_c_names_resume_and_keeps_the_finished_units(capsys, tmp_path, monkeypatch):
    from harness.run import runner

    out = tmp_path / "run"
    real = runner.unit_records
    calls = {"n": 0}

    def interrupted(*args, **kwargs):  # Ctrl-C while the third unit is being recorded
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "unit_records", interrupted)
    code, printed = cli(capsys, "run", *RUN_ARGS, "--out", out)
    monkeypatch.undo()
    assert code == 130
    assert f"interrupted; the finished units are kept in {out}: the same command with --resume" in printed
    assert len(read_records(out)) == 2 and json.loads((out / RUN).read_text())["status"] == "interrupted"
    code, printed = cli(capsys, "run", *RUN_ARGS, "--out", out, "--resume", "--no-verify")
    assert code == 0 and len(read_records(out)) == 4


def test_a_run_still_writing_is_read_without_its_unfinished_unit(run_copy):
    run = json.loads((run_copy / RUN).read_text())
    (run_copy / RUN).write_text(json.dumps({**run, "status": "running"}))  # as its writer keeps it
    with WriterLock(run_copy, "a run"):
        with open(run_copy / RECORDS, "ab") as f:
            f.write(lines(run_copy)[0][:30])
        assert len(read_records(run_copy)) == 4


# -------------------------------------------------------------------- what else a new user tries


def other_cases(run: Path, tmp: Path) -> list[tuple[list, str]]:
    """(argv, what the message must say) for faults the issue did not list; each exits 2."""
    a_file = tmp / "a-file"
    a_file.write_text("not a directory\n")
    return [
        (["run", *RUN_ARGS, "--out", run], "already holds a run: pass --resume"),
        (["run", *RUN_ARGS, "--limit", "1", "--out", run, "--resume"], "different configuration"),
        (["run", *RUN_ARGS, "--out", tmp / "x", "--retry-failed"], "pass --resume too"),
        (["run", *RUN_ARGS, "--out", a_file], "is a file, not a directory"),
        (["run", *RUN_ARGS, "--suite", "nope", "--out", tmp / "x"], "nope"),
        (["run", *RUN_ARGS, "--methods", "nope", "--out", tmp / "x"], "nope"),
        (
            ["run", *RUN_ARGS, "--methods", "orthrus:block_size=0", "--out", tmp / "x"],
            "orthrus:block_size=0: block size must be >= 2",
        ),
        (["run", *RUN_ARGS, "--shard", "3/2", "--out", tmp / "x"], "--shard 3/2"),
        (["verify", tmp / "missing"], "missing"),
        (["report", tmp / "missing", "--out", tmp / "r"], "missing"),
        (["merge", run, run, "--out", tmp / "m"], "do not cover"),
    ]


def test_what_else_a_new_user_tries_gets_a_message_and_changes_nothing(run_copy, capsys, tmp_path):
    before = (run_copy / RECORDS).read_bytes()
    for argv, message in other_cases(run_copy, tmp_path):
        code, printed = cli(capsys, *argv)
        assert code == 2 and message in printed and "Traceback" not in printed, (argv, printed)
        assert (run_copy / RECORDS).read_bytes() == before
    assert not (tmp_path / "x").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda run: (run / RUN).write_text("{ not json"), f"{RUN} is not valid JSON"),
        (lambda run: (run / RUN).write_text('{"confg": {}}'), "is not an orthrus-bench run.json"),
        (lambda run: (run / RECORDS).unlink(), f"has no {RECORDS}"),
        (lambda run: (run / RECORDS).write_text('["a list"]\n'), "line 1: not an orthrus-bench record"),
    ],
)
def test_a_damaged_run_directory_is_named_by_every_reader(run_copy, capsys, tmp_path, damage, message):
    damage(run_copy)
    for argv in (["verify", run_copy, "--no-decoders"], ["report", run_copy, "--out", tmp_path / "r"]):
        code, printed = cli(capsys, *argv)
        assert code == 2 and message in printed and "Traceback" not in printed, (argv, printed)
