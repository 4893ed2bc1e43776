"""Everything the project compiles is made here: torch.compile with its limits and backend, and a ledger of every
compile and CUDA graph capture (what, at which shapes, how long), which warm-up, run.json and the GPU check read.

    flex = Compiled(flex_attention, "flex_attention")    # the one way the project calls torch.compile
    mark = LEDGER.mark()
    ...
    LEDGER.since(mark)                                   # [Compile(kind, shapes, seconds), ...] made since

Limits. Dynamo keeps a cache of compiled graphs per function and, past `recompile_limit` of them (8 by
default), falls back to eager, or under `fullgraph=True` raises FailOnRecompileLimitHit: the ninth FlexAttention
shape of a process would end a GPU run. The limits are raised here, where a compiled function is made (not as
a side effect of one engine mode), to RECOMPILE_LIMIT, far above what a run compiles by construction: the
shapes a run can reach are a known set (docs/methodology.md, "Compiled shapes"), which the rehearsal counts.

The rehearsal (`orthrus_core.rehearsal`) runs the CUDA route on a CPU: while it is on, `backend()` is the
rehearsal's (Dynamo's "eager" backend keeps the same guards, so the same shapes compile, in the same number,
and what fails to trace fails the same way), and the cudagraph engine simulates its graphs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .host import uncounted

# Compiled graphs Dynamo keeps per function, and in all: a run's known set of shapes is far below both
# (docs/methodology.md); hitting either would stop a fullgraph function, so they are a safety margin, not a plan.
RECOMPILE_LIMIT = 1024
ACCUMULATED_RECOMPILE_LIMIT = 8192


@dataclass(frozen=True)
class Compile:
    """One compile (a new shape of a compiled function) or CUDA graph capture, and its wall-clock seconds (the
    call that compiled, which includes one run of it)."""

    kind: str  # "flex_attention", "static_pass" (the compile engine), "cudagraph" (a capture)
    shapes: str  # the inputs' shapes and dtype, as a person reads them
    seconds: float


@dataclass
class Ledger:
    """Every compile and capture of this process, in order."""

    entries: list[Compile] = field(default_factory=list)

    def add(self, kind: str, shapes: str, seconds: float) -> None:
        self.entries.append(Compile(kind, shapes, seconds))

    def mark(self) -> int:
        return len(self.entries)

    def since(self, mark: int) -> list[Compile]:
        return self.entries[mark:]

    @property
    def captures(self) -> int:
        return sum(c.kind == "cudagraph" for c in self.entries)


LEDGER = Ledger()


def summary(compiles: list[Compile]) -> dict:
    """{"count", "seconds", "by_kind": {kind: count}} of some ledger entries (run.json, the GPU check)."""
    by_kind: dict[str, int] = {}
    for c in compiles:
        by_kind[c.kind] = by_kind.get(c.kind, 0) + 1
    return {"count": len(compiles), "seconds": sum(c.seconds for c in compiles), "by_kind": by_kind}


def compilations() -> int:
    """Graphs compiled (torch.compile: the project's, or transformers' own) or captured so far in this process:
    a generation during which this grew paid for a compilation inside its time."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"] + LEDGER.captures


_rehearsal_backend: str | None = None  # set by orthrus_core.rehearsal while the CUDA route is rehearsed


def rehearsing() -> bool:
    """Whether the CUDA route is being rehearsed on this CPU (orthrus_core.rehearsal)."""
    return _rehearsal_backend is not None


def backend() -> str:
    """torch.compile's backend: inductor, or the rehearsal's (which keeps Dynamo's guards and runs on a CPU)."""
    return _rehearsal_backend or "inductor"


def raise_limits() -> None:
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, ACCUMULATED_RECOMPILE_LIMIT)


def quiet_autotuning() -> None:
    """Inductor's GEMM autotuning (max_autotune, the compile engine's on a CPU: orthrus_core.engine) calls the
    deprecated `tensor.storage()` while it benchmarks its choices, and torch warns once that TypedStorage is
    deprecated. Only that warning, from only that module, is ignored: it is about torch's code, not ours."""
    warnings.filterwarnings(
        "ignore",
        message="TypedStorage is deprecated",
        category=UserWarning,
        module=r"torch\._inductor\.select_algorithm",
    )


def describe(args, kwargs) -> str:
    """The shapes of a call's tensors (and a block mask's), as the ledger shows them."""
    parts = []
    for value in [*args, *kwargs.values()]:
        if isinstance(value, torch.Tensor):
            dtype = str(value.dtype).removeprefix("torch.")
            parts.append(f"{list(value.shape)} {dtype}")
        elif hasattr(value, "seq_lengths") and hasattr(value, "kv_num_blocks"):  # a FlexAttention BlockMask
            parts.append(f"mask {list(value.kv_num_blocks.shape[:2])} x {list(value.seq_lengths)}")
    return ", ".join(parts)


class Compiled:
    """`fn` under torch.compile(dynamic=False, fullgraph=True) with the limits raised: every shape compiles once,
    to a graph of fixed shapes, and a break in the graph is an error rather than a silent fallback. Each call
    that compiled is written to the ledger. The backend is settled at each call (`backend()`), so a rehearsal
    compiles with its own."""

    def __init__(self, fn: Callable, kind: str):
        raise_limits()
        quiet_autotuning()
        self.fn, self.kind = fn, kind
        self._by_backend: dict[str, Callable] = {}

    def __call__(self, *args, **kwargs):
        name = backend()
        compiled = self._by_backend.get(name)
        if compiled is None:
            compiled = torch.compile(self.fn, dynamic=False, fullgraph=True, backend=name)
            self._by_backend[name] = compiled
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        t0 = time.perf_counter()
        with uncounted():  # Dynamo traces with no host-sync counter of ours on the stack
            out = compiled(*args, **kwargs)
        if torch._dynamo.utils.counters["stats"]["unique_graphs"] != before:
            LEDGER.add(self.kind, describe(args, kwargs), time.perf_counter() - t0)
        return out
