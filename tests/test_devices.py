"""A device per process, end to end, shown without a GPU: under a launcher rank 3 of 4 loads, decodes,
synchronises and reads NVML on cuda:3 (its own GPU), a task shown only its own GPU on that one, and `--device
cuda:1` on cuda:1, never GPU 0; NVML reads the GPU whose UUID is the device's. What only a GPU has
(torch.cuda's calls, NVML) is faked; each test records the device every step is handed."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

import harness.run.launch as launch_module
import harness.run.runner as runner
from harness.cli.run import run_launched
from harness.run.launch import LaunchEnv, check_own_devices, launched_device
from harness.run.spec import RunError, RunSpec
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


class CUuuid:
    """torch's _CUuuid: a UUID that is only printed (str), as torch's own is."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


@pytest.fixture
def cuda_uuids(monkeypatch):
    """torch's devices by the UUIDs a test gives, in torch's order: set_uuids([...])."""

    def set_uuids(uuids):
        monkeypatch.setattr(
            torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=CUuuid(uuids[i]))
        )
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU {uuids[i][:4]}")
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(uuids))

    return set_uuids


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


@pytest.fixture
def launched(monkeypatch, tmp_path, cuda_uuids):
    """run_launched as one process of a launch, seeing the GPUs given by UUID (torch's order): what execute is
    handed (and set_device, and whether the process joined the group), or the error it raised."""

    def run(launch: LaunchEnv, uuids: list[str], visible: str | None = None) -> dict:
        seen = {}
        cuda_uuids(uuids)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.setdefault("set_device", d))
        monkeypatch.setattr(launch_module, "connect", lambda launch: seen.setdefault("connected", True))
        monkeypatch.setattr(launch_module, "check_own_devices", lambda launch, uuid: None)
        monkeypatch.setattr(launch_module, "gather_finished", lambda finished: [finished])
        monkeypatch.setattr(
            runner, "execute", lambda spec, out, **kwargs: seen.update(spec_device=spec.device, **kwargs)
        )
        spec = RunSpec(model=None, methods=["ar"], suites=["tiny-math"], device="cuda", limit=1)
        args = SimpleNamespace(out=str(tmp_path / "run"), shard=None, resume=False, retry_failed=False)
        try:
            assert run_launched(spec, args, launch) == 0  # not rank 0: no merge
        except RunError as exc:
            seen["error"] = str(exc)
        return seen

    return run


GPUS = [f"{i}{i}{i}{i}{i}{i}{i}{i}-0000-0000-0000-00000000000{i}" for i in range(8)]


def test_rank_3_of_4_seeing_the_nodes_gpus_runs_on_cuda_3(launched):
    """The launched path hands execute the rank's own device; the spec (and the config hash) keeps "cuda"."""
    seen = launched(LaunchEnv("torchrun", rank=3, world_size=4, local_rank=3), GPUS[:4])
    assert seen["set_device"] == 3 and seen["device"] == "cuda:3" and seen["spec_device"] == "cuda"
    assert seen["shard"] == (3, 4)
    assert {k: seen["launch"][k] for k in ("device", "device_source", "device_uuid")} == {
        "device": "cuda:3",
        "device_source": "LOCAL_RANK",
        "device_uuid": GPUS[3],
    }


def test_a_task_shown_only_its_own_gpu_runs_on_it_whatever_its_local_rank(launched):
    """srun --gpus-per-task=1: task 6 of 8 (local 2 of 4 on the second node) sees one GPU, as cuda:0."""
    seen = launched(LaunchEnv("slurm", rank=6, world_size=8, local_rank=2), [GPUS[6]], visible="2")
    assert seen["set_device"] == 0 and seen["device"] == "cuda:0" and seen["connected"]
    assert {k: seen["launch"][k] for k in ("device", "device_source", "device_uuid")} == {
        "device": "cuda:0",
        "device_source": "the one visible device",
        "device_uuid": GPUS[6],
    }


def test_a_local_rank_beyond_the_visible_gpus_is_refused_before_joining_the_others(launched):
    seen = launched(LaunchEnv("torchrun", rank=3, world_size=4, local_rank=3), GPUS[:2], visible="0,1")
    assert "set_device" not in seen and "connected" not in seen and "launch" not in seen
    assert (
        "LOCAL_RANK=3" in seen["error"]
        and "sees 2 CUDA device(s) (CUDA_VISIBLE_DEVICES=0,1)" in seen["error"]
    )
    assert "srun --gpus-per-task=1" in seen["error"]


@pytest.mark.parametrize(
    "launcher, local_rank, visible, expected",
    [
        ("torchrun", 0, 1, (0, "the one visible device")),
        ("torchrun", 5, 1, (0, "the one visible device")),
        ("torchrun", 5, 8, (5, "LOCAL_RANK")),
        ("slurm", 1, 2, (1, "SLURM_LOCALID")),  # each task shown a pair, or a node of two: its own either way
        ("slurm", 3, 2, "SLURM_LOCALID=3, but it sees 2 CUDA device(s) (CUDA_VISIBLE_DEVICES is not set)"),
        ("accelerate", 0, 0, "LOCAL_RANK=0, but it sees 0 CUDA device(s)"),
    ],
)
def test_launched_device(monkeypatch, launcher, local_rank, visible, expected):
    launch = LaunchEnv(launcher, rank=local_rank, world_size=8, local_rank=local_rank)
    if isinstance(expected, str):
        with pytest.raises(RunError, match=re.escape(expected)):
            launched_device(launch, visible, env={})
    else:
        assert launched_device(launch, visible, env={}) == expected


@pytest.mark.parametrize(
    "uuids, refused",
    [
        (
            [GPUS[0], GPUS[1], GPUS[0], GPUS[2]],
            "ranks 0, 2 on GPU " + GPUS[0],
        ),  # CUDA_VISIBLE_DEVICES exported
        ([GPUS[0], GPUS[1], GPUS[2], GPUS[3]], None),
        ([None, None], None),  # CPU processes share the CPU
    ],
)
def test_two_processes_on_one_gpu_are_refused_by_every_rank(monkeypatch, uuids, refused):
    """Every rank sees every rank's GPU UUID, so all refuse alike and none waits for another."""
    left = []

    def all_gather_object(out, mine):
        out[:] = uuids

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: left.append(True))
    launch = LaunchEnv("torchrun", rank=1, world_size=len(uuids), local_rank=1)
    if refused is None:
        check_own_devices(launch, uuids[1])
        assert not left
    else:
        with pytest.raises(RunError, match=re.escape(refused)):
            check_own_devices(launch, uuids[1])
        assert left == [True]  # the group is left before the error ends the process


def test_the_clock_waits_for_the_models_device_not_the_current_one(fake_cuda):
    Clock(torch.device("cuda", 1))()
    assert fake_cuda == [("synchronize", torch.device("cuda", 1))]


class NvmlError(Exception):
    """pynvml.NVMLError's stand-in (what NVML raises for an unknown UUID or an unsupported query)."""


# A node whose PCI bus order (NVML's numbering) is not CUDA's fastest-first one: an A100 on bus 0, an H100 on
# bus 1 (CUDA's device 0), and an A100 partitioned into MIG instances on bus 2.
A100 = "aaaaaaaa-0000-0000-0000-000000000000"
H100 = "bbbbbbbb-1111-1111-1111-111111111111"
A100_MIG = "cccccccc-2222-2222-2222-222222222222"
INSTANCE = "dddddddd-3333-3333-3333-333333333333"  # a MIG instance of A100_MIG


class FakeNvml:
    """NVML on that node: whole GPUs by "GPU-" UUID (a handle is ("gpu", PCI bus position)), MIG instances by
    "MIG-" UUID; the H100 has no MIG support."""

    NVMLError = NvmlError
    NVML_DEVICE_MIG_ENABLE = 1
    GPUS = [A100, H100, A100_MIG]  # PCI bus order

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid.startswith("GPU-") and uuid[4:] in self.GPUS:
            return ("gpu", self.GPUS.index(uuid[4:]))
        if uuid == f"MIG-{INSTANCE}":
            return ("mig", INSTANCE)
        raise NvmlError("Not Found")

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        assert handle == ("mig", INSTANCE)
        return ("gpu", self.GPUS.index(A100_MIG))

    def nvmlDeviceGetMigMode(self, handle):
        if handle == ("gpu", self.GPUS.index(H100)):
            raise NvmlError("Not Supported")
        return [1 if handle == ("gpu", self.GPUS.index(A100_MIG)) else 0, 0]


@pytest.mark.parametrize(
    "visible, torch_order, nvml_positions",
    [
        (None, [H100, A100], [1, 0]),  # CUDA's cuda:0 is the H100, NVML's device 0 the A100
        ("1", [A100], [0]),  # CUDA's device 1 (the A100) is NVML's 0: the entry is not an NVML index
        ("1,0", [A100, H100], [0, 1]),
    ],
)
def test_nvml_reads_the_gpu_whose_uuid_is_the_devices_not_the_one_at_its_index(
    monkeypatch, cuda_uuids, visible, torch_order, nvml_positions
):
    """CUDA numbers the devices fastest first and CUDA_VISIBLE_DEVICES' indices are CUDA's; NVML numbers them
    in PCI bus order. Each torch device reads the GPU that is it."""
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    cuda_uuids(torch_order)
    for index, position in enumerate(nvml_positions):
        assert nvml_handle(FakeNvml(), torch.device("cuda", index)) == (("gpu", position), False)


@pytest.mark.parametrize("reported", [INSTANCE, A100_MIG], ids=["instance-uuid", "parent-uuid"])
def test_a_mig_instance_reads_its_parent_gpu_flagged_whole_gpu(monkeypatch, cuda_uuids, reported):
    """Whichever UUID CUDA reports for a MIG instance (its own, or its GPU's), NVML reads the parent GPU and
    the figures are flagged as the whole GPU's."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"MIG-{INSTANCE}")
    cuda_uuids([reported])
    assert nvml_handle(FakeNvml(), torch.device("cuda:0")) == (("gpu", 2), True)


def test_a_device_nvml_does_not_know_gets_no_nvml_figures_and_says_why(monkeypatch, cuda_uuids, model):
    from harness.methods.target import Target

    unknown = "eeeeeeee-4444-4444-4444-444444444444"
    cuda_uuids([H100, unknown])
    with pytest.raises(
        LookupError, match=f"NVML knows no GPU or MIG instance with the UUID of cuda:1 \\({unknown}\\)"
    ):
        nvml_handle(FakeNvml(), torch.device("cuda:1"))
    for name in ("synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 0)
    telemetry = Telemetry(Target.of(model, "micro").engine, torch.device("cuda", 1), nvml=FakeNvml())
    telemetry.start()
    fields = telemetry.stop()  # the generation is measured; only NVML's figures are missing, with the reason
    assert telemetry.sampler is None and fields.nvml_samples is None and fields.power_mean_w is None
    assert unknown in fields.nvml_error and fields.nvml_error.startswith("LookupError: NVML knows no GPU")


def test_telemetry_samples_the_devices_own_gpu(monkeypatch, cuda_uuids, model):
    from harness.methods.target import Target

    cuda_uuids([H100, A100])
    telemetry = Telemetry(Target.of(model, "micro").engine, torch.device("cuda", 1), nvml=FakeNvml())
    assert telemetry.sampler.handle == ("gpu", 0) and telemetry.sampler.whole_gpu is False


def test_hardware_names_each_gpu_with_its_uuid(cuda_uuids):
    from harness.run.provenance import hardware

    cuda_uuids([H100, A100])
    assert hardware()["gpus"] == [{"name": "GPU bbbb", "uuid": H100}, {"name": "GPU aaaa", "uuid": A100}]
