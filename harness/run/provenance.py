"""What a run was: code, software, hardware, configuration and weights, enough to reproduce or distrust it."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from harness.paths import PROJECT_ROOT, checkpoint_name

PACKAGES = (
    "orthrus-bench",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "scipy",
    "pandas",
    "datasets",
    "math-verify",
    "nvidia-ml-py",
)


def config_hash(obj) -> str:
    """sha256 of the canonical JSON of obj (sorted keys), first 16 hex digits."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_state() -> dict:
    def git(*args):
        return subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10
        )

    try:
        head = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_uuid(index: int) -> str:
    """The UUID of CUDA device `index` (torch's numbering of the visible devices) as torch prints it: 32 hex
    digits in 8-4-4-4-12 groups, what `nvidia-smi -L` shows after "GPU-" (or "MIG-" for a MIG instance).
    Unlike an index it names one physical GPU in torch, NVML and every process, whatever CUDA_VISIBLE_DEVICES
    and CUDA_DEVICE_ORDER say."""
    return str(torch.cuda.get_device_properties(index).uuid)


def hardware(nvml=None) -> dict:
    import os

    out = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "gpus": [
            {"name": torch.cuda.get_device_name(i), "uuid": cuda_uuid(i)}
            for i in range(torch.cuda.device_count())
        ],
        "driver": None,
    }
    if nvml is not None:
        driver = nvml.nvmlSystemGetDriverVersion()
        out["driver"] = driver.decode() if isinstance(driver, bytes) else driver
    return out


def model_provenance(role: str, spec: str, directory: Path) -> dict:
    """A checkpoint as given (`spec`) and as loaded, by a name that means something elsewhere
    (harness.paths.checkpoint_name: a path relative to the repository, a hub id at its revision, else the
    absolute path; `origin` says which), with the sha256 of every weight file."""
    directory = Path(directory)
    weights = sorted(
        p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin") and not p.name.startswith(".")
    )
    return {
        "role": role,
        "spec": spec,
        **checkpoint_name(directory),
        "weights": {p.name: file_sha256(p) for p in weights},
    }


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]
