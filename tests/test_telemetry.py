"""Telemetry around one generation, alone or in a batch, with a fake NVML standing in for a GPU."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import torch
from conftest import random_prompts

import harness.run.telemetry as telemetry_module
from harness.methods import make_decoder
from harness.methods.target import Target
from harness.run.provenance import config_hash, git_state, hardware, model_provenance, versions
from harness.run.telemetry import NVML_FIELDS, NvmlSampler, Telemetry


class FakeNvml:
    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

    def __init__(self):
        self.energy_mj = 1_000_000
        self.calls = 0

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return 0

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [
            SimpleNamespace(pid=os.getpid(), usedGpuMemory=300 + self.calls),
            SimpleNamespace(pid=1, usedGpuMemory=9),
        ]

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.calls += 1
        return SimpleNamespace(used=1000 + 10 * self.calls)

    def nvmlDeviceGetPowerUsage(self, handle):
        return 250_000  # mW

    def nvmlDeviceGetClockInfo(self, handle, kind):
        return 1980 if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return 4 if self.calls % 2 else 1

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self.energy_mj += 5000
        return self.energy_mj

    def nvmlSystemGetDriverVersion(self):
        return b"560.35.03"


def fake_gpu_handle(nvml, device):
    """`nvml_handle` for a CPU run handed a FakeNvml: the fake's GPU stands for the device's (looked up by
    UUID, so a fake whose lookup fails gives no handle)."""
    return nvml.nvmlDeviceGetHandleByUUID("GPU-fake"), False


def test_nvml_sampler_summarises_a_background_series():
    nvml = FakeNvml()
    sampler = NvmlSampler(nvml, handle=0, interval_s=0.005)
    sampler.start()
    begin, energy0 = sampler.reading()
    time.sleep(0.05)
    sampler.stop()
    end, energy1 = sampler.reading()
    out = sampler.figures(begin, end, (energy1 - energy0) / 1000)
    assert out["nvml_samples"] >= 4  # the start and stop samples plus the thread's
    assert out["device_mem_peak_bytes"] == 1000 + 10 * nvml.calls
    assert out["process_mem_peak_bytes"] == 300 + nvml.calls - 1
    assert out["power_mean_w"] == 250 and out["sm_clock_mean_mhz"] == 1980
    assert out["throttle_reasons"] == 5  # every reason seen, OR-ed
    assert out["energy_j"] == 5.0 and out["energy_reliable"] is False  # far under a second


def test_telemetry_counts_forwards_by_kind_and_restores_the_model(model, monkeypatch):
    target = Target.of(model, "micro")
    monkeypatch.setattr(telemetry_module, "nvml_handle", fake_gpu_handle)
    telemetry = Telemetry(target.engine, torch.device("cpu"), nvml=FakeNvml())
    for spec in ("orthrus", "diffusion"):  # passes of the decode loop's engine; the model's own forwards
        telemetry.start()
        result = make_decoder(spec, target).generate(random_prompts(1)[0], 12, stop_token_ids=[])
        out = telemetry.stop()
        assert not {"forward", "step", "prefill"} & (set(vars(model)) | set(vars(target.engine)))
        assert (
            out.ar_forward_count == result.ar_forwards
            and out.diffusion_forward_count == result.draft_forwards
        )
        assert out.prefill_forward_ms > 0 and out.ar_forward_ms_mean > 0 and out.diffusion_forward_count > 0
        assert out.nvml_samples >= 2 and out.allocator_peak_bytes is None  # CPU: no allocator peak
    assert Telemetry(target.engine, torch.device("cpu"), enabled=False).stop() is None  # --no-telemetry


def test_requests_in_a_batch_share_its_figures_and_split_its_energy(model, monkeypatch):
    """Two requests overlapping in one decode: each reads the samples of its own stay, and the energy of every
    stretch between two admissions or finishes is split among the requests then in the batch, so the two add
    up to the batch's (the fake's counter gains 5 J at each reading)."""
    monkeypatch.setattr(telemetry_module, "nvml_handle", fake_gpu_handle)
    engine = Target.of(model, "micro").engine
    nvml = FakeNvml()
    telemetry = Telemetry(engine, torch.device("cpu"), nvml=nvml)
    telemetry.open()
    telemetry.admit("a")  # alone until b comes: 5 J its own
    telemetry.admit("b")  # a and b: 5 J shared
    a = telemetry.finish("a")
    b = telemetry.finish("b")  # b alone: 5 J its own
    telemetry.close()
    assert (a.energy_j, b.energy_j) == (7.5, 7.5) and a.energy_j + b.energy_j == 15.0
    # The readings at each one's admission and finish and at the other's admission or finish, and the thread's
    assert a.nvml_samples >= 3 and b.nvml_samples >= 3
    assert a.power_mean_w == b.power_mean_w == 250
    assert a.ar_forward_count == b.ar_forward_count == 0 and a.prefill_forward_ms is None  # no pass ran
    assert not {"forward", "step", "prefill"} & (set(vars(engine)) | set(vars(engine.model)))


def test_without_nvml_every_nvml_field_is_none(model):
    target = Target.of(model, "micro")
    telemetry = Telemetry(target.engine, torch.device("cpu"))
    telemetry.start()
    make_decoder("ar", target).generate(random_prompts(1)[0], 4)
    out = telemetry.stop()
    assert all(getattr(out, k) is None for k in NVML_FIELDS)


def test_provenance_fields(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    record = model_provenance("target", "x/y", tmp_path)
    assert record["weights"] == {
        "model.safetensors": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    }
    assert set(git_state()) == {"commit", "dirty"}
    assert versions()["torch"] == torch.__version__
    assert hardware(FakeNvml())["driver"] == "560.35.03"
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1}) != config_hash({"a": 2, "b": 2})


def test_a_generations_peak_is_its_own_bucket_and_the_graph_pool(model, monkeypatch):
    """A static engine keeps each bucket's cache for the process's life (its graphs read them); a short item
    after a long one must not report the long one's cache as its own, and what captured graphs reserve (never
    allocated to a tensor, so invisible to max_memory_allocated) counts. CUDA's allocator is faked."""
    target = Target.of(model, "micro")
    engine = target.engine
    engine.mode = "compile"  # static caches, no compilation before a pass
    long = engine.new_cache(1, 1000)  # a long item's 1,024-slot bucket, kept
    engine.pool_bytes = 7_000  # as if captures had reserved this much
    fake = SimpleNamespace(
        synchronize=lambda device=None: None,
        reset_peak_memory_stats=lambda device=None: None,
        max_memory_allocated=lambda device=None: 10_000_000,
    )
    monkeypatch.setattr(torch, "cuda", fake)
    telemetry = Telemetry(engine, torch.device("cuda"))
    telemetry.start()
    short = engine.new_cache(1, 100)  # this generation's 256-slot bucket
    out = telemetry.stop()
    assert short.capacity == 256 and out.kv_capacity == 256
    assert out.other_caches_bytes == long.nbytes > 0
    assert out.graph_pool_bytes == 7_000
    assert out.allocator_peak_bytes == 10_000_000 - long.nbytes + 7_000
