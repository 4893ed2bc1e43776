"""The CUDA route, rehearsed on a CPU: what a first GPU run would compile, capture and wait for, before one runs.

    with rehearsal():
        engine = Engine(model, default_engine("cpu"))      # cudagraph, as on a GPU
        generate(engine, drafter, prompt, 64)               # tokens as the CPU route's
    LEDGER.since(mark)                                      # every shape it compiled and captured

While it is on:
* kernels are chosen as on CUDA (`attention.planned_on("cuda")`): FlexAttention where a GPU takes it, SDPA's
  CUDA-only forms (the bottom-right causal bias) where it takes those;
* FlexAttention is compiled exactly as on CUDA (`compiled.Compiled`: torch.compile, dynamic=False,
  fullgraph=True, the same recompile limits), with a backend that runs on a CPU: Dynamo's "eager" by default,
  which keeps Dynamo's guards, so the same shapes compile, in the same number, and a graph break or a ninth
  shape over a limit fails here as it would there; "aot_eager" also traces AOT autograd;
* the default engine is `cudagraph`, whose graphs are simulated: a capture runs the pass as a capture would (two
  warm-up runs, then the captured one, on static input buffers), and a replay re-runs it on those buffers after
  copying the new inputs in, so a pass that reads an input a graph would not see updated fails here too.

What it cannot show is a GPU's own: Triton's code generation, timings, memory. benchmarks/gpu_check.py
--rehearse runs every step of the GPU check this way; tests/test_rehearsal.py holds the rehearsal to the CPU
route's tokens and counts the compiled shapes.
"""

from __future__ import annotations

import contextlib

from . import attention, compiled

BACKENDS = ("eager", "aot_eager")


@contextlib.contextmanager
def rehearsal(backend: str = "eager"):
    """Within the block, run the CUDA route on this CPU (the module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"a rehearsal compiles with one of {', '.join(BACKENDS)}, not {backend!r}")
    before = compiled._rehearsal_backend
    compiled._rehearsal_backend = backend
    try:
        with attention.planned_on("cuda"):
            yield
    finally:
        compiled._rehearsal_backend = before
