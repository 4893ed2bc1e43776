"""Per-request device telemetry: allocator peak, NVML memory / power / clocks / throttling, energy, and
per-forward times, as a record's `TelemetryFields` (harness.records), for a request decoded alone or in a batch
(`Telemetry` says how a batch's figures are shared among its requests).

NVML (`nvidia-ml-py`, imported as `pynvml`) is read by a background thread every `interval_s`, so sampling
never runs on the decoding thread; energy is the difference of the device's total-energy counter
(`nvmlDeviceGetTotalEnergyConsumption`, mJ) across the request's stay, flagged unreliable below a second because
the counter updates every few tens of milliseconds. NVML reads the GPU whose UUID is the device's
(`nvml_handle`). Without a GPU (or without pynvml) every NVML field is None; where NVML is there but cannot
be read for the device, `nvml_error` says why. Tests pass a fake `nvml` module.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
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
    """Samples one device (an NVML handle, `nvml_handle`) in a background thread between start() and stop(),
    every sample stamped with its perf_counter time, so that each request of a batch reads its own stretch;
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
        self.samples: list[tuple[float, dict]] = []  # (perf_counter, sample), in time order

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
                self.samples.append((time.perf_counter(), self._sample()))
            except Exception as exc:  # NVML failed mid-generation: no more samples, the fields say why
                self._failed(exc)
                return

    def start(self) -> None:
        self.error, self._thread, self.samples = None, None, []
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (the decode ended, or failed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def reading(self) -> tuple[float, float | None]:
        """A sample now (a request enters or leaves) and the device's energy counter (mJ): (when, counter), the
        counter None where NVML failed."""
        now = time.perf_counter()
        if self.error is None:
            try:
                self.samples.append((now, self._sample()))
                return now, self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            except Exception as exc:
                self._failed(exc)
        return now, None

    def figures(self, begin: float, end: float, energy_j: float) -> dict:
        """The NVML fields of the stretch from `begin` to `end` (two `reading`s' times), whose energy is
        `energy_j`; None each, with `nvml_error`, where NVML failed."""
        if self.error is not None:
            return {**dict.fromkeys(NVML_FIELDS), "nvml_error": self.error}
        samples = [s for t, s in self.samples if begin <= t <= end]
        throttle = 0
        for s in samples:
            throttle |= s["throttle"]
        process = [s["process_bytes"] for s in samples if s["process_bytes"] is not None]
        return {
            "nvml_samples": len(samples),
            "device_mem_peak_bytes": max(s["device_bytes"] for s in samples),
            "process_mem_peak_bytes": max(process) if process else None,
            "power_mean_w": fmean(s["power_w"] for s in samples),
            "sm_clock_mean_mhz": fmean(s["sm_mhz"] for s in samples),
            "mem_clock_mean_mhz": fmean(s["mem_mhz"] for s in samples),
            "throttle_reasons": throttle,
            "energy_j": energy_j,
            "energy_reliable": end - begin >= ENERGY_MIN_RELIABLE_S,
            "nvml_whole_gpu": self.whole_gpu,
            "nvml_error": None,
        }

    def forget(self, before: float) -> None:
        """Drop the samples taken before `before` (no request still in the batch entered earlier)."""
        self.samples = [(t, s) for t, s in self.samples if t >= before]


# What NvmlSampler.figures gives: all None without a GPU or NVML.
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
    """Times every pass of a target between attach() and detach(), in order, by kind: the engine's prefills
    ("prefill") and steps ("ar" or "diffusion": orthrus_core.engine, what the decode loop runs, compiled or
    captured included) and the model's own forwards outside them (the lossy block-diffusion decoder, the
    official loop: "ar" or "diffusion"). A pass inside another one is not counted twice.

    On a GPU each pass is bracketed by CUDA events (read once, after the generation, so timing adds no host
    sync); on a CPU by perf_counter. Wraps the instances' methods, so the decoder is unchanged."""

    def __init__(self, engine, device: torch.device):
        self.engine, self.model = engine, engine.model
        self.cuda = device.type == "cuda"
        self.events: list[tuple[str, object]] = []  # (kind, CUDA events or seconds), in order
        self.dropped = 0  # events forgotten from the front (`forget`)
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
                    events.append((kind, (begin, end)))
                else:
                    t0 = time.perf_counter()
                    out = method(*args, **kwargs)
                    events.append((kind, time.perf_counter() - t0))
            finally:
                self.depth -= 1
            return out

        setattr(owner, name, timed)

    def attach(self) -> None:
        self.events.clear()
        self.dropped, self.depth = 0, 0
        # step(cache, ids, diffusion=False, ...) and forward(input_ids, start, cache, diffusion=False, ...): the
        # view decides the kind
        self._wrap(self.engine, "prefill", lambda args, kwargs: "prefill")
        self._wrap(self.engine, "step", lambda args, kwargs: "diffusion" if kwargs.get("diffusion") else "ar")
        self._wrap(
            self.model,
            "forward",
            lambda args, kwargs: "diffusion" if kwargs.get("diffusion", len(args) > 3 and args[3]) else "ar",
        )

    @property
    def attached(self) -> bool:
        return "step" in vars(self.engine)

    def detach(self) -> None:
        """Unwrap, dropping what was timed and not yet read."""
        for owner, name in ((self.engine, "prefill"), (self.engine, "step"), (self.model, "forward")):
            vars(owner).pop(name, None)
        self.events.clear()

    def mark(self) -> int:
        """Where the passes timed from now on begin (a request enters), for `summary`."""
        return self.dropped + len(self.events)

    def forget(self, before: int) -> None:
        """Drop the passes before mark `before` (no request still measured entered earlier)."""
        del self.events[: before - self.dropped]
        self.dropped = before

    def summary(self, since: int) -> dict:
        """The passes since mark `since`, per kind: count, mean and median milliseconds, and the prefill's.
        The prefill is the first engine prefill since the mark (a request's own comes first after it enters;
        the others', of requests admitted beside it, are not counted), or where the engine prefilled nothing,
        the first AR forward (the model's own forwards: the official loop, block diffusion)."""
        ms: dict[str, list[float]] = {kind: [] for kind in ("prefill", *FORWARD_KINDS)}
        for kind, timing in self.events[since - self.dropped :]:
            ms[kind].append(timing[0].elapsed_time(timing[1]) if self.cuda else timing * 1e3)
        out = {}
        if ms["prefill"]:
            out["prefill_forward_ms"] = ms["prefill"][0]
        elif ms["ar"]:
            out["prefill_forward_ms"] = ms["ar"].pop(0)
        for kind in FORWARD_KINDS:
            out[f"{kind}_forward_count"] = len(ms[kind])
            out[f"{kind}_forward_ms_mean"] = fmean(ms[kind]) if ms[kind] else None
            out[f"{kind}_forward_ms_median"] = median(ms[kind]) if ms[kind] else None
        return out


@dataclass
class _Window:
    """What is measured of one request: from its admission (`at`, a perf_counter time; `forwards`, the timer's
    mark) to its finish."""

    at: float
    forwards: int
    peak: int = 0  # the allocator's peak over its stay
    energy_j: float = 0.0  # its part of the device's energy over its stay


class Telemetry:
    """Everything measured around the requests of a decode (orthrus_core.loop, or a decoder's `decode`):
    `open` as the decode begins, `admit` as a request enters it (before its prefill), `finish` as it leaves,
    giving its TelemetryFields, and `close` as the decode ends, however it ends. `enabled=False` measures
    nothing (the overhead baseline, `run --no-telemetry`).

    A request decoded alone (batch size 1: a decode of its own) is measured over its generation. In a batch,
    over its stay, admission to finish (harness.records.TelemetryFields says how): memory peaks, power,
    clocks, throttling and pass times are the batch's over that stretch, shared with the requests beside it;
    its energy is its part of the device's, every stretch between two admissions or finishes split evenly
    among the requests then in the batch, so that a batch's records add up to the batch's energy."""

    def __init__(self, engine, device: torch.device, *, enabled: bool = True, nvml=None):
        """`engine`: the target's (orthrus_core.engine.Engine), whose passes are timed."""
        self.device = device
        self.engine = engine
        self.enabled = enabled
        self.cuda = device.type == "cuda"
        self.timer = ForwardTimer(engine, device) if enabled else None
        self.sampler, self.nvml_error = None, None
        self.windows: dict[object, _Window] = {}  # key -> the requests in the decode now
        self.counter: float | None = None  # the energy counter (mJ) at the last admission or finish
        if enabled and nvml is not None:  # the physical GPU the model is on, not GPU 0
            try:
                handle, whole_gpu = nvml_handle(nvml, device)
                self.sampler = NvmlSampler(nvml, handle, whole_gpu=whole_gpu)
            except Exception as exc:  # no NVML figures, and why; never a failed run
                self.nvml_error = f"{type(exc).__name__}: {exc}"

    def open(self) -> None:
        if not self.enabled:
            return
        self.windows, self.counter = {}, None
        if self.sampler:
            self.sampler.start()
        self.engine.mark()
        self.timer.attach()

    def close(self) -> None:
        """Unwrap the timed passes and stop the NVML thread, reading neither (where the decode raised, its CUDA
        events may never have completed, and a read could raise inside the error path)."""
        if not self.enabled:
            return
        self.timer.detach()
        if self.sampler:
            self.sampler.stop()

    def _event(self) -> float:
        """A request enters or leaves: the allocator's peak since the last event and the device's energy since
        then go to the requests in the batch until now (the energy split evenly). Returns the time."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            for w in self.windows.values():
                w.peak = max(w.peak, peak)
            torch.cuda.reset_peak_memory_stats(self.device)
        if not self.sampler:
            return time.perf_counter()
        now, counter = self.sampler.reading()
        if counter is not None and self.counter is not None and self.windows:
            share = (counter - self.counter) / 1000 / len(self.windows)
            for w in self.windows.values():
                w.energy_j += share
        self.counter = counter
        return now

    def admit(self, key) -> None:
        """Request `key` enters the decode (before its prefill)."""
        if self.enabled:
            self.windows[key] = _Window(self._event(), self.timer.mark())

    def finish(self, key) -> TelemetryFields | None:
        """Request `key` left the decode: what was measured over its stay; None when disabled (a record then
        has no telemetry fields)."""
        if not self.enabled:
            return None
        now = self._event()
        w = self.windows.pop(key)
        timer = self.timer.summary(w.forwards)
        others, pool = self.engine.held_bytes(), self.engine.pool_bytes
        # the generation's own: not other buckets' caches, but the graphs' pool
        peak = w.peak - others + pool if self.cuda else None
        nvml = (
            self.sampler.figures(w.at, now, w.energy_j)
            if self.sampler
            else {**dict.fromkeys(NVML_FIELDS), "nvml_error": self.nvml_error}
        )
        if self.windows:  # what no request still in the batch needs
            self.timer.forget(min(v.forwards for v in self.windows.values()))
            if self.sampler:
                self.sampler.forget(min(v.at for v in self.windows.values()))
        return TelemetryFields(
            **timer,
            allocator_peak_bytes=peak,
            **nvml,
            kv_capacity=self.engine.capacity_used(),
            other_caches_bytes=others,
            graph_pool_bytes=pool,
        )

    def start(self) -> None:
        """One generation alone (`stop` ends it): a decode of one request."""
        self.open()
        self.admit(None)

    def stop(self) -> TelemetryFields | None:
        """The measurements of the generation `start` began."""
        try:
            return self.finish(None)
        finally:
            self.close()
