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
rehearsal, orthrus_core.rehearsal) it says what a GPU run would wait for. `harness.bench.syncs` prints the
count per cycle for each method.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack, _pop_mode_temporarily


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
