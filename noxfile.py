"""nox sessions.

    nox                                   lint and tests
    nox -s bench-tiny [-- RUN OPTIONS]    the embedded default on CPU: run (T=0 and T=1), verify, report
                                          -> results/tiny, results/tiny-t1, reports/tiny
    nox -s bench-1.7b | bench-4b | bench-8b [-- RUN OPTIONS]
                                          the same on chiennv/Orthrus-Qwen3-N with the baselines over the
                                          paper's eight Table 1 suites, greedy with vLLM's methods beside
                                          them (the `vllm` extra: Orthrus against DFlash and EAGLE-3 in both
                                          engines), on a GPU (skipped, with a message, where no CUDA device
                                          is present)
    nox -s bench-specbench [-- RUN OPTIONS]
                                          Spec-Bench's 480 questions on chiennv/Orthrus-Qwen3-8B (pass
                                          --model to change it) with every lossless method, greedy
    nox -s bench-batch-8b [-- RUN OPTIONS]
                                          the concurrency sweep (B = 1 … 64, continuous batching) of the
                                          batched methods on chiennv/Orthrus-Qwen3-8B, on a GPU: one verified
                                          run per B, then the report's Batching section
    nox -s report -- RUN [RUN…] --out reports/NAME
    nox -s compare -- BASE NEW [--threshold 0.05]

Arguments after `--` go to `orthrus-bench run` (bench sessions) or to the command itself (report, compare).

Interpreters: `tests` and `lint` use the one nox runs under. Every other session uses one pinned Python,
BENCH_PYTHON, found on PATH (never downloaded), in a reused virtualenv, so results do not depend on which
interpreter happened to run them; `nox --no-venv -s ...` runs them in the current environment instead.
TORCH_SPEC picks the torch wheel: `torch==2.13.0` by default (the CPU wheel on CPU-only machines with a
local wheel cache, the CUDA build from PyPI elsewhere).
"""

import os
import re
import shutil
import subprocess
import sys

import nox

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness.methods import BATCHED, OWN, REGISTRY, is_greedy_only  # noqa: E402 (torch-free: the registry)

nox.needs_version = ">=2025.10.14"  # download_python=
nox.options.sessions = ["lint", "tests"]
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
BENCH_PYTHON = "3.11"
PINNED = dict(python=BENCH_PYTHON, reuse_venv=True, download_python="never", default=False)

# The paper's Table 1 suites in its order (Figure 4 uses four of them) and the long-context sweep. The methods
# registry finds the baselines' drafts for chiennv/Orthrus-Qwen3-N itself (harness/methods/checkpoints.py:
# AngelSlim's EAGLE-3 heads, z-lab's DFlash drafters, none published for 1.7B); the standalone block-diffusion
# LM is SDAR (Qwen3-based; the DFlash blog's baseline, block 16, threshold 0.9), run as its own target.
GPU_SUITES = "gsm8k,math500,aime24,aime25,humaneval,mbpp,pseudo2code,livecodebench"
CONTEXT_SUITE = "longctx"
GPU_SIZES = {"1.7b": "1.7B", "4b": "4B", "8b": "8B"}
SDAR_METHOD = "diffusion:layout=sdar:block_size=16:mask_token_id=151669"
ALL_METHODS = list(OWN)  # every method of the project's engine (vLLM's need an extra)
# vLLM's methods (vllm-ar, vllm-pld, vllm-eagle3, vllm-dflash, vllm-orthrus): the GPU benchmarks' greedy run's.
VLLM_METHODS = [m.name for m in REGISTRY if m.backend == "vllm"]
# The engine's honest baselines (orthrus_core.engine): transformers' compiled StaticCache AR, the strongest
# off-the-shelf AR, and Orthrus on a DynamicCache as the official code writes it.
BASELINES = ["ar-hf:cache=static", "orthrus:cache=dynamic"]
# What decodes in batches (the registry's batched methods) and the sweep's batch sizes.
BATCH_METHODS = ",".join(BATCHED)
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64]


def methods_list(methods: list[str], temperature: float) -> str:
    """The methods a run at `temperature` can take: the T=1 runs leave out the greedy-only ones."""
    return ",".join(m for m in methods if temperature == 0 or not is_greedy_only(m))


@nox.session
def tests(session: nox.Session) -> None:
    session.install(TORCH_SPEC)
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")  # as the test extra pins it
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


def install_project(session: nox.Session, extra: str | None = None) -> None:
    """torch (TORCH_SPEC), then the project with its `extra` (an optional dependency of pyproject.toml)."""
    if session.venv_backend == "none":  # `nox --no-venv`: use the current environment, which has the project
        return
    session.install(TORCH_SPEC)
    session.install("-e", f".[{extra}]" if extra else ".")


def split_out(args: list[str], default: str) -> tuple[str, list[str]]:
    """`--out DIR` (or `--out=DIR`) taken out of `args`: (DIR or `default`, the other arguments)."""
    out, rest, i = default, [], 0
    while i < len(args):
        if args[i] == "--out" and i + 1 < len(args):
            out, i = args[i + 1], i + 2
            continue
        if args[i].startswith("--out="):
            out = args[i].split("=", 1)[1]
        else:
            rest.append(args[i])
        i += 1
    return out, rest


def has_command(session: nox.Session, command: str) -> bool:
    usage = session.run("orthrus-bench", "--help", silent=True) or ""
    choices = re.search(r"\{([^}]*)\}", usage)
    return choices is not None and command in choices.group(1).split(",")


def attempt(session: nox.Session, *command: str) -> bool:
    """Run a command; False (with the failure logged) where it exits non-zero, so that the session goes on."""
    try:
        session.run(*command)
    except nox.command.CommandFailed:
        return False
    return True


def verify_and_report(session: nox.Session, runs: list[str], report_dir: str) -> list[str]:
    """Verify every run and report them all; -> what failed (a failed verdict is a finding: the report still
    shows it)."""
    failed = []
    if has_command(session, "verify"):
        failed += [f"verify {run}" for run in runs if not attempt(session, "orthrus-bench", "verify", run)]
    else:
        session.warn("this checkout has no `orthrus-bench verify`; the report will say 'not verified'")
    if not attempt(session, "orthrus-bench", "report", *runs, "--out", report_dir):
        failed.append("report")
    return failed


def bench(session: nox.Session, name: str, runs: dict[str, list[str]]) -> None:
    """Each run (directory suffix -> `orthrus-bench run` arguments) into results/NAME<suffix>, then verify
    and report them together into reports/NAME. `--out` in the pass-through arguments replaces results/NAME.

    A run that fails (a lossless method's failed verdict exits 1) does not stop the session: every remaining
    run, the verification and the report happen, and the session then fails, naming what failed."""
    out, passthrough = split_out(session.posargs, f"results/{name}")
    directories, failed = [], []
    for suffix, args in runs.items():
        directory = out + suffix
        if not attempt(session, "orthrus-bench", "run", *args, *passthrough, "--out", directory):
            failed.append(f"run {directory}")
        if os.path.exists(os.path.join(directory, "run.json")):  # a run refused up front left nothing
            directories.append(directory)
    if directories:
        failed += verify_and_report(session, directories, f"reports/{os.path.basename(out)}")
    if failed:
        session.error(f"failed: {'; '.join(failed)} (every run, verdict and report that could be made was)")


@nox.session(name="bench-tiny", **PINNED)
def bench_tiny(session: nox.Session) -> None:
    install_project(session)
    # No suite or model: the embedded default (tiny family, tiny suites, every method), greedy and at T=1.
    sampled = ["--temperature", "1", "--methods", methods_list(ALL_METHODS, 1)]
    bench(session, "tiny", {"": [], "-t1": sampled})


def cuda_device() -> str | None:
    """The first GPU's name, asked of nvidia-smi before anything is installed; None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return listing.stdout.splitlines()[0] if listing.returncode == 0 and listing.stdout.strip() else None


def require_cuda(session: nox.Session, name: str) -> None:
    """Skip the session, with a message, where no CUDA device is present; else say which one it runs on."""
    device = cuda_device()
    if device is None:
        session.skip(f"{name} needs a CUDA device and this machine has none (nvidia-smi -L lists no GPU)")
    session.log(f"benchmarking on {device}")


def gpu_bench(session: nox.Session, size: str) -> None:
    require_cuda(session, f"bench-{size}")
    methods = ALL_METHODS + BASELINES
    # vLLM's methods join the greedy run: it answers Orthrus against DFlash and EAGLE-3 in both engines
    vllm = list(VLLM_METHODS)
    if size == "1.7b":  # no public DFlash drafter for Qwen3-1.7B
        methods.remove("dflash")
        vllm.remove("vllm-dflash")
    gpu = ["--dtype", "bfloat16", "--device", "cuda"]
    orthrus = ["--model", f"chiennv/Orthrus-Qwen3-{GPU_SIZES[size]}", *gpu]
    sdar = ["--model", f"JetLM/SDAR-{GPU_SIZES[size]}-Chat-b16", *gpu, "--methods", SDAR_METHOD]
    install_project(session, "vllm")  # mainline vLLM at the version the adapter is tested with, on CUDA
    bench(
        session,
        f"qwen3-{size}",
        {
            "": [*orthrus, "--suite", GPU_SUITES, "--methods", methods_list(methods + vllm, 0)],
            "-t1": [
                *orthrus,
                "--suite",
                GPU_SUITES,
                "--temperature",
                "1",
                "--methods",
                methods_list(methods, 1),
            ],
            "-context": [*orthrus, "--suite", CONTEXT_SUITE, "--methods", methods_list(methods, 0)],
            "-sdar": [*sdar, "--suite", GPU_SUITES],
        },
    )


@nox.session(name="bench-specbench", **PINNED)
def bench_specbench(session: nox.Session) -> None:
    # Spec-Bench's leaderboard table (the report's "Spec-Bench" section), the 8B model and its baselines.
    require_cuda(session, "bench-specbench")
    install_project(session)
    methods = methods_list([m for m in ALL_METHODS if m != "diffusion"], 0)
    model = ["--model", "chiennv/Orthrus-Qwen3-8B", "--dtype", "bfloat16", "--device", "cuda"]
    bench(session, "specbench-8b", {"": [*model, "--suite", "specbench", "--methods", methods]})


@nox.session(name="bench-batch-8b", **PINNED)
def bench_batch_8b(session: nox.Session) -> None:
    require_cuda(session, "bench-batch-8b")
    install_project(session)
    out, passthrough = split_out(session.posargs, "results/batch-8b")
    model = ["--model", "chiennv/Orthrus-Qwen3-8B", "--dtype", "bfloat16", "--device", "cuda"]
    sizes = ",".join(map(str, BATCH_SIZES))
    sweep = ["--suite", "gsm8k,mtbench", "--methods", BATCH_METHODS, "--batch-sizes", sizes, "--continuous"]
    ran = attempt(session, "orthrus-bench", "run", *model, *sweep, *passthrough, "--out", out)
    runs = [f"{out}/batch-{b}" for b in BATCH_SIZES if os.path.exists(f"{out}/batch-{b}/run.json")]
    reported = bool(runs) and attempt(
        session, "orthrus-bench", "report", *runs, "--out", f"reports/{os.path.basename(out)}"
    )
    if not (ran and reported):  # a failed verdict in one batch size still leaves the others' and the report
        session.error(
            f"failed: {'the sweep' if not ran else ''}{' and ' if not (ran or reported) else ''}{'the report' if not reported else ''}"
        )


@nox.session(name="bench-1.7b", **PINNED)
def bench_1_7b(session: nox.Session) -> None:
    gpu_bench(session, "1.7b")


@nox.session(name="bench-4b", **PINNED)
def bench_4b(session: nox.Session) -> None:
    gpu_bench(session, "4b")


@nox.session(name="bench-8b", **PINNED)
def bench_8b(session: nox.Session) -> None:
    gpu_bench(session, "8b")


@nox.session(**PINNED)
def report(session: nox.Session) -> None:
    if not session.posargs:
        session.error("usage: nox -s report -- RUN [RUN…] --out reports/NAME")
    install_project(session)
    session.run("orthrus-bench", "report", *session.posargs)


@nox.session(**PINNED)
def compare(session: nox.Session) -> None:
    if len(session.posargs) < 2:
        session.error("usage: nox -s compare -- BASE NEW [--threshold 0.05] [--out summary.md]")
    install_project(session)
    session.run("orthrus-bench", "compare", *session.posargs)
