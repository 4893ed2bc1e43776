"""Run untrusted programs (a model's code plus its tests) in a contained child process: Python scripts
(`run_python`), and C++ compiled with g++ in the same sandbox (`compile_cpp`) then run (`run_binary`).

Every program gets a fresh throw-away working directory (also its HOME and TMPDIR), a scrubbed
environment, its own session, resource limits (CPU time, address space, file size, open files, process
count) and a wall-clock limit after which it and everything it started are killed. Where the kernel allows
it the program also runs under Landlock (writes only inside its directory, no TCP, no signals outside the
sandbox), a seccomp filter (no sockets, no ptrace, no io_uring, no chmod/chown, no signals to the
supervisor or to process groups), without capabilities and in fresh network and PID namespaces. The layers
that were in force are listed in :attr:`SandboxResult.isolation`.

The work is done by ``_sandbox_launcher.py`` in a separate interpreter; see its docstring for the process
layout. Nothing a program does can raise here: every outcome is a :class:`SandboxResult`.

A Python program passes only if it ran to its end: `run_python` appends a statement that prints a marker
the program cannot know in advance, and an exit before it (`sys.exit(0)`, `os._exit(0)`, `exit()` in the
model's code, before its tests ran) is a failure with that reason, whatever the exit status.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

logger = logging.getLogger(__name__)

LAUNCHER = Path(__file__).with_name("_sandbox_launcher.py")
# Layers the kernel may lack, and what a program can then do that it otherwise could not.
OPTIONAL_LAYER_GAPS = {
    "landlock": "write and delete files wherever this user may, and signal this user's other processes",
    "seccomp": "open sockets, use ptrace, and signal the harness",
}
_reported_gaps: set[str] = set()
TAIL_CHARS = 2000
MAX_STDOUT_BYTES = 1 << 20
# Extra time the supervisor gets beyond the program's wall-clock limit to kill and report.
SUPERVISOR_GRACE_S = 15.0


@dataclass(frozen=True)
class SandboxLimits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30
    file_size_bytes: int = 16 << 20
    open_files: int = 64
    processes: int = 32  # beyond those the program's real uid already runs


@dataclass(frozen=True)
class SandboxResult:
    # "pass" (exit 0, and for Python the program's end reached), "fail" (an AssertionError, or an exit before
    # the end), "timeout" (wall or CPU limit) or "error"
    status: str
    reason: str
    returncode: int | None
    signal: str | None
    wall_s: float
    cpu_s: float | None
    stdout_tail: str
    stderr_tail: str
    isolation: tuple[str, ...]
    stdout: str = ""  # all of it, up to MAX_STDOUT_BYTES (programs compared on their output)
    produced: dict[str, bytes] = field(default_factory=dict)  # files the program wrote (a compiler's output)

    def as_detail(self) -> dict:
        """The JSON-serialisable summary a score records."""
        return {
            "sandbox_status": self.status,
            "reason": self.reason,
            "returncode": self.returncode,
            "signal": self.signal,
            "wall_s": round(self.wall_s, 3),
            "stderr_tail": self.stderr_tail,
            "isolation": list(self.isolation),
        }


def run_python(source: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``source`` as a Python script in the sandbox and classify the outcome; see the module docstring
    for what a pass means."""
    marker = f"orthrus-sandbox-end-{secrets.token_hex(16)}"
    program = f"{source}\n\nimport sys as _orthrus_sys\n_orthrus_sys.stdout.write('\\n{marker}\\n')\n"
    result = run_program([sys.executable, "-I", "-B", "program.py"], {"program.py": program.encode()}, limits)
    if marker in result.stdout_tail:
        return replace(
            result,
            stdout=result.stdout.replace(f"\n{marker}\n", "", 1),
            stdout_tail=result.stdout_tail.replace(f"\n{marker}\n", "", 1),
        )
    if result.status == "pass":
        return replace(result, status="fail", reason="exited with status 0 before its tests finished")
    return result


# Compiling takes more memory and time than running: cc1plus with -O over the standard headers.
COMPILE_LIMITS = SandboxLimits(wall_s=60.0, cpu_s=60, memory_bytes=4 << 30, processes=16)
BINARY = "program"


class CompilerMissingError(RuntimeError):
    """The C++ compiler a scorer needs is not installed."""


def cxx_compiler() -> str:
    """The path of g++, or a CompilerMissingError that says how to get it."""
    path = shutil.which("g++")
    if path is None:
        raise CompilerMissingError(
            "g++ is not on PATH: this suite compiles the model's C++ answers (Debian: apt-get install g++)"
        )
    return path


def compile_cpp(source: str, flags: tuple[str, ...] = ("-std=c++11", "-O"), limits=COMPILE_LIMITS):
    """Compile ``source`` with g++ inside the sandbox; -> (the executable or None, the compiler's result)."""
    argv = [cxx_compiler(), *flags, "-o", BINARY, "program.cpp"]
    result = run_program(argv, {"program.cpp": source.encode()}, limits)
    return result.produced.get(BINARY) if result.status == "pass" else None, result


def run_binary(binary: bytes, stdin: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run a compiled program (from `compile_cpp`) on ``stdin`` in a fresh sandbox."""
    return run_program([BINARY], {BINARY: binary}, limits, stdin=stdin.encode(), executable=(BINARY,))


def run_program(
    argv: list[str],
    files: dict[str, bytes],
    limits: SandboxLimits | None = None,
    *,
    stdin: bytes | None = None,
    executable: tuple[str, ...] = (),
) -> SandboxResult:
    """Run ``argv`` in a fresh sandbox directory holding ``files`` (name -> content; those named in
    ``executable`` get the execute bit), with ``stdin`` as its standard input (else /dev/null). A relative
    ``argv[0]`` is a file of the sandbox directory."""
    limits = limits or SandboxLimits()
    root = Path(tempfile.mkdtemp(prefix="orthrus-sandbox-"))
    try:
        work_dir = root / "work"
        work_dir.mkdir()
        for name, content in files.items():
            (work_dir / name).write_bytes(content)
            if name in executable:
                (work_dir / name).chmod(0o755)
        stdin_path = None
        if stdin is not None:
            stdin_path = root / "stdin"
            stdin_path.write_bytes(stdin)
        program = argv[0] if os.path.isabs(argv[0]) else str(work_dir / argv[0])
        request = {
            "argv": [program, *argv[1:]],
            "work_dir": str(work_dir),
            "stdin_path": None if stdin_path is None else str(stdin_path),
            "stdout_path": str(root / "stdout"),
            "stderr_path": str(root / "stderr"),
            "env": _program_environment(work_dir),
            "wall_s": limits.wall_s,
            "protected_pids": sorted({os.getpid(), os.getppid()}),
            "limits": {
                "cpu_s": limits.cpu_s,
                "memory_bytes": limits.memory_bytes,
                "file_size_bytes": limits.file_size_bytes,
                "open_files": limits.open_files,
                "processes": limits.processes,
            },
        }
        report = _supervise(request, limits.wall_s + SUPERVISOR_GRACE_S)
        stdout = _head(root / "stdout", MAX_STDOUT_BYTES)
        stderr = _tail(root / "stderr")
        produced = {p.name: p.read_bytes() for p in work_dir.iterdir() if p.is_file() and p.name not in files}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = _classify(report, limits, stdout[-TAIL_CHARS:], stderr)
    _report_missing_layers(result)
    return replace(result, stdout=stdout, produced=produced)


def _report_missing_layers(result: SandboxResult) -> None:
    if not result.isolation:
        return  # the program never started; its result says why
    for layer, gap in OPTIONAL_LAYER_GAPS.items():
        if layer not in result.isolation and layer not in _reported_gaps:
            _reported_gaps.add(layer)
            logger.warning(
                "sandbox: %s is not available on this system; sandboxed programs can %s", layer, gap
            )


def _program_environment(work_dir: Path) -> dict[str, str]:
    home = str(work_dir)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        # glibc drops TMPDIR for a program whose real and effective uids differ (as when run as root);
        # Python's tempfile falls back to TEMP and TMP, which it keeps.
        "TMPDIR": home,
        "TEMP": home,
        "TMP": home,
        "LANG": "C.UTF-8",
        # Numerical libraries would otherwise start a thread per core, each counted as a process.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _supervise(request: dict, supervisor_timeout_s: float) -> dict:
    launcher = subprocess.Popen(
        [sys.executable, "-I", "-S", str(LAUNCHER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={},
        text=True,
    )
    try:
        out, err = launcher.communicate(json.dumps(request, allow_nan=False), timeout=supervisor_timeout_s)
    except subprocess.TimeoutExpired:
        # The supervisor leads its own process group; anything it could not clean up goes with it.
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.communicate()
        return {"supervisor_error": f"sandbox supervisor still running after {supervisor_timeout_s:.0f} s"}
    try:
        return json.loads(out.splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        detail = err.strip()[-TAIL_CHARS:] or f"exit status {launcher.returncode}"
        return {"supervisor_error": f"sandbox supervisor failed: {detail}"}


def _head(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - TAIL_CHARS))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _last_exception_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line and not line[0].isspace()]
    return lines[-1] if lines else ""


def _classify(report: dict, limits: SandboxLimits, stdout: str, stderr: str) -> SandboxResult:
    def result(status: str, reason: str) -> SandboxResult:
        signum = report.get("signal")
        return SandboxResult(
            status=status,
            reason=reason,
            returncode=report.get("returncode"),
            signal=signal.Signals(signum).name if signum else None,
            wall_s=report.get("wall_s", 0.0),
            cpu_s=report.get("cpu_s"),
            stdout_tail=stdout,
            stderr_tail=stderr,
            isolation=tuple(report.get("layers", ())),
        )

    if "supervisor_error" in report:
        return result("error", report["supervisor_error"])
    if report["setup_error"]:
        return result("error", f"sandbox setup failed: {report['setup_error']}")
    if report["timed_out"]:
        return result("timeout", f"wall-clock limit of {limits.wall_s:g} s exceeded")
    signum = report["signal"]
    cpu_s = report["cpu_s"] or 0.0
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL and cpu_s >= limits.cpu_s):
        return result("timeout", f"CPU-time limit of {limits.cpu_s} s exceeded")
    if signum is not None:
        return result("error", f"killed by {signal.Signals(signum).name}")
    if report["returncode"] == 0:
        return result("pass", "exited with status 0")
    last_line = _last_exception_line(stderr)
    if last_line.startswith("AssertionError"):
        return result("fail", "a test assertion failed")
    return result("error", last_line or f"exited with status {report['returncode']}")
