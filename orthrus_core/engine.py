"""How the decode loop's passes run: eager, compiled (torch.compile) or replayed CUDA graphs, over R rows.

    engine = Engine(model, "compile")   # settled once, when the target is loaded; never changed on a model

Eager PyTorch at small batch spends most of a decode step launching kernels and running Python (about 0.47 ms
per layer on a GPU, ../shared/research/paper.md §8), which flatters a full-depth drafter against a shallow one
and turns a concurrency sweep into a measurement of launch overhead. The static modes remove that overhead the
way gpt-fast does, with every shape fixed:

* the KV cache is the engine's own, pre-allocated per capacity bucket (`bucket`) with the most rows any batch
  asked for, and reused by every decode, so its buffers never move (CUDA graphs read them at captured
  addresses);
* a pass over R active rows runs over `row_bucket(R)` rows (1, 2, 4, ... up to the cache's rows; the padding
  rows write scratch slots of unused rows), writes K/V at per-row slot tensors and attends to the cache under a
  visibility made from those slots inside the pass (orthrus_core.attention: on CUDA a FlexAttention block mask
  that visits only the tiles up to each row's length, not the bucket's zeroed tail), so one graph serves every
  step of one kind at one row bucket: the AR step (T = 1), the Orthrus diffusion pass and the verify pass
  (T = K), a tree verify pass (its ancestors given), whatever each row's length;
* prefills run eager into the same cache: one pass per prompt, of the prompt's length, compute-bound where it
  is long;
* a drafter's per-cycle passes (DFlash's draft pass, EAGLE-3's drafting) run here too (`run`: any pass function
  over fixed-shape tensors), on a cache of its own that the engine holds per capacity as it holds the target's
  (`draft_cache`), so that they compile and capture once per row bucket, as the target's passes do.

Eager passes over rows of one length (always at batch size 1) are the model's plain forward: slice writes, and
no mask tensor for a single token, a diffusion block or (on CUDA) a verify pass. Rows of different lengths
write at slot tensors, each row seeing its own prefix.

Exactness: a masked key gets exactly zero weight, so a row computes what it computes alone up to float
rounding of a longer reduction; tests/test_engine.py and tests/test_loop.py hold compile to token identity with
eager at R = 1, 2 and 4 for every batched method, greedy and sampled (sampling draws from the returned logits
with each row's own generator). A mode is refused where it cannot run (`check_engine`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import torch

from .attention import Visibility
from .compiled import LEDGER, Compiled, describe, rehearsing
from .host import upload
from .model import KVCache, OrthrusForCausalLM, slot_writes
from .modes import AUTO, ENGINE_CHOICES, ENGINES


class EngineError(ValueError):
    pass


def default_engine(device: torch.device | str) -> str:
    """The fastest exact mode where it pays: CUDA graphs on a GPU (and in a rehearsal of one,
    orthrus_core.rehearsal). On a CPU eager, because compiling costs tens of seconds per pass shape, more than a
    short run saves; pass `compile` for long CPU runs."""
    return "cudagraph" if torch.device(device).type == "cuda" or rehearsing() else "eager"


def check_engine(mode: str, device: torch.device | str) -> str:
    """`mode` ("auto" resolves to `default_engine`) if it can run exactly on `device`, else an EngineError."""
    device = torch.device(device)
    if mode == AUTO:
        return default_engine(device)
    if mode not in ENGINES:
        raise EngineError(f"unknown engine {mode!r}; choose one of {', '.join(ENGINE_CHOICES)}")
    if mode == "cudagraph" and device.type != "cuda" and not rehearsing():
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
    """Inductor options. On a CPU a small-batch step is bound by GEMV kernels that repack their weights on
    every call; freezing the weights (they are constants while decoding) lets inductor pack them once, and its
    autotuned GEMM templates beat the library's at these shapes (measured: 4.6 vs 9.0 ms per tiny AR step).
    On a GPU the kernels are the library's either way; CUDA graphs remove the launches (`cudagraph`).
    `autotune` (default: on a CPU) costs minutes of compilation per shape; the tests turn it off."""
    cpu = device.type == "cpu"
    # autotune_num_choices_displayed 0: no table of timings on stderr per autotuned GEMM;
    # max_autotune_report_choices_stats False: no "Autotune Choices Stats" JSON written to stderr per autotuned
    # GEMM (recent torch writes it by default); an option this torch does not know is left out
    options = {
        "freezing": cpu,
        "max_autotune": cpu if autotune is None else autotune,
        "autotune_num_choices_displayed": 0,
        "max_autotune_report_choices_stats": False,
    }
    return {k: v for k, v in options.items() if hasattr(torch._inductor.config, k)}


def bucket(n: int) -> int:
    """The cache capacity that holds n positions: the next of 256, 384, 512, 768, 1024, ... (2^k and 1.5 * 2^k),
    so attention over the bucket reads at most a third more keys than needed and few shapes are compiled."""
    size = 256
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def row_bucket(active: int, rows: int) -> int:
    """The rows a static pass over `active` rows runs: the next power of two, at most the cache's `rows`."""
    return min(1 << max(active - 1, 0).bit_length(), rows)


def pass_visibility(
    lengths, T: int, diffusion: bool, ancestors: torch.Tensor | None, device=None
) -> Visibility:
    """What each query of a pass of T tokens at each row's next slots sees: the row's prefix and, AR view, the
    pass's tokens up to its own; diffusion view, the whole block; a tree verify pass (`ancestors` [R, T, T],
    each node's ancestors and itself), its ancestors. `lengths`: host ints (eager) or a tensor [R] (static)."""
    if ancestors is not None:
        return Visibility.after(lengths, T, "pattern", device, window=ancestors)
    return Visibility.after(lengths, T, "whole" if diffusion else "causal", device)


class Engine:
    """The passes of one model in one mode (eager, compile or cudagraph), checked where it is made."""

    def __init__(self, model: OrthrusForCausalLM, mode: str = "eager", autotune: bool | None = None):
        p = model.lm_head.weight
        self.mode = check_engine(mode, p.device)
        self.model, self.device, self.dtype = model, p.device, p.dtype
        self.caches: dict[int, KVCache] = {}  # capacity bucket -> the engine's cache
        # (id of a drafter's model config, capacity) -> that drafter's cache
        self.draft_caches: dict[tuple[int, int], KVCache] = {}
        self.used: set[int] = set()  # capacity buckets handed out since `mark`
        self.drafts_used: set[tuple[int, int]] = set()  # drafters' caches handed out since `mark`
        self.graphs: dict[tuple, _Graph] = {}
        self.pool = None
        self.pool_bytes = 0  # memory the captured graphs' pool reserved (their intermediates)
        if self.mode == "compile":
            self.compiled: dict[Callable, Compiled] = {}  # pass function -> its compiled form
            # Inductor reads these when it compiles, inside the first call of each shape (torch.compile's
            # `options` does not reach freezing), so every call runs under them.
            self.options = compile_options(self.device, autotune)

    @property
    def static(self) -> bool:
        """Whether passes run at fixed shapes (compile, cudagraph)."""
        return self.mode != "eager"

    def new_cache(self, rows: int, capacity: int) -> KVCache:
        """An empty cache of at least `rows` rows holding `capacity` positions each (the capacity's bucket). A
        static engine hands out its own buffers for the bucket, the same ones every time, with as many rows as
        the largest batch has asked for: a smaller batch's passes then meet the shapes and addresses a larger
        one compiled and captured."""
        size = bucket(capacity)
        self.used.add(size)
        return self._held(self.caches, size, self.model.config, rows, size)

    def draft_cache(self, config, rows: int, capacity: int) -> KVCache:
        """A drafter's own cache (for its model's `config`), as `new_cache` hands out the target's: a static
        engine keeps one per capacity, reused by every decode, so that the drafter's captured passes read it where
        they were captured. `capacity` is the drafter's exactly (the target's bucket and the drafter's room)."""
        key = (id(config), capacity)
        self.drafts_used.add(key)
        return self._held(self.draft_caches, key, config, rows, capacity)

    def _held(self, caches: dict, key, config, rows: int, capacity: int) -> KVCache:
        if not self.static:
            return KVCache(config, rows, capacity, dtype=self.dtype, device=self.device)
        cache = caches.get(key)
        if cache is None or cache.rows < rows:
            if cache is not None:  # its graphs read buffers that are going away
                self.graphs = {k: g for k, g in self.graphs.items() if not g.reads(cache.k)}
            cache = caches[key] = KVCache(config, rows, capacity, dtype=self.dtype, device=self.device)
        cache.lengths = []
        return cache

    def mark(self) -> None:
        """Start counting the buckets handed out (a generation begins): see `held_bytes`."""
        self.used, self.drafts_used = set(), set()

    def held_bytes(self) -> int:
        """Bytes of the caches (the target's and drafters') this engine keeps for buckets not handed out since
        `mark`: another generation's (a long item's cache outlives it, so that its graphs stay valid), not the
        current one's."""
        target = sum(c.nbytes for size, c in self.caches.items() if size not in self.used)
        return target + sum(c.nbytes for key, c in self.draft_caches.items() if key not in self.drafts_used)

    def capacity_used(self) -> int | None:
        """The largest capacity bucket handed out since `mark` (positions per row)."""
        return max(self.used, default=None)

    def grow(self, cache: KVCache, capacity: int) -> KVCache:
        """`cache`, or, when it holds fewer than `capacity` positions per row, a larger one holding its rows."""
        if capacity <= cache.capacity:
            return cache
        grown = self.new_cache(cache.rows, capacity)
        grown.copy_rows_from(cache)
        return grown

    def prefill(self, cache: KVCache, b: int, ids: torch.Tensor, capture=()):
        """A prompt ids [T] into row b of `cache` (eager, alone) -> the last position's logits [1, V] (and every
        position's features [T, F] with `capture`: drafters read them all). The row's length is the caller's to
        set."""
        result = self.model(ids[None], 0, cache.row(b), capture=capture, logits_to_keep=1)
        return (result[0][0], result[1][0]) if capture else result[0]

    def step(
        self,
        cache: KVCache,
        ids: torch.Tensor,
        *,
        diffusion: bool = False,
        depth: torch.Tensor | None = None,
        ancestors: torch.Tensor | None = None,
        capture=(),
    ):
        """ids [R, T] of the R active rows at each row's next T slots -> float32 logits [R, T, V] (and features
        with `capture`). A tree verify pass gives each node's `depth` [R, T] (its RoPE position is the row's
        length + depth) and `ancestors` [R, T, T]; without them the pass is causal (AR view) or sees each row's
        prefix and whole block (diffusion view). The rows' lengths do not move."""
        R, T = ids.shape
        lengths = cache.lengths
        if len(lengths) != R:
            raise ValueError(f"{R} rows of ids for a cache with {len(lengths)} active rows")
        if max(lengths) + T > cache.capacity:
            raise ValueError(f"cache capacity {cache.capacity} < {max(lengths) + T} positions needed")
        if self.static:
            return self._static_step(cache, ids, diffusion, depth, ancestors, tuple(capture))
        if ancestors is None and min(lengths) == max(lengths):  # one length: the model's plain pass
            return self.model(ids, lengths[0], cache, diffusion, capture=capture)
        visible = pass_visibility(lengths, T, diffusion, ancestors, ids.device)
        slots = visible.prefix[:, None] + torch.arange(T, device=ids.device)
        positions = slots if depth is None else slots[:, :1] + depth
        return self.model.run(ids, positions, visible, diffusion, cache.scatter(slots), capture=capture)

    def _static_step(self, cache, ids, diffusion, depth, ancestors, capture):
        if self.caches.get(cache.capacity) is not cache:
            raise EngineError("a static engine runs on its own cache: make it with engine.new_cache")
        R, T = ids.shape
        rows = row_bucket(R, cache.rows)
        pad = rows - R
        offsets = torch.arange(T, device=ids.device)
        slots = upload(cache.lengths + [0] * pad, ids.device)[:, None] + offsets
        positions = slots if depth is None else slots[:, :1] + _pad_rows(depth, pad, 0)
        if pad:
            ids = _pad_rows(ids, pad, 0)
        if ancestors is not None:  # a padding row sees itself only
            ancestors = torch.cat(
                [ancestors, torch.eye(T, dtype=torch.bool, device=ids.device).expand(pad, T, T)]
            )
        inputs = (ids, slots, positions, ancestors)
        fixed = (self.model, cache.k[:, :rows], cache.v[:, :rows], diffusion, capture)
        out = self.run(static_pass, inputs, fixed)
        if not pad:
            return out
        return (out[0][:R], out[1][:R]) if capture else out[:R]

    def run(self, fn: Callable, inputs: tuple, fixed: tuple):
        """fn(*inputs, *fixed): one pass of the target or of a drafter in this engine's mode. `inputs` are what
        changes from call to call (tensors, or None); `fixed` what the pass reads where it lies or bakes in
        (models, cache buffers, flags). Eager calls it; compile calls one `Compiled` per pass function (each
        shape compiled once); cudagraph captures it once per pass function, input shapes and fixed values (a
        cache by its address) and replays it with the inputs copied into the graph's own buffers. A static mode
        needs every input a tensor of a fixed shape and nothing read back to the host inside the pass."""
        if self.mode == "eager":
            return fn(*inputs, *fixed)
        if self.mode == "compile":
            compiled = self.compiled.get(fn)
            if compiled is None:
                compiled = self.compiled[fn] = Compiled(fn, fn.__name__)
            with torch._inductor.config.patch(self.options):
                return compiled(*inputs, *fixed)
        shapes = tuple(None if a is None else (tuple(a.shape), a.dtype) for a in inputs)
        key = (fn, shapes, tuple(_identity(f) for f in fixed))
        graph = self.graphs.get(key)
        if graph is None:
            if self.pool is None and self.device.type == "cuda":
                self.pool = torch.cuda.graph_pool_handle()
            graph = self.graphs[key] = _Graph(fn, inputs, fixed, self.pool, self.device)
            self.pool_bytes += graph.pool_bytes
        return graph.replay(inputs)


def _identity(value):
    """What a captured graph holds of a fixed argument: a tensor's address and shape, a module itself, a value."""
    if isinstance(value, torch.Tensor):
        return ("tensor", value.data_ptr(), tuple(value.shape))
    return ("object", id(value)) if isinstance(value, torch.nn.Module) else value


def _pad_rows(x: torch.Tensor, pad: int, value) -> torch.Tensor:
    return torch.cat([x, x.new_full((pad, *x.shape[1:]), value)]) if pad else x


def static_pass(ids, slots, positions, ancestors, model, k_cache, v_cache, diffusion: bool, capture):
    """One pass with every shape fixed: write each row's K/V at its `slots` [R, T] and attend to the cache under
    the pass's visibility (`pass_visibility`)."""
    visible = pass_visibility(slots[:, 0], slots.shape[1], diffusion, ancestors)
    return model.run(
        ids, positions, visible, diffusion, slot_writes(k_cache, v_cache, slots), capture=capture
    )


class _Graph:
    """One captured pass fn(*inputs, *fixed) (`Engine.run`): static input buffers, the graph, and its outputs
    (cloned on return, because the next replay overwrites them while a decoder may still hold the last ones). On
    a CPU (a rehearsal, orthrus_core.rehearsal) the capture is simulated: the same warm-up runs and captured run,
    and each replay re-runs the pass on the static buffers."""

    def __init__(self, fn, inputs, fixed, pool, device):
        self.inputs = [a.clone() if a is not None else None for a in inputs]
        self.addresses = {f.data_ptr() for f in fixed if isinstance(f, torch.Tensor)}
        self.run = lambda: fn(*self.inputs, *fixed)  # noqa: E731
        mark, t0 = LEDGER.mark(), time.perf_counter()
        self.graph, self.pool_bytes = None, 0
        if device.type == "cuda":
            self._capture(pool, device)
        else:
            for _ in range(2):
                self.run()
            self.outputs = self.run()
        # The capture's own seconds: compiles inside it (a new FlexAttention shape) are their own entries.
        seconds = time.perf_counter() - t0 - sum(c.seconds for c in LEDGER.since(mark))
        cache = next(f for f in fixed if isinstance(f, torch.Tensor))
        LEDGER.add("cudagraph", f"{fn.__name__} {describe(inputs, {})}, cache {list(cache.shape)}", seconds)

    def reads(self, buffer: torch.Tensor) -> bool:
        """Whether the graph reads `buffer` (a cache's) where it lies."""
        return buffer.data_ptr() in self.addresses

    def _capture(self, pool, device):
        with torch.cuda.device(device):  # the streams and the capture belong to the model's device
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside capture (cuBLAS handles, lazy init, compiles)
                for _ in range(2):
                    self.run()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            # torch.cuda.graph empties the allocator's cache as it starts: read the reserved bytes after the same
            # emptying, or blocks it frees would be subtracted from the pool (a negative pool after a long prefill).
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            reserved = torch.cuda.memory_reserved(device)
            with torch.cuda.graph(self.graph, pool=pool):
                self.outputs = self.run()
            # What the capture added to the shared pool: the graph's intermediates live there between replays,
            # allocated to no tensor, so the allocator's peak never shows them.
            self.pool_bytes = torch.cuda.memory_reserved(device) - reserved

    def replay(self, inputs):
        for buffer, value in zip(self.inputs, inputs, strict=True):
            if buffer is not None:
                buffer.copy_(value)
        if self.graph is not None:
            self.graph.replay()
        else:
            outputs = self.run()
            if isinstance(outputs, tuple):
                for buffer, value in zip(self.outputs, outputs, strict=True):
                    buffer.copy_(value)
            else:
                self.outputs.copy_(outputs)
        if isinstance(self.outputs, tuple):
            return tuple(o.clone() for o in self.outputs)
        return self.outputs.clone()
