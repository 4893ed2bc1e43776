"""The nox sessions: all declared, GPU benchmarks skip cleanly without CUDA, `--out` passes through."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SESSIONS = [
    "tests",
    "lint",
    "bench-tiny",
    "bench-specbench",
    "bench-batch-8b",
    "bench-1.7b",
    "bench-4b",
    "bench-8b",
    "report",
    "compare",
]


def nox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nox", "--noxfile", str(REPO / "noxfile.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_every_session_is_declared_and_only_lint_and_tests_run_by_default():
    listing = nox("--list").stdout
    assert [line[2:] for line in listing.splitlines() if line[:2] in ("* ", "- ")] == SESSIONS
    assert {line[2:] for line in listing.splitlines() if line.startswith("* ")} == {"tests", "lint"}


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None, reason="this machine has a GPU: the session would run"
)
@pytest.mark.skipif(
    shutil.which("python3.11") is None, reason="the bench sessions' pinned Python 3.11 is not on PATH"
)
def test_gpu_benchmark_skips_without_cuda():
    done = nox("-s", "bench-8b")
    assert done.returncode == 0
    assert "Session bench-8b skipped: bench-8b needs a CUDA device" in done.stderr


def test_out_is_taken_from_the_passthrough_arguments():
    sys.path.insert(0, str(REPO))
    try:
        import noxfile
    finally:
        sys.path.remove(str(REPO))
    assert noxfile.split_out(["--limit", "2", "--out", "x", "--resume"], "d") == (
        "x",
        ["--limit", "2", "--resume"],
    )
    assert noxfile.split_out(["--out=y"], "d") == ("y", [])
    assert noxfile.split_out([], "d") == ("d", [])


def test_the_batch_sweep_runs_every_method_that_decodes_batches():
    """The sweep's methods come from the registry, and the registry's batched flag is what each method's
    decoder does: a batched one decodes two rows at once, the others refuse (naming the batched ones)."""
    sys.path.insert(0, str(REPO))
    try:
        import noxfile
    finally:
        sys.path.remove(str(REPO))
    from harness.methods import OWN, load_target, make_decoder
    from harness.methods.base import BatchError
    from orthrus_core.loop import Request

    target = load_target(None)
    decodes_batches = []
    for name in OWN:  # the project's engine's (vLLM's batch concurrent requests: tests/test_vllm.py)
        decoder = make_decoder(name, target)
        queue = [Request([5, 6, 7], 3), Request([8, 9], 4)]
        try:
            done = list(decoder.decode(lambda q=queue: q.pop() if q else None, rows=2))
        except BatchError as exc:
            assert "the batched methods are" in str(exc)
            continue
        assert sorted(len(d.result.tokens) for d in done) == [3, 4] and max(d.mean_rows for d in done) == 2
        decodes_batches.append(name)
    assert noxfile.BATCH_METHODS.split(",") == decodes_batches
    assert {"ar", "orthrus", "eagle3", "dflash", "pld"} <= set(decodes_batches)
    assert noxfile.BATCH_SIZES[0] == 1 and noxfile.BATCH_SIZES[-1] == 64


class FakeSession:
    """What `bench` asks of a nox session; `failing` commands, as (verb, last argument), exit 1 (a failed
    verdict) and leave their run."""

    def __init__(self, failing: set[str]):
        self.posargs, self.failing, self.commands = [], failing, []

    def run(self, *command, silent=False):
        import nox

        if command[1] == "--help":
            return "usage: orthrus-bench {run,verify,report}"
        self.commands.append(" ".join(command[1:3]))
        if command[1] == "run":
            out = Path(command[-1])
            out.mkdir(parents=True)
            (out / "run.json").write_text("{}")
        if (command[1], command[-1]) in self.failing:  # (verb, its last argument)
            raise nox.command.CommandFailed("Returned code 1", return_code=1)
        return True

    def error(self, message):
        raise SystemExit(message)


def test_a_failed_verdict_does_not_stop_the_remaining_runs_or_the_report(tmp_path):
    sys.path.insert(0, str(REPO))
    try:
        import noxfile
    finally:
        sys.path.remove(str(REPO))
    session = FakeSession(failing={("run", str(tmp_path / "x"))})
    session.posargs = ["--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit, match=f"failed: run {tmp_path}/x \\(every run"):
        noxfile.bench(session, "x", {"": ["--methods", "orthrus"], "-t1": ["--temperature", "1"]})
    # the failing run first, then the other, both verified, then the report of both
    assert session.commands == [
        "run --methods",
        "run --temperature",
        f"verify {tmp_path}/x",
        f"verify {tmp_path}/x-t1",
        f"report {tmp_path}/x",
    ]
    passing = FakeSession(failing=set())
    passing.posargs = ["--out", str(tmp_path / "y")]
    noxfile.bench(passing, "y", {"": []})  # nothing failed: no error
    assert passing.commands[-1] == f"report {tmp_path}/y"


class BenchSession(FakeSession):
    """A GPU benchmark's session: what it installs, and the `orthrus-bench run` commands it gives."""

    venv_backend = "virtualenv"

    def __init__(self, out: Path):
        super().__init__(failing=set())
        self.posargs, self.installed, self.runs = ["--out", str(out)], [], {}

    def install(self, *args):
        self.installed.append(args)

    def log(self, message):
        pass

    def run(self, *command, silent=False):
        if command[1] == "run":  # its methods, by the run's directory suffix
            self.runs[command[-1].removeprefix(self.posargs[1])] = command[command.index("--methods") + 1]
        return super().run(*command, silent=silent)


@pytest.mark.parametrize("size", ["1.7b", "8b"])
def test_the_gpu_benchmarks_greedy_run_holds_vllms_methods(tmp_path, monkeypatch, size):
    """bench-N installs the `vllm` extra and runs every vLLM method of the registry beside the project's in
    its greedy run, so that its report answers Orthrus against DFlash and EAGLE-3 in both engines; at 1.7B
    neither DFlash runs (no public drafter). The other runs (T=1, long context, SDAR) are the project's alone."""
    sys.path.insert(0, str(REPO))
    try:
        import noxfile
    finally:
        sys.path.remove(str(REPO))
    from harness.methods import REGISTRY

    monkeypatch.setattr(noxfile, "cuda_device", lambda: "GPU 0: synthetic")
    session = BenchSession(tmp_path / "q")
    noxfile.gpu_bench(session, size)
    assert session.installed == [(noxfile.TORCH_SPEC,), ("-e", ".[vllm]")]
    assert list(session.runs) == ["", "-t1", "-context", "-sdar"]
    greedy = session.runs[""].split(",")
    vllm = [m.name for m in REGISTRY if m.backend == "vllm"]
    assert {"vllm-ar", "vllm-pld", "vllm-eagle3", "vllm-dflash", "vllm-orthrus"} <= set(vllm)
    assert [m for m in greedy if m.startswith("vllm-")] == [
        m for m in vllm if size != "1.7b" or m != "vllm-dflash"
    ]
    assert ("dflash" in greedy) == (size != "1.7b") and {"ar", "orthrus", "eagle3"} <= set(greedy)
    assert not any(
        m.startswith("vllm-")
        for suffix in ("-t1", "-context", "-sdar")
        for m in session.runs[suffix].split(",")
    )
