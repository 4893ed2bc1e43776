"""A device per process, end to end, shown without a GPU: under a launcher rank 3 of 4 loads, decodes,
synchronises and reads NVML on cuda:3 (its own GPU), and `--device cuda:1` on cuda:1, never GPU 0. What only a
GPU has (torch.cuda's calls, NVML) is faked; each test records the device every step is handed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import harness.run.launch as launch_module
import harness.run.runner as runner
from harness.cli.run import run_launched
from harness.run.launch import LaunchEnv
from harness.run.spec import RunSpec
from harness.run.telemetry import Telemetry, nvml_handle
from orthrus_core.generation import Clock


class Loaded(Exception):
    """Raised by the fake loader: what was asked is all a test needs."""


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's device calls, recorded."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(("synchronize", d)))
    monkeypatch.setattr(runner, "check_device", lambda d: calls.append(("check_device", d)))

    def load_target(model, dtype, device, engine, quantize):
        calls.append(("load_target", device))
        raise Loaded

    monkeypatch.setattr(runner, "load_target", load_target)
    return calls


@pytest.mark.parametrize("device", ["cuda:3", "cuda:1"])
def test_a_run_loads_onto_and_makes_current_the_device_it_is_given(fake_cuda, device):
    spec = RunSpec(model=None, methods=["ar"], suites=["tiny-math"], device="cuda", limit=1)
    with pytest.raises(Loaded):
        runner.prepare(spec, device=device)
    assert fake_cuda == [
        ("check_device", device),
        ("set_device", torch.device(device)),
        ("load_target", device),  # safetensors is handed cuda:N, not "cuda" (which it reads as cuda:0)
    ]


def test_rank_3_of_4_runs_on_cuda_3(monkeypatch, tmp_path):
    """The launched path hands execute the rank's own device; the spec (and the config hash) keeps "cuda"."""
    seen = {}
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.setdefault("set_device", d))
    monkeypatch.setattr(launch_module, "connect", lambda launch: None)
    monkeypatch.setattr(launch_module, "gather_finished", lambda finished: [finished])

    def execute(spec, out, **kwargs):
        seen.update(spec_device=spec.device, **kwargs)

    monkeypatch.setattr(runner, "execute", execute)
    spec = RunSpec(model=None, methods=["ar"], suites=["tiny-math"], device="cuda", limit=1)
    args = SimpleNamespace(out=str(tmp_path / "run"), shard=None, resume=False, retry_failed=False)
    launch = LaunchEnv("torchrun", rank=3, world_size=4, local_rank=3)
    assert run_launched(spec, args, launch) == 0  # not rank 0: no merge
    assert seen["set_device"] == 3 and seen["device"] == "cuda:3" and seen["spec_device"] == "cuda"
    assert seen["launch"]["device"] == "cuda:3" and seen["shard"] == (3, 4)


def test_the_clock_waits_for_the_models_device_not_the_current_one(fake_cuda):
    Clock(torch.device("cuda", 1))()
    assert fake_cuda == [("synchronize", torch.device("cuda", 1))]


class FakeNvml:
    def nvmlDeviceGetHandleByIndex(self, index):
        return ("index", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return ("uuid", uuid)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        return ("parent of", handle)


@pytest.mark.parametrize(
    "visible, device, expected",
    [
        (None, "cuda:3", (("index", 3), False)),
        ("4,5,6,7", "cuda:3", (("index", 7), False)),  # torch's 3 is the fourth visible: physical 7
        ("6, 2", "cuda:1", (("index", 2), False)),
        ("GPU-aa,GPU-bb", "cuda:1", (("uuid", "GPU-bb"), False)),
        ("MIG-cc", "cuda:0", (("parent of", ("uuid", "MIG-cc")), True)),  # the whole GPU's figures, flagged
    ],
)
def test_nvml_reads_the_physical_gpu_of_the_device(monkeypatch, visible, device, expected):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert nvml_handle(FakeNvml(), torch.device(device)) == expected


def test_telemetry_samples_the_devices_own_gpu(monkeypatch, model):
    from harness.methods.target import Target

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    telemetry = Telemetry(Target.of(model, "micro").engine, torch.device("cuda", 3), nvml=FakeNvml())
    assert telemetry.sampler.handle == ("index", 7) and telemetry.sampler.whole_gpu is False
