"""The sandbox runs ordinary programs and contains hostile ones while the harness keeps running."""

import logging
import os
import socket
import subprocess
from pathlib import Path

from harness.scoring.sandbox import SandboxLimits, run_python

QUICK = SandboxLimits(wall_s=3.0, cpu_s=3)


def lingering_sandbox_processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "orthrus-sandbox-" in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


def test_passing_program_runs_in_a_scrubbed_throwaway_directory(monkeypatch):
    monkeypatch.setenv("ORTHRUS_TEST_SECRET", "do-not-leak")
    result = run_python(
        "import os, sys, tempfile\n"
        "open('scratch.txt', 'w').write('inside')\n"
        "print(os.getcwd(), os.environ['HOME'], tempfile.gettempdir())\n"
        "print(sorted(os.environ))\n"
        "print(sys.stdin.read() == '')\n"
    )
    assert result.status == "pass", result
    cwd, home, tmpdir = result.stdout_tail.splitlines()[0].split()
    assert cwd == home == tmpdir
    assert "orthrus-sandbox-" in cwd
    assert not Path(cwd).exists(), "the working directory must be removed afterwards"
    assert "ORTHRUS_TEST_SECRET" not in result.stdout_tail
    assert result.stdout_tail.splitlines()[2] == "True"
    assert {"rlimits", "own-session", "scrubbed-env", "temp-cwd"} <= set(result.isolation)


def test_failed_assertion_is_fail_and_other_exceptions_are_errors():
    failed = run_python("def f():\n    return 1\nassert f() == 2, 'wrong'\n")
    assert (failed.status, failed.reason) == ("fail", "a test assertion failed")
    assert "AssertionError: wrong" in failed.stderr_tail
    crashed = run_python("undefined_name + 1\n")
    assert crashed.status == "error"
    assert crashed.reason.startswith("NameError")
    syntax = run_python("def broken(:\n")
    assert syntax.status == "error" and syntax.reason.startswith("SyntaxError")


def test_infinite_loop_is_stopped_by_the_wall_clock():
    result = run_python("while True:\n    pass\n", SandboxLimits(wall_s=1.0, cpu_s=10))
    assert result.status == "timeout"
    assert "wall-clock" in result.reason
    assert result.wall_s < 3.0
    assert lingering_sandbox_processes() == []


def test_cpu_time_limit_stops_a_busy_program():
    result = run_python("while True:\n    pass\n", SandboxLimits(wall_s=20.0, cpu_s=1))
    assert result.status == "timeout"
    assert "CPU-time" in result.reason


def test_fork_bomb_is_contained_and_leaves_no_process_behind():
    bomb = (
        "import os\n"
        "while True:\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            os.setsid()  # try to leave the process group that would be killed\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = run_python(bomb, SandboxLimits(wall_s=2.0, cpu_s=10, processes=16))
    assert result.status == "timeout"
    assert lingering_sandbox_processes() == []
    assert subprocess.run(["true"]).returncode == 0, "the harness must still be able to start processes"


def test_memory_bomb_hits_the_address_space_limit():
    bomb = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))\n"
    result = run_python(bomb, SandboxLimits(wall_s=10.0, cpu_s=10, memory_bytes=256 << 20))
    assert result.status == "error"
    assert result.reason == "MemoryError"


def test_writes_and_deletes_outside_the_sandbox_are_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    escaped = tmp_path / "escaped.txt"
    program = (
        "import os\n"
        "outcomes = []\n"
        f"for attempt in (lambda: open({str(escaped)!r}, 'w').write('x'),\n"
        f"                lambda: os.remove({str(victim)!r}),\n"
        f"                lambda: os.chmod({str(victim)!r}, 0o777),\n"
        f"                lambda: os.system('echo x > {escaped}')):\n"
        "    try:\n"
        "        outcomes.append(repr(attempt()))\n"
        "    except OSError as exc:\n"
        "        outcomes.append(type(exc).__name__)\n"
        "print(outcomes)\n"
    )
    result = run_python(program, QUICK)
    assert result.status == "pass", result
    assert result.stdout_tail.strip().startswith("['PermissionError', 'PermissionError', 'PermissionError',")
    assert not escaped.exists()
    assert victim.read_text() == "keep me"
    assert oct(victim.stat().st_mode & 0o777) != oct(0o777)


def test_sockets_cannot_be_opened():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        program = (
            "import socket\n"
            f"connection = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "connection.sendall(b'leak')\n"
        )
        result = run_python(program, QUICK)
        try:
            connection, _ = listener.accept()
            connection.close()
            accepted = True
        except TimeoutError:
            accepted = False
    assert not accepted, "the sandboxed program reached a socket outside"
    assert result.status == "error"
    assert result.reason.startswith("PermissionError")
    unix = run_python("import socket\nsocket.socket(socket.AF_UNIX)\n", QUICK)
    assert unix.reason.startswith("PermissionError")


def test_signalling_the_parent_and_the_harness_is_refused():
    harness_pid = os.getpid()
    program = (
        "import os, signal\n"
        "def supervisor_of(pid):\n"
        "    for line in open(f'/proc/{pid}/status'):\n"
        "        if line.startswith('PPid:'):\n"
        "            return int(line.split()[1])\n"
        "outcomes = []\n"
        "for target, signum in ((os.getppid(), signal.SIGKILL),\n"
        "                       (supervisor_of(os.getppid()) or 1, signal.SIGKILL),\n"
        f"                       ({harness_pid}, signal.SIGKILL),\n"
        f"                       ({-os.getpgid(harness_pid)}, signal.SIGKILL),\n"
        "                       (0, signal.SIGKILL),\n"
        "                       (-1, 0)):\n"
        "    try:\n"
        "        os.kill(target, signum)\n"
        "        outcomes.append('delivered')\n"
        "    except OSError as exc:\n"
        "        outcomes.append(type(exc).__name__)\n"
        "print(outcomes)\n"
    )
    result = run_python(program, QUICK)
    assert result.status == "pass", result
    assert "delivered" not in result.stdout_tail
    assert result.stdout_tail.count("PermissionError") + result.stdout_tail.count("ProcessLookupError") == 6
    assert os.getpid() == harness_pid  # still here


def test_a_missing_isolation_layer_is_reported_once(monkeypatch, caplog):
    import harness.scoring.sandbox as sandbox

    monkeypatch.setattr(sandbox, "_reported_gaps", set())
    without_landlock = sandbox.SandboxResult(
        status="pass",
        reason="exited with status 0",
        returncode=0,
        signal=None,
        wall_s=0.1,
        cpu_s=0.05,
        stdout_tail="",
        stderr_tail="",
        isolation=("rlimits", "own-session", "seccomp"),
    )
    with caplog.at_level(logging.WARNING, logger="harness.scoring.sandbox"):
        sandbox._report_missing_layers(without_landlock)
        sandbox._report_missing_layers(without_landlock)
    assert [record.getMessage() for record in caplog.records] == [
        "sandbox: landlock is not available on this system; sandboxed programs can write and delete files "
        "wherever this user may, and signal this user's other processes"
    ]
