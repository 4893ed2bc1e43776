"""How a model's decode-time forwards run: eager, compiled (torch.compile) or replayed CUDA graphs.

    set_engine(model, "compile")      # every decoder on `model` now runs its steps compiled

Eager PyTorch at batch 1 spends most of a decode step launching kernels and running Python (about 0.47 ms
per layer on a GPU, ../shared/research/paper.md §8), which flatters a full-depth drafter against a shallow one.
The static modes remove that overhead the way gpt-fast does, with every shape fixed:

* the KV cache is the engine's own, pre-allocated per capacity bucket (`bucket`) and reused by every
  generation, so its buffers never move (CUDA graphs read them at captured addresses);
* a pass writes its K/V with `index_copy_` at slot tensors and attends over the whole bucket under a mask
  built from those slots inside the pass, so one graph serves every step of one kind: the AR step (T = 1),
  the Orthrus diffusion pass and the verify pass (T = K), a tree verify pass (T = nodes, its mask given).
* the prefill (start = 0, or longer than model.MAX_STEP_TOKENS: a chunk of one) runs eager into the same
  cache: one pass per prompt, of the prompt's length, compute-bound where it is long.

Exactness: the static pass computes what the eager pass computes (masked keys get exactly zero weight), so
greedy tokens match eager's up to float rounding of a longer reduction; tests/test_engine.py holds compile to
token identity with eager on the tiny family, and sampling draws from the returned logits with the decoder's
own generator, so seeded draws match too. A mode is refused where it cannot run (`check_engine`).
"""

from __future__ import annotations

import shutil

import torch

from .model import KVCache, OrthrusForCausalLM

ENGINES = ("eager", "compile", "cudagraph")


class EngineError(ValueError):
    pass


def default_engine(device: torch.device | str) -> str:
    """The fastest exact mode where it pays: CUDA graphs on a GPU. On a CPU eager, because compiling costs
    tens of seconds per pass shape, more than a short run saves; pass `compile` for long CPU runs."""
    return "cudagraph" if torch.device(device).type == "cuda" else "eager"


def check_engine(mode: str, device: torch.device | str) -> str:
    """`mode` ("auto" resolves to `default_engine`) if it can run exactly on `device`, else an EngineError."""
    device = torch.device(device)
    if mode == "auto":
        return default_engine(device)
    if mode not in ENGINES:
        raise EngineError(f"unknown engine {mode!r}; choose auto or one of {', '.join(ENGINES)}")
    if mode == "cudagraph" and device.type != "cuda":
        raise EngineError(
            f"engine cudagraph needs a CUDA device, not {device.type}: use --engine compile or eager there"
        )
    if mode == "compile" and device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
        raise EngineError(
            "engine compile on CPU needs a C++ compiler for torch.compile's generated code and none is on "
            "PATH: install g++ (apt-get install -y g++) or use --engine eager"
        )
    return mode


def compile_options(device: torch.device, autotune: bool | None = None) -> dict:
    """Inductor options. On a CPU a batch-1 step is bound by GEMV kernels that repack their weights on every
    call; freezing the weights (they are constants while decoding) lets inductor pack them once, and its
    autotuned GEMM templates beat the library's at these shapes (measured: 4.6 vs 9.0 ms per tiny AR step).
    On a GPU the kernels are the library's either way; CUDA graphs remove the launches (`cudagraph`).
    `autotune` (default: on a CPU) costs minutes of compilation per shape; the tests turn it off."""
    cpu = device.type == "cpu"
    # autotune_num_choices_displayed 0: no table of timings on stderr per autotuned GEMM
    return {
        "freezing": cpu,
        "max_autotune": cpu if autotune is None else autotune,
        "autotune_num_choices_displayed": 0,
    }


def bucket(n: int) -> int:
    """The cache capacity that holds n positions: the next of 256, 384, 512, 768, 1024, ... (2^k and 1.5 * 2^k),
    so attention over the bucket reads at most a third more keys than needed and few shapes are compiled."""
    size = 256
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


_captures = 0  # CUDA graphs captured in this process


def compilations() -> int:
    """Graphs compiled (torch.compile, by any engine or by transformers) or captured so far in this process: a
    generation during which this grew paid for a compilation inside its time."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"] + _captures


class Engine:
    """The engine of one model in a static mode (`compile` or `cudagraph`, checked by `set_engine`, which
    installs it); then `model.new_cache` and the model's decode-time passes go through it."""

    def __init__(self, model: OrthrusForCausalLM, mode: str, autotune: bool | None = None):
        p = model.lm_head.weight
        self.mode, self.model, self.device, self.dtype = mode, model, p.device, p.dtype
        self.caches: dict[int, KVCache] = {}
        self.graphs: dict[tuple, _Graph] = {}
        self.pool = None
        if self.mode == "compile":
            # One graph per pass kind and bucket; dynamo's default limit of 8 would fall back to eager silently.
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            self.compiled = torch.compile(static_pass, dynamic=False, fullgraph=True)
            # Inductor reads these when it compiles, inside the first call of each shape (torch.compile's
            # `options` does not reach freezing), so every call runs under them.
            self.options = compile_options(self.device, autotune)

    def new_cache(self, capacity: int) -> KVCache:
        """The engine's cache for `capacity` positions (its bucket's buffers, emptied: length 0)."""
        size = bucket(capacity)
        cache = self.caches.get(size)
        if cache is None:
            cache = KVCache(self.model.config, size, dtype=self.dtype, device=self.device)
            # Zeros, not garbage: masked keys get zero weight, but a NaN left in a slot would still poison it.
            cache.k.zero_()
            cache.v.zero_()
            self.caches[size] = cache
        cache.length = 0
        return cache

    def forward(self, input_ids, start: int, cache: KVCache, diffusion: bool, positions, mask, capture):
        T, C = input_ids.shape[1], cache.capacity
        if self.caches.get(C) is not cache:
            raise EngineError("a static engine runs on its own cache: make it with model.new_cache")
        slots = torch.arange(start, start + T, device=self.device)
        if positions is None:
            positions = slots[None]
        if mask is not None:  # a tree's [T, start+T] ancestor mask, padded to the bucket
            mask = torch.nn.functional.pad(mask, (0, C - mask.shape[1]), value=False)
        args = (input_ids, slots, positions, mask, cache.k, cache.v)
        if self.mode == "compile":
            with torch._inductor.config.patch(self.options):
                return self.compiled(self.model, *args, diffusion, tuple(capture))
        key = (T, C, diffusion, mask is not None, tuple(capture))
        graph = self.graphs.get(key)
        if graph is None:
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = self.graphs[key] = _Graph(self.model, args, diffusion, tuple(capture), self.pool)
        return graph.replay(args)


def static_pass(model, input_ids, slots, positions, mask, k_cache, v_cache, diffusion: bool, capture):
    """One pass with every shape fixed: write K/V at `slots` [T], attend over the whole cache under the view's
    mask (AR: keys up to the query's slot; diffusion: the prefix and the whole block; or the given tree mask)."""
    keys = torch.arange(k_cache.shape[3], device=slots.device)
    if mask is None:
        mask = keys[None, :] < slots[-1] + 1 if diffusion else keys[None, :] <= slots[:, None]

    def kv_context(layer, k, v):
        k_cache[layer].index_copy_(2, slots, k)
        v_cache[layer].index_copy_(2, slots, v)
        return k_cache[layer], v_cache[layer]

    return model.run(input_ids, positions, mask, diffusion, kv_context, capture=capture)


class _Graph:
    """One captured pass: static input buffers, the graph, and its outputs (cloned on return, because the
    next replay overwrites them while a decoder may still hold the last ones)."""

    def __init__(self, model, args, diffusion, capture, pool):
        self.inputs = [a.clone() if a is not None else None for a in args[:4]]
        k_cache, v_cache = args[4], args[5]
        run = lambda: static_pass(model, *self.inputs, k_cache, v_cache, diffusion, capture)  # noqa: E731
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside capture (cuBLAS handles, lazy init)
            for _ in range(2):
                run()
        torch.cuda.current_stream().wait_stream(side)
        global _captures
        _captures += 1
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs = run()

    def replay(self, args):
        for buffer, value in zip(self.inputs, args[:4], strict=True):
            if buffer is not None:
                buffer.copy_(value)
        self.graph.replay()
        if isinstance(self.outputs, tuple):
            return tuple(o.clone() for o in self.outputs)
        return self.outputs.clone()


def set_engine(model: OrthrusForCausalLM, mode: str, autotune: bool | None = None) -> OrthrusForCausalLM:
    """Run `model`'s decode-time forwards in `mode` (auto, eager, compile, cudagraph); returns the model."""
    mode = check_engine(mode, model.lm_head.weight.device)
    model.engine = None if mode == "eager" else Engine(model, mode, autotune)
    return model


def engine_name(model: OrthrusForCausalLM) -> str:
    return "eager" if model.engine is None else model.engine.mode
