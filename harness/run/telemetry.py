"""Per-generation device telemetry: allocator peak, NVML memory / power / clocks / throttling, energy, and
per-forward times, as a record's `TelemetryFields` (harness.records).

NVML (`nvidia-ml-py`, imported as `pynvml`) is read by a background thread every `interval_s`, so sampling
never runs on the decoding thread; energy is the difference of the device's total-energy counter
(`nvmlDeviceGetTotalEnergyConsumption`, mJ) across the generation, flagged unreliable below a second because
the counter updates every few tens of milliseconds. NVML reads the GPU whose UUID is the device's
(`nvml_handle`). Without a GPU (or without pynvml) every NVML field is None; where NVML is there but cannot
be read for the device, `nvml_error` says why. Tests pass a fake `nvml` module.
"""

from __future__ import annotations

import os
import threading
import time
from statistics import fmean, median

import torch

from harness.records import TelemetryFields

from .provenance import cuda_uuid

ENERGY_MIN_RELIABLE_S = 1.0


def load_nvml():
    """The pynvml module, initialised, or None when the library or a driver is missing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # ImportError, or NVMLError when no driver: both mean "no NVML"
        return None


def nvml_handle(nvml, device: torch.device) -> tuple[object, bool]:
    """The NVML handle of the physical GPU CUDA device `device` is, and whether `device` is a MIG instance
    (then the handle is its parent GPU's, and power, energy and device memory are the whole GPU's, not the
    instance's).

    Matched by the device's UUID, never by an index: CUDA numbers the visible devices fastest first (unless
    CUDA_DEVICE_ORDER=PCI_BUS_ID) and NVML numbers every device in PCI bus order, so on a node of mixed or
    reordered GPUs one index names two different GPUs. Raises LookupError, naming the UUID, where NVML knows
    no GPU or MIG instance by it (Telemetry then records why and samples nothing)."""
    if device.type != "cuda":
        raise ValueError(f"{device} is not a CUDA device: NVML has no figures for it")
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = cuda_uuid(index)
    try:
        gpu = nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    except nvml.NVMLError:  # not a whole GPU's UUID: a MIG instance's, or one NVML does not know
        try:
            instance = nvml.nvmlDeviceGetHandleByUUID(f"MIG-{uuid}")
        except nvml.NVMLError:
            raise LookupError(
                f"NVML knows no GPU or MIG instance with the UUID of {device} ({uuid}): "
                "no NVML figures for it"
            ) from None
        return nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(instance), True
    return gpu, mig_enabled(nvml, gpu)


def mig_enabled(nvml, gpu) -> bool:
    """Whether the GPU is partitioned into MIG instances. CUDA then sees only its instances, so a device that
    resolved to this GPU is one of them, whichever UUID (the instance's or the GPU's) CUDA reported for it."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(gpu)
    except nvml.NVMLError:  # NotSupported: a GPU without MIG
        return False
    return current == nvml.NVML_DEVICE_MIG_ENABLE


class NvmlSampler:
    """Samples one device (an NVML handle, `nvml_handle`) in a background thread between start() and stop();
    `whole_gpu`: the handle is a MIG instance's parent, so its figures are the whole GPU's."""

    def __init__(self, nvml, handle, interval_s: float = 0.05, whole_gpu: bool = False):
        self.nvml = nvml
        self.handle = handle
        self.whole_gpu = whole_gpu
        # why sampling stopped (NVML failed, NotSupported): its fields are then None
        self.error: str | None = None
        self.interval_s = interval_s
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples: list[dict] = []

    def _sample(self) -> dict:
        n, h = self.nvml, self.handle
        process_bytes = None
        for p in n.nvmlDeviceGetComputeRunningProcesses(h):
            if p.pid == self.pid:
                process_bytes = p.usedGpuMemory
        return {
            "device_bytes": n.nvmlDeviceGetMemoryInfo(h).used,
            "process_bytes": process_bytes,
            "power_w": n.nvmlDeviceGetPowerUsage(h) / 1000,
            "sm_mhz": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM),
            "mem_mhz": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM),
            "throttle": n.nvmlDeviceGetCurrentClocksEventReasons(h),
        }

    def _failed(self, exc: Exception) -> None:
        self.error = f"{type(exc).__name__}: {exc}"

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append(self._sample())
            except Exception as exc:  # NVML failed mid-generation: no more samples, the fields say why
                self._failed(exc)
                return

    def start(self) -> None:
        self.error, self._thread = None, None
        try:
            self.samples = [self._sample()]
            self._energy0 = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except Exception as exc:
            self._failed(exc)
            return
        self._t0 = time.perf_counter()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def abort(self) -> None:
        """Stop the thread, reading nothing (the generation failed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def stop(self) -> dict:
        """The generation's figures; None each, with `nvml_error`, where NVML failed."""
        self.abort()
        try:
            if self.error is None:
                self.samples.append(self._sample())
                energy = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except Exception as exc:
            self._failed(exc)
        if self.error is not None:
            return {**dict.fromkeys(NVML_FIELDS), "nvml_error": self.error}
        duration = time.perf_counter() - self._t0
        energy_j = (energy - self._energy0) / 1000
        throttle = 0
        for s in self.samples:
            throttle |= s["throttle"]
        process = [s["process_bytes"] for s in self.samples if s["process_bytes"] is not None]
        return {
            "nvml_samples": len(self.samples),
            "device_mem_peak_bytes": max(s["device_bytes"] for s in self.samples),
            "process_mem_peak_bytes": max(process) if process else None,
            "power_mean_w": fmean(s["power_w"] for s in self.samples),
            "sm_clock_mean_mhz": fmean(s["sm_mhz"] for s in self.samples),
            "mem_clock_mean_mhz": fmean(s["mem_mhz"] for s in self.samples),
            "throttle_reasons": throttle,
            "energy_j": energy_j,
            "energy_reliable": duration >= ENERGY_MIN_RELIABLE_S,
            "nvml_whole_gpu": self.whole_gpu,
            "nvml_error": None,
        }


# What NvmlSampler.stop() measures: all None without a GPU or NVML.
NVML_FIELDS = (
    "nvml_samples",
    "device_mem_peak_bytes",
    "process_mem_peak_bytes",
    "power_mean_w",
    "sm_clock_mean_mhz",
    "mem_clock_mean_mhz",
    "throttle_reasons",
    "energy_j",
    "energy_reliable",
    "nvml_whole_gpu",
)
FORWARD_KINDS = ("ar", "diffusion")


class ForwardTimer:
    """Times every pass of a target between attach() and detach(), by kind ("ar" or "diffusion"): the engine's
    prefills and steps (orthrus_core.engine, what the decode loop runs, compiled or captured included) and the
    model's own forwards outside them (the lossy block-diffusion decoder). A pass inside another one is not
    counted twice.

    On a GPU each pass is bracketed by CUDA events (read once, after the generation, so timing adds no host
    sync); on a CPU by perf_counter. Wraps the instances' methods, so the decoder is unchanged."""

    def __init__(self, engine, device: torch.device):
        self.engine, self.model = engine, engine.model
        self.cuda = device.type == "cuda"
        self.events: dict[str, list] = {kind: [] for kind in FORWARD_KINDS}
        self.depth = 0

    def _wrap(self, owner, name: str, kind_of) -> None:
        method = getattr(type(owner), name).__get__(owner)
        events = self.events

        def timed(*args, **kwargs):
            if self.depth:  # inside a pass already timed
                return method(*args, **kwargs)
            kind = kind_of(args, kwargs)
            self.depth += 1
            try:
                if self.cuda:
                    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    begin.record()
                    out = method(*args, **kwargs)
                    end.record()
                    events[kind].append((begin, end))
                else:
                    t0 = time.perf_counter()
                    out = method(*args, **kwargs)
                    events[kind].append(time.perf_counter() - t0)
            finally:
                self.depth -= 1
            return out

        setattr(owner, name, timed)

    def attach(self) -> None:
        # forward(input_ids, start, cache, diffusion=False, ...) and step(cache, ids, diffusion=False, ...): the
        # view decides the kind; a prefill is an AR pass
        self._wrap(self.engine, "prefill", lambda args, kwargs: "ar")
        self._wrap(self.engine, "step", lambda args, kwargs: "diffusion" if kwargs.get("diffusion") else "ar")
        self._wrap(
            self.model,
            "forward",
            lambda args, kwargs: "diffusion" if kwargs.get("diffusion", len(args) > 3 and args[3]) else "ar",
        )

    @property
    def attached(self) -> bool:
        return "step" in vars(self.engine)

    def discard(self) -> None:
        """Unwrap, dropping what was timed unread."""
        for owner, name in ((self.engine, "prefill"), (self.engine, "step"), (self.model, "forward")):
            vars(owner).pop(name, None)
        self.events = {kind: [] for kind in FORWARD_KINDS}
        self.depth = 0

    def detach(self) -> dict:
        """Summary per kind: count, mean and median milliseconds. The first AR forward is the prefill."""
        for owner, name in ((self.engine, "prefill"), (self.engine, "step"), (self.model, "forward")):
            vars(owner).pop(name, None)
        out = {}
        for kind, items in self.events.items():
            ms = [b.elapsed_time(e) for b, e in items] if self.cuda else [s * 1e3 for s in items]
            if kind == "ar" and ms:
                out["prefill_forward_ms"] = ms[0]
                ms = ms[1:]
            out[f"{kind}_forward_count"] = len(ms)
            out[f"{kind}_forward_ms_mean"] = fmean(ms) if ms else None
            out[f"{kind}_forward_ms_median"] = median(ms) if ms else None
        self.events = {kind: [] for kind in FORWARD_KINDS}
        return out


class Telemetry:
    """Everything measured around one generation; `enabled=False` measures nothing (overhead baseline)."""

    def __init__(self, engine, device: torch.device, *, enabled: bool = True, nvml=None):
        """`engine`: the target's (orthrus_core.engine.Engine), whose passes are timed."""
        self.device = device
        self.engine = engine
        self.enabled = enabled
        self.cuda = device.type == "cuda"
        self.timer = ForwardTimer(engine, device) if enabled else None
        self.sampler, self.nvml_error = None, None
        if enabled and nvml is not None:  # the physical GPU the model is on, not GPU 0
            try:
                handle, whole_gpu = nvml_handle(nvml, device)
                self.sampler = NvmlSampler(nvml, handle, whole_gpu=whole_gpu)
            except Exception as exc:  # no NVML figures, and why; never a failed run
                self.nvml_error = f"{type(exc).__name__}: {exc}"

    def start(self) -> None:
        if not self.enabled:
            return
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.sampler:
            self.sampler.start()
        self.engine.mark()
        self.timer.attach()

    def abort(self) -> None:
        """The generation raised: unwrap the timed passes and stop the NVML thread without reading either (its
        CUDA events may never have completed, and a read could raise inside the error path)."""
        if not self.enabled:
            return
        if self.timer.attached:
            self.timer.discard()
        if self.sampler:
            self.sampler.abort()

    def stop(self) -> TelemetryFields | None:
        """The generation's measurements; None when disabled (a record then has no telemetry fields)."""
        if not self.enabled:
            return None
        timer = self.timer.detach()
        peak = None
        others, pool = self.engine.held_bytes(), self.engine.pool_bytes
        if self.cuda:  # the generation's own: not other buckets' caches, but the graphs' pool
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - others + pool
        nvml = (
            self.sampler.stop()
            if self.sampler
            else {**dict.fromkeys(NVML_FIELDS), "nvml_error": self.nvml_error}
        )
        return TelemetryFields(
            **timer,
            allocator_peak_bytes=peak,
            **nvml,
            kv_capacity=self.engine.capacity_used(),
            other_caches_bytes=others,
            graph_pool_bytes=pool,
        )
