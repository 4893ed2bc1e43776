"""What crosses between the host and the device in a decode cycle, and what it costs the device.

A GPU runs the passes the host queued while the host prepares the next ones; anything that makes the host wait
for the queue to drain (a host sync) leaves the GPU idle while the host catches up. Two kinds do:

* reading a device value on the host: `.tolist()`, `.item()`, `int(t)`, `bool(t)`, `.cpu()`, and ops whose
  output size depends on the data (`nonzero`, `unique`, `masked_select`, a boolean index);
* `torch.tensor(python_values, device=cuda)`: a copy from pageable memory, which PyTorch completes with a
  stream synchronisation.

`upload` is the second without the wait: the values are staged in pinned memory and copied asynchronously,
queued behind the passes already on the stream (PyTorch's caching host allocator keeps the pinned block until
the copy is done). Each cycle of the decode loop reads its accepted tokens back once, which is the one sync a
cycle needs; everything else it sends is uploaded.

`HostSyncs` counts the syncs the project's code asks for, by these rules, on any device: on a CPU (the
rehearsal, orthrus_core.rehearsal) it says what a GPU run would wait for. `Launches` counts the other cost of
talking to the device, the kernels the host launches one by one (each costs the host a few microseconds, which
the GPU waits out when its kernels are short), by dispatch: every aten op that would run a kernel, and apart
from them the calls into graphs (a compiled function, a CUDA graph replay), which launch their kernels as one.
`harness.bench.syncs` prints both per cycle for each method.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack, _pop_mode_temporarily
from torch.utils._python_dispatch import TorchDispatchMode


def upload(values, device: torch.device | str | None, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Host values (a list, nested lists) as a tensor on `device`, without waiting for the device's queue."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype)
    return torch.tensor(values, dtype=dtype, pin_memory=True).to(device, non_blocking=True)


# Reads of device values on the host, and ops whose output size is data-dependent.
_READS = frozenset(
    ["tolist", "item", "__int__", "__float__", "__bool__", "__index__", "cpu", "numpy", "nonzero",
     "argwhere", "unique", "unique_consecutive", "masked_select"]
)  # fmt: skip
_FACTORIES = frozenset(["tensor", "as_tensor"])
_PROJECT = (str(Path(__file__).resolve().parents[1] / "orthrus_core"), str(Path(__file__).resolve().parents[1] / "harness"))  # fmt: skip
_HERE = str(Path(__file__).resolve())


class HostSyncs(TorchFunctionMode):
    """Counts, while active (`with HostSyncs() as syncs`) and `armed`, each call in the project's own code
    (orthrus_core, harness) that makes the host wait for the device: `syncs.total`, and `syncs.where` by
    call site ("file:line function"). Calls inside torch or transformers are theirs, not counted."""

    def __init__(self):
        super().__init__()
        self.armed = True
        self.where: Counter = Counter()

    @property
    def total(self) -> int:
        return sum(self.where.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.armed and self._syncs(func, args, kwargs):
            caller = sys._getframe(1)
            while caller is not None and caller.f_code.co_filename == _HERE:
                caller = caller.f_back
            if caller is not None and caller.f_code.co_filename.startswith(_PROJECT):
                name = Path(caller.f_code.co_filename).name
                self.where[f"{name}:{caller.f_lineno} {getattr(func, '__name__', func)}"] += 1
        return func(*args, **kwargs)

    @staticmethod
    def _syncs(func, args, kwargs) -> bool:
        name = getattr(func, "__name__", "")
        if name in _READS:
            return True
        if name in _FACTORIES:  # host values sent with a blocking copy (not `upload`'s staged one)
            data = args[0] if args else kwargs.get("data")
            return kwargs.get("device") is not None and not isinstance(data, torch.Tensor)
        if name in ("__getitem__", "__setitem__", "index_put_", "index_put") and len(args) > 1:
            index = args[1]
            indices = index if isinstance(index, (tuple, list)) else (index,)
            return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)
        return False


@contextlib.contextmanager
def uncounted():
    """Within the block, no `HostSyncs` on the torch function stack: Dynamo (a compiled function, and
    FlexAttention, which runs through Dynamo even uncompiled) traces with no mode of ours to trace through."""
    stack = _get_current_function_mode_stack()
    if stack and isinstance(stack[-1], HostSyncs):
        with _pop_mode_temporarily():
            yield
    else:
        yield


# Aten ops that run no kernel: they set a tensor's metadata (views are told apart by their schema, below) or take
# memory from the caching allocator, or read a value back (`_local_scalar_dense`: a host sync, counted there).
_NO_KERNEL = frozenset(
    ["_unsafe_view", "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "set_", "resize_",
     "_local_scalar_dense"]
)  # fmt: skip
_ORTHRUS_CORE = _PROJECT[0]
_LOOP = str(Path(__file__).resolve().with_name("loop.py"))


def launches_kernel(func) -> bool:
    """Whether an op reaching the dispatcher launches a device kernel: a higher-order op (FlexAttention: one
    Triton kernel) does, and so does `lift_fresh`, a tensor made from host values (`torch.tensor`, `upload`),
    which on a GPU is copied up; a view (`is_view`: view, expand, slice, select, transpose, detach, split, ...),
    an in-place view (`unsqueeze_`, ...) or one of `_NO_KERNEL` does not; every other op does one, copies
    (`copy_`, `_to_copy`, `clone`) included. Ops that launch several kernels count as one."""
    if isinstance(func, torch._ops.HigherOrderOperator):
        return True
    name = func._schema.name.removeprefix("aten::")
    if name == "lift_fresh":
        return True
    if func.is_view or torch.Tag.inplace_view in func.tags:
        return False
    return name not in _NO_KERNEL


class Launches(TorchDispatchMode):
    """Counts, while active (`with Launches(device) as launches`) and `armed`, the kernels launched one by one:
    each op reaching the dispatcher that `launches_kernel` and that runs on `device`'s kind (on a CPU, in a
    rehearsal, every op; on a GPU, an op with a CUDA tensor in or out), by the orthrus_core module the cycle
    called it through (`where`: "engine.py", "eagle3.py", ...). Three kinds of call are counted as a whole,
    where the caller says one is made (`graph`): a compiled function's call ("compiled": one call, and the
    kernels its ops would be unfused to `compiled_ops`; what it launches on a GPU lies between one kernel and
    those), a CUDA graph's replay ("replay": one graph launch, nothing inside it a launch of its own) and a call
    that is one kernel on a GPU whatever it runs here ("kernel")."""

    supports_higher_order_operators = True  # FlexAttention is a higher-order op

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        """Dynamo compiles with this mode off and runs the compiled graph with it on (a mode it had to trace
        through would make it run the function eagerly instead)."""
        return True

    def __init__(self, device: torch.device | str):
        super().__init__()
        self.device_type = torch.device(device).type
        self.armed = True
        self.where: Counter = Counter()  # kernels launched outside graphs, by module
        self.compiled_calls = self.compiled_ops = self.replays = 0
        self._inside: str | None = None  # the kind of the call being counted as a whole

    @property
    def total(self) -> int:
        """Kernels launched outside graphs."""
        return sum(self.where.values())

    @contextlib.contextmanager
    def graph(self, kind: str, copies: int = 0):
        """Within the block, a call of `kind` ("compiled", "replay" or "kernel") counted as a whole; `copies`:
        the launches a GPU makes beside a replay's graph (new inputs into its static buffers, its outputs out).
        Inside another such call it is that call's."""
        if kind not in ("compiled", "replay", "kernel"):
            raise ValueError(f"a call counted as a whole is compiled, replay or kernel, not {kind!r}")
        if not self.armed or self._inside is not None:
            yield
            return
        if kind == "compiled":
            self.compiled_calls += 1
        elif kind == "replay":
            self.replays += 1
        launched = copies if kind == "replay" else int(kind == "kernel")
        if launched:
            self.where[_caller_module()] += launched
        self._inside = kind
        try:
            yield
        finally:
            self._inside = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if (
            self.armed
            and self._inside in (None, "compiled")
            and launches_kernel(func)
            and self._on_device(args, out)
        ):
            if self._inside == "compiled":
                self.compiled_ops += 1
            else:
                self.where[_caller_module()] += 1
        return out

    def _on_device(self, args, out) -> bool:
        if self.device_type == "cpu":
            return True
        leaves = torch.utils._pytree.tree_leaves((args, out))
        return any(isinstance(t, torch.Tensor) and t.device.type == self.device_type for t in leaves)


def _caller_module() -> str:
    """The outermost orthrus_core module on the stack other than the loop ("loop.py" if none): the one the
    decode cycle asked for the op (the engine for a pass, the drafter for its proposal, sampling for an
    acceptance)."""
    frame, found = sys._getframe(1), "loop.py"
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(_ORTHRUS_CORE) and path not in (_HERE, _LOOP):
            found = Path(path).name
        frame = frame.f_back
    return found
