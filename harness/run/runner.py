"""`orthrus-bench run`: (suites × methods × model × settings) -> one record per generation, with provenance.

Order of work: every check that can fail (suites, data, methods, checkpoints, tokenizer, what vLLM refuses to
start) happens before the first generation. Then every method's warm-up (not recorded: a few short generations
and, where passes compile per shape, every shape the run's first turns will reach), then the work units: one
unit is one item (all its turns) by one method for one sample. Items are the outer loop and methods the inner
one, so a run stopped early still compares every method on the same prompts (a batched run: methods outer, each
warmed up just before its batches). A vLLM method's engine is alive only through its own warm-up and units, one
engine at a time and never beside the project's methods: each vLLM method decodes after them, as a phase of its
own (`decode_all`). `--shard i/n` keeps shard i of n, the items balanced by expected cost (launch.py; shards.py
joins shard directories back into one run).

One request path (`decode_units`): every method decodes through its decoder's `decode`, each turn a request;
batch size 1 is one row, each request a decode of its own. Measures, telemetry and records hang off each
finished request, alone or batched (`Meter`).

Timing follows docs/methodology.md: each generation is bracketed by device synchronisation and
perf_counter, from its admission to its finish; per-forward times come from CUDA events (perf_counter on
CPU); telemetry is in telemetry.py. The records are harness.records' types.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch

from harness.methods import BACKEND, BATCHED, is_batched, make_decoder
from harness.methods.base import Decoder
from harness.methods.target import Target, load_target, torch_dtype
from harness.options import check_device, check_length, check_memory
from harness.paths import checkpoint_reference
from harness.progress import Reporter
from harness.records import BatchFields, ErrorRecord, GenerationRecord, Record, TelemetryFields, unit_key
from harness.store import RunInfo, StoreError, add_compiles, check_out, open_run
from harness.suites.config import GenerationSettings
from harness.suites.conversation import (
    Conversation,
    Decode,
    Turn,
    one_at_a_time,
    run_conversations,
    source_of,
)
from harness.suites.suite import Suite, SuiteItem, load_suite
from orthrus_core import metrics
from orthrus_core.compiled import LEDGER, Compile, compilations, summary
from orthrus_core.engine import EngineError
from orthrus_core.generation import Clock
from orthrus_core.loop import Finished, Request
from orthrus_core.memory import sampling_copies

from .launch import balanced_shards, item_cost
from .provenance import command_line, config_hash, git_state, hardware, model_provenance, versions
from .seeds import RULE as SEED_RULE
from .seeds import generation_seed
from .spec import SETTINGS, RunError, RunSpec
from .telemetry import Telemetry, load_nvml

logger = logging.getLogger(__name__)

CONTEXT_BUCKETS = (1024, 2048, 4096, 8192, 16384, 32768, 40960)


def context_bucket(prompt_tokens: int, context_tokens: int | None) -> int | None:
    """The sweep's target length, else the smallest standard bucket holding the prompt."""
    if context_tokens is not None:
        return context_tokens
    return next((b for b in CONTEXT_BUCKETS if prompt_tokens <= b), None)


@dataclass
class Prepared:
    spec: RunSpec
    target: Target
    decoders: dict[str, Decoder]  # label -> decoder
    suites: list[Suite]
    items: dict[str, list[SuiteItem]]  # suite name -> items in this shard
    nvml: object
    model_records: list[dict]


def prepare(spec: RunSpec, shard: tuple[int, int] = (0, 1), device: str | None = None) -> Prepared:
    """Load and check everything before any generation: a bad input fails here, with nothing written. `device`:
    the one this process decodes on, where a launcher gave each process its own (`cuda:LOCAL_RANK`; the spec,
    and so the config hash, keeps "cuda"); default the spec's. It is the device weights are loaded to, caches
    allocated on, graphs captured under, the clock synchronises and NVML reads, and the current CUDA device from
    here on, so that events and streams that take the current one take it."""
    spec.check()
    torch_dtype(spec.dtype)
    device = device or spec.device
    check_device(device)
    if device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))
    if not spec.methods or not spec.suites:
        raise RunError("give at least one suite and one method")
    if len(set(spec.methods)) != len(spec.methods):
        raise RunError(f"a method is listed twice in {spec.methods}")
    suites = [load_suite(name, spec.data_dir, limit=spec.limit, ids=spec.ids) for name in spec.suites]
    for suite in suites:
        suite.check_ready()
    try:
        target = load_target(spec.model, spec.dtype, device, spec.engine, spec.quantize)
    except EngineError as exc:
        raise RunError(str(exc)) from None
    if target.tokenizer is None:
        raise RunError(f"{target.path} has no tokenizer files; suites need the model's chat template")
    if spec.batch_size is not None:  # checked before any decoder (a vLLM engine) is built
        for label in spec.methods:
            if not is_batched(label):
                raise RunError(
                    f"--batch-size {spec.batch_size}: {label} decodes one prompt at a time; the batched "
                    f"methods are {', '.join(BATCHED)} and the vLLM methods"
                )
    target.parallel = {
        "tensor_parallel_size": spec.tensor_parallel_size,
        "data_parallel_size": spec.data_parallel_size,
    }
    decoders: dict[str, Decoder] = {}
    try:  # a method that cannot run fails the run here, and the engines started for the others end with it
        for label in spec.methods:
            decoders[label] = make_decoder(label, target)
        max_context = target.model.config.max_position_embeddings
        all_items = {suite.name: suite.items(target.tokenizer, max_context=max_context) for suite in suites}
        items = shard_items(spec, suites, all_items, target.tokenizer, shard)
        check_fits(spec, target, suites, items, decoders)
        nvml = load_nvml() if device.startswith("cuda") else None
        model_records = [model_provenance("target", spec.model or "embedded tiny family", Path(target.path))]
        for label, decoder in decoders.items():
            for role, path in decoder.checkpoints.items():
                if Path(path) != Path(target.path):
                    model_records.append(model_provenance(f"{label}:{role}", label, Path(path)))
        # Last, the slow part: each engine outside this process (vLLM's) started and shut down again, one at a
        # time, so that what vLLM refuses fails here, before anything is timed. Its engine core finds most of it
        # as it loads the model and the draft and sizes the KV cache, which its arguments alone do not tell
        # without redoing vLLM's own rules; a start costs 21 s (vllm-ar) to 28 s (vllm-dflash) and a shutdown
        # 5 s on the tiny family on 2 CPU cores, once per vLLM method. `decode_all` starts it again for its phase.
        for decoder in decoders.values():
            decoder.start()
            decoder.close()
    except BaseException:
        close(decoders.values())
        raise
    return Prepared(spec, target, decoders, suites, items, nvml, model_records)


def close(decoders: Iterable[Decoder]) -> None:
    """Release what the decoders hold outside this process (the vLLM methods' engines)."""
    for decoder in decoders:
        try:
            decoder.close()
        except Exception as exc:  # a decoder that cannot close must not hide why the run ended
            logger.warning("%s: close failed (%s: %s)", decoder.label, type(exc).__name__, exc)


@contextlib.contextmanager
def alive(decoders: list[Decoder]):
    """The decoders' engines outside this process (vLLM's) started for the block and shut down however it ends
    (an error, an interrupt); the project's decoders have none."""
    try:
        for decoder in decoders:
            decoder.start()
        yield
    finally:
        close(decoders)


def check_fits(
    spec: RunSpec,
    target: Target,
    suites: list[Suite],
    items: dict[str, list[SuiteItem]],
    decoders: dict[str, Decoder] | None = None,
) -> None:
    """Every first-turn prompt with its max_new_tokens within the model's positions, and every method's memory
    plan (harness.methods.plan) for the longest of them, at the run's rows, within the device's free memory
    (harness.options.check_memory: the KV cache, the drafter's state, the largest pass's workspace and logits,
    the weights being loaded already). Later turns, whose prompts hold the model's own answers, are checked as
    they come (an error record)."""
    from harness.methods.plan import plan_loaded

    config = target.model.config
    longest = longest_prompt = 0
    sampling = None  # the suites' most memory-hungry sampling (orthrus_core.memory.sampling_copies)
    for suite in suites:
        settings = spec.generation(suite.generation)
        max_new = settings.max_new_tokens
        if sampling_copies(settings.sampling) >= sampling_copies(sampling):
            sampling = settings.sampling
        check_length(0, max_new, config.max_position_embeddings, f"suite {suite.name}: even an empty prompt")
        for item in items[suite.name]:
            prompt = len(suite.render(target.tokenizer, item, []))
            check_length(prompt, max_new, config.max_position_embeddings, f"{suite.name}/{item.id}'s prompt")
            longest = max(longest, prompt + max_new)
            longest_prompt = max(longest_prompt, prompt)
    if longest and decoders:
        device = str(target.model.lm_head.weight.device)  # the process's own (a launched rank's cuda:N)
        plans = plan_loaded(
            target,
            list(decoders.values()),
            context=longest,
            rows=spec.batch_size or 1,
            prompt_tokens=longest_prompt,
            sampling=sampling,
            device=device,
        )
        check_memory(plans, device)


def shard_items(spec, suites, all_items, tokenizer, shard: tuple[int, int]) -> dict[str, list[SuiteItem]]:
    """The items of shard i/n: balanced by expected cost over every suite of the run (launch.balanced_shards),
    in their suite order. Every process computes the same assignment."""
    index, count = shard
    if count == 1:
        return all_items
    pairs = [(suite, item) for suite in suites for item in all_items[suite.name]]
    max_new = {s.name: spec.generation(s.generation).max_new_tokens for s in suites}
    costs = [
        item_cost(len(suite.render(tokenizer, item, [])), max_new[suite.name], len(item.turns))
        for suite, item in pairs
    ]
    keep = {
        (s.name, it.id) for (s, it), i in zip(pairs, balanced_shards(costs, count), strict=True) if i == index
    }
    return {name: [it for it in its if (name, it.id) in keep] for name, its in all_items.items()}


def provenance(spec: RunSpec, p: Prepared, shard: tuple[int, int]) -> RunInfo:
    return RunInfo(
        config=spec.config(),
        config_hash=config_hash(spec.config()),
        shard=list(shard),
        # How the steps ran; the engine as asked for ("auto") in the settings and as resolved on the device.
        settings={k: getattr(spec, k) for k in SETTINGS},
        engine=p.target.engine.mode,
        command=command_line(),
        git=git_state(),
        versions=versions(),
        hardware=hardware(p.nvml),
        suites={
            s.name: {
                "config": s.config,
                "hash": config_hash(s.config),
                "data_origin": s.data_origin,
                "items": {item.id: len(item.turns) for item in p.items[s.name]},  # this shard's
            }
            for s in p.suites
        },
        methods={label: method_provenance(d) for label, d in p.decoders.items()},
        models=p.model_records,
        seeds={"base": spec.seed, "rule": SEED_RULE},
    )


def method_provenance(d: Decoder) -> dict:
    """A method as run.json records it: its resolved options and their hash, and its checkpoints by role, each
    named as harness.paths.checkpoint_reference names it (so too an option that holds a checkpoint's local
    directory, a found draft's), so that neither the names nor the hash depend on where the checkout lies."""
    checkpoints = {role: checkpoint_reference(path) for role, path in d.checkpoints.items()}
    named = {str(path): checkpoints[role] for role, path in d.checkpoints.items()}
    config = {k: named.get(v, v) if isinstance(v, str) else v for k, v in d.config.items()}
    return {
        "name": d.name,
        "lossless": d.lossless,
        "config": config,
        "hash": config_hash(config),
        "checkpoints": checkpoints,
        "outside_engine": d.outside_engine,
        "backend": d.backend,  # the project's, or vllm (its version and arguments in engine_config)
        **({"engine_config": d.engine_config} if d.engine_config else {}),
    }


class Measure(NamedTuple):
    """How one generation was timed: its wall-clock seconds (admission to finish, synchronised), its telemetry
    (None with --no-telemetry) and the graphs compiled or captured during it (`compiles`,
    GenerationRecord.compiles)."""

    wall_s: float
    telemetry: TelemetryFields | None
    compiles: int


class Meter:
    """What the runner measures of every request between its admission to a decode and its finish, decoded alone
    or in a batch: its synchronised wall-clock, its telemetry (harness.run.telemetry) and the graphs compiled
    meanwhile, in `measures` by id(request) until the record is made."""

    def __init__(self, telemetry: Telemetry, device: torch.device):
        self.telemetry = telemetry
        self.clock = Clock(device)  # synchronised: a request's time is its passes' time
        self.started: dict[int, tuple[float, int]] = {}  # id(request) -> clock(), compilations() then
        self.measures: dict[int, Measure] = {}

    def measured(self, decode: Decode) -> Decode:
        """`decode` with each request measured, the telemetry open while it runs and closed however it ends."""

        def each(next_request):
            def admit():
                request = next_request()
                if request is not None:
                    self.telemetry.admit(id(request))
                    self.started[id(request)] = (self.clock(), compilations())
                return request

            self.telemetry.open()
            try:
                for done in decode(admit):
                    key = id(done.request)
                    t0, before = self.started.pop(key)
                    wall = self.clock() - t0
                    self.measures[key] = Measure(wall, self.telemetry.finish(key), compilations() - before)
                    yield done
            finally:
                self.telemetry.close()

        return each

    def rerunning(self, decode: Decode, fresh: Callable[[Request], Request]) -> Decode:
        """`decode` (measured) of one request alone, run again where it compiled or captured a graph (a pass
        shape warm-up had not met: a later turn's new cache bucket, a new tree size; or transformers' own
        compile for `ar-hf:cache=static`): fresh(request) is the same request with its generator made anew, so
        the same seed gives the same tokens and shapes and no record's time holds a compilation. Its measure
        keeps the first run's compiles, so that the record says so."""

        def once(next_request):
            (done,) = decode(next_request)
            compiles = self.measures[id(done.request)].compiles
            if compiles:  # the same request again meets only the shapes it just compiled
                del self.measures[id(done.request)]
                (done,) = decode(source_of(fresh(done.request)))
                self.measures[id(done.request)] = self.measures[id(done.request)]._replace(compiles=compiles)
            yield done

        return once


# The record fields that are the GenerationResult's attributes of the same name.
RESULT_FIELDS = (
    "new_tokens",
    "stop_reason",
    "accepted",
    "acceptance_trace",
    "prefill_forwards",
    "ar_forwards",
    "draft_forwards",
    "tau",
    "tpf",
    "decode_s",
    "tpot_s",
    "emit_offsets_s",
)


def unit_fields(suite: Suite, item: SuiteItem, label: str, decoder: Decoder, sample: int) -> dict:
    return dict(
        suite=suite.name,
        item_id=item.id,
        method=label,
        method_name=decoder.name,
        lossless=decoder.lossless,
        sample=sample,
        backend=decoder.backend,
    )


def unit_records(
    unit: dict,
    item: SuiteItem,
    turns: list[Turn],
    measures: list[Measure],
    score,
    settings: GenerationSettings,
    seed: int,
    batch: list[BatchFields] | None = None,
) -> list[GenerationRecord]:
    """One record per turn of a unit (`unit_fields`): what was generated, how fast, with what score, and in a
    batched run how each turn shared its batch."""
    out = []
    for t, (turn, (wall, telemetry, compiles)) in enumerate(zip(turns, measures, strict=True)):
        r, last = turn.result, t == len(turns) - 1
        out.append(
            GenerationRecord(
                **unit,
                turn=t,
                turns=len(turns),
                seed=generation_seed(seed, item.id, unit["sample"], t),
                temperature=settings.temperature,
                prompt_tokens=len(turn.prompt_ids),
                prompt_ids=turn.prompt_ids,
                context_tokens=item.context_tokens,
                context_bucket=context_bucket(len(turn.prompt_ids), item.context_tokens),
                tags=item.tags,
                output_ids=r.tokens,
                wall_s=wall,
                ttft_s=r.prefill_s,
                tokens_per_s=r.new_tokens / wall if wall > 0 else None,
                telemetry=telemetry,
                compiles=compiles,
                score_correct=score.correct if last else None,
                score_status=score.status if last else None,
                score_detail=score.detail if last else None,
                batch=batch[t] if batch else None,
                **{name: getattr(r, name) for name in RESULT_FIELDS},
            )
        )
    return out


def error_record(unit: dict, item: SuiteItem, exc: BaseException) -> ErrorRecord:
    return ErrorRecord(
        **unit,
        turn=0,
        turns=1,
        error=f"{type(exc).__name__}: {exc}",
        traceback=traceback.format_exc()[-4000:],
        context_tokens=item.context_tokens,
    )


def warm_up(
    p: Prepared, spec: RunSpec, label: str, settings: dict[str, GenerationSettings], todo: list
) -> None:
    """Before a method's first recorded generation, `spec.warmup` short generations of its first prompt (or
    batches of them, `--batch-size`) and, where its passes compile per shape, every shape the first turns of
    its units in `todo` will reach (Decoder.warm_up); nothing is recorded. `--warmup 0`: none of it."""
    decoder = p.decoders[label]
    firsts = {(suite.name, item.id): (suite, item) for suite, item, _, lbl in todo if lbl == label}
    if not firsts or spec.warmup <= 0:
        return
    tokenizer = p.target.tokenizer
    suite, item = next(iter(firsts.values()))
    gen = settings[suite.name]
    positions = {
        len(s.render(tokenizer, it, [])) + settings[s.name].max_new_tokens for s, it in firsts.values()
    }
    try:
        decoder.warm_up(
            suite.render(tokenizer, item, []),
            min(32, gen.max_new_tokens),
            gen.sampling,
            repeats=spec.warmup,
            rows=spec.batch_size,
            continuous=spec.continuous,
            positions=positions,
        )
    except Exception as exc:  # the recorded generations will fail too, each with its own error record
        logger.warning("%s: warm-up failed (%s: %s)", label, type(exc).__name__, exc)


class Compiles:
    """The project's compiles and graph captures (orthrus_core.compiled.LEDGER) per method, during its warm-up
    and during its recorded generations: run.json's `compiles`."""

    PHASES = ("warmup", "generations")

    def __init__(self):
        self.entries: dict[str, dict[str, list[Compile]]] = {}

    @contextlib.contextmanager
    def during(self, label: str, phase: str):
        mark = LEDGER.mark()
        try:
            yield
        finally:
            phases = self.entries.setdefault(label, {p: [] for p in self.PHASES})
            phases[phase] += LEDGER.since(mark)

    def summary(self) -> dict:
        """label -> phase -> orthrus_core.compiled.summary (count, seconds, by kind)."""
        return {
            label: {phase: summary(entries) for phase, entries in phases.items()}
            for label, phases in self.entries.items()
        }


class Progress:
    """The progress bar's running figures per method: tokens/s and τ so far (in a batched run, the batch's
    tokens/s: tokens over each suite's span from first admission to last finish)."""

    def __init__(self):
        self.totals = defaultdict(lambda: [0, 0.0, 0, 0])  # label -> tokens, seconds, accepted, cycles
        self.spans: dict[tuple, list[float]] = {}  # (label, suite) -> first admission, last finish

    def add(self, label: str, records: list[Record]) -> str:
        t = self.totals[label]
        for r in records:
            if isinstance(r, GenerationRecord):
                t[0] += r.new_tokens
                t[2] += sum(r.accepted)
                t[3] += len(r.accepted)
                if r.batch is None:
                    t[1] += r.wall_s
                else:
                    span = self.spans.setdefault((label, r.suite), [r.batch.batch_admitted_s] * 2)
                    span[0] = min(span[0], r.batch.batch_admitted_s)
                    span[1] = max(span[1], r.batch.batch_finished_s)
        seconds = t[1] + sum(end - start for (lbl, _), (start, end) in self.spans.items() if lbl == label)
        if not seconds:
            return label
        return f"{label}: {t[0] / seconds:.1f} tok/s" + (f" τ {metrics.tau(t[2], t[3]):.2f}" if t[3] else "")


def execute(
    spec: RunSpec,
    out: str | Path,
    *,
    resume: bool = False,
    retry_failed: bool = False,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    prepared: Prepared | None = None,
    launch: dict | None = None,
    device: str | None = None,
) -> Path:
    """Run everything `spec` names into `out`; returns the directory. See the module docstring. `prepared`
    (from `prepare`) reuses loaded models and suites; `spec` still decides what is generated and recorded."""
    try:  # a directory this run cannot write is refused before anything loads
        check_out(out, config_hash(spec.config()), shard, resume=resume, retry_failed=retry_failed)
    except StoreError as exc:
        raise RunError(str(exc)) from None
    p = prepared or prepare(spec, shard, device)
    if getattr(p.target, "quantize", None) != spec.quantize:  # the records would misstate the weights
        raise RunError(
            f"the prepared target is quantized {p.target.quantize or 'not at all'}, the run asks for "
            f"--quantize {spec.quantize}: prepare it with the same spec"
        )
    return _execute(spec, out, p, resume, retry_failed, shard, progress, launch)


@dataclass
class Work:
    """What every work unit of a run's session shares: the prepared run, its store and progress, the compiles
    per method and the meter of every request."""

    p: Prepared
    spec: RunSpec
    settings: dict[str, GenerationSettings]  # suite name -> the run's generation settings
    store: object  # harness.store's open run
    bar: object
    figures: Progress
    compiles: Compiles
    meter: Meter
    clock: Clock


def _execute(spec, out, p: Prepared, resume, retry_failed, shard, progress, launch) -> Path:
    run = provenance(spec, p, shard)
    run.launch = launch  # the launcher, the rank and its device, host and pid (launch.LaunchEnv), if launched
    try:
        store = open_run(out, run, resume=resume, retry_failed=retry_failed)
    except StoreError as exc:
        raise RunError(str(exc)) from None
    run.status, run.started, run.resumed_from = "running", _now(), len(store.done) or None
    device = p.target.model.lm_head.weight.device
    telemetry = Telemetry(p.target.engine, device, enabled=spec.telemetry, nvml=p.nvml)
    units = [
        (suite, item, sample, label)
        for suite in p.suites
        for item in p.items[suite.name]
        for sample in range(spec.samples)
        for label in p.decoders
    ]
    todo = [
        u
        for u in units
        if unit_key({"suite": u[0].name, "item_id": u[1].id, "method": u[3], "sample": u[2]})
        not in store.done
    ]
    # A resumed run's compiles are its sessions' together: the earlier ones' stay in run.json from the start
    earlier = run.compiles = store.resumed.compiles if store.resumed else None
    shown = Reporter(enabled=progress)  # stderr: a bar on a terminal, a few lines in a log
    bar = shown.bar(todo, "run", unit="gen", initial=len(units) - len(todo), total=len(units), leave=True)
    settings = {s.name: spec.generation(s.generation) for s in p.suites}
    work = Work(
        p, spec, settings, store, bar, Progress(), Compiles(), Meter(telemetry, device), Clock(device)
    )
    try:  # from here on the store (and its writer lock) is closed however the run ends
        store.write_run(run)
        decode_all(work, todo, shown)
        bar.close()
        run.status = "complete"
    except KeyboardInterrupt:
        run.status = "interrupted"
        raise
    finally:
        run.finished = _now()
        run.compiles = add_compiles(earlier, work.compiles.summary())
        try:
            store.write_run(run)
        finally:  # the writer lock goes with the store, even when the disk refused run.json
            store.close()
    return Path(out)


def decode_all(work: Work, todo: list, shown: Reporter) -> None:
    """The work units in `todo` in phases (`phases`), each method warmed up before its first (`warm_up`), all
    through `decode_units`. A phase's engines outside this process (a vLLM method's) are started just before its
    warm-ups and shut down after its last unit (`alive`), so that one at most is alive at any time and none while
    a method of the project's engine decodes or warms up; a phase with no unit left (a resumed run) starts none.
    Decoded alone (no --batch-size): first the project's methods, every warm-up before the first timed generation,
    then the units one at a time, items outer and methods inner, so that a run stopped early still compares every
    method on the same prompts; then each vLLM method in turn, as a phase of its own, its units in item order.
    Batched: methods outer, each a phase, warmed up just before its batches, and a suite's units in one decode."""
    spec, p = work.spec, work.p

    def warmed_up(label: str) -> None:
        if spec.warmup > 0 and any(lbl == label for *_, lbl in todo):
            shown.say(
                f"run: warming up {label} ({spec.warmup} unrecorded generation{'s' * (spec.warmup > 1)})"
            )
        with work.compiles.during(label, "warmup"):
            warm_up(p, spec, label, work.settings, todo)

    for labels in phases(p.decoders, batched=spec.batch_size is not None):
        units = [u for u in todo if u[3] in labels]
        with alive([p.decoders[label] for label in labels] if units else []):
            for label in labels:  # every warm-up of the phase before its first timed generation
                warmed_up(label)
            if spec.batch_size is None:
                for suite, item, sample, label in units:
                    decode_units(work, label, suite, [(item, sample)])
            else:
                (label,) = labels
                for suite in p.suites:
                    mine = [(item, sample) for s, item, sample, _ in units if s is suite]
                    if mine:
                        decode_units(work, label, suite, mine)


def phases(decoders: dict[str, Decoder], batched: bool) -> list[list[str]]:
    """The run's methods (labels) in the groups `decode_all` runs one after another. Alone: the project's
    methods together, their units interleaved, then each method of another engine (vLLM) alone, so that its
    engine lives only through its own units. Batched: every method alone, in the order the run lists them."""
    if batched:
        return [[label] for label in decoders]
    own = [label for label, decoder in decoders.items() if decoder.backend == BACKEND]
    return [own] + [[label] for label, decoder in decoders.items() if decoder.backend != BACKEND]


def decode_units(work: Work, label: str, suite: Suite, units: list[tuple[SuiteItem, int]]) -> None:
    """The one request path: the work units (item, sample) of one method in one suite through the method's
    `decode`, each turn a request (the next queued when the last finishes), records written, with their measure
    (`Meter`), as each unit finishes. Alone (no --batch-size), each request is a decode of one row of its own
    (conversation.one_at_a_time), run again where it compiled (`Meter.rerunning`); batched, the units share one
    decode at `batch_size` rows, and a record counts the graphs compiled while its request was in the batch,
    which its time holds (a batch cannot be run again). An OOM or a bug ends the decode: its unfinished units
    get error records and the run goes on."""
    spec, p, meter = work.spec, work.p, work.meter
    decoder, gen = p.decoders[label], work.settings[suite.name]

    def generator(c: Conversation, turn: int):
        return decoder.generator(generation_seed(spec.seed, c.item.id, c.sample, turn))

    rows = spec.batch_size or 1
    decode = meter.measured(
        partial(decoder.decode, params=gen.sampling, rows=rows, continuous=spec.continuous)
    )

    def anew(request: Request) -> Request:  # the same turn's request, its generator made again
        return dataclasses.replace(request, generator=generator(request.key, len(request.key.turns)))

    if spec.batch_size is None:
        decode = one_at_a_time(meter.rerunning(decode, anew))
    conversations = [Conversation(item, sample) for item, sample in units]
    # a batch's times are from its start (BatchFields); read only where there is a batch: the clock syncs the device
    epoch = None if spec.batch_size is None else work.clock()
    written, writing = set(), None
    try:
        with (
            work.compiles.during(label, "generations"),
            contextlib.closing(
                run_conversations(suite, conversations, p.target.tokenizer, decode, gen, generator)
            ) as finished,
        ):
            for c in finished:
                unit = unit_fields(suite, c.item, label, decoder, c.sample)
                score = suite.score(c.item, [t.text for t in c.turns], tokenizer=p.target.tokenizer)
                measures = [meter.measures.pop(id(f.request)) for f in c.finished]
                batch = (
                    None if spec.batch_size is None else [batch_fields(spec, f, epoch) for f in c.finished]
                )
                records = unit_records(unit, c.item, c.turns, measures, score, gen, spec.seed, batch)
                writing = c  # a store that fails (a full disk) fails the run: its unit is not an error record
                work.store.write_unit(records)
                writing = None
                written.add(id(c))
                work.bar.update(1)
                work.bar.set_postfix_str(work.figures.add(label, records))
    except Exception as exc:
        if writing is not None:
            raise
        if p.target.model.lm_head.weight.device.type == "cuda":
            torch.cuda.empty_cache()
        for c in conversations:
            if id(c) not in written:
                work.store.write_unit(
                    [error_record(unit_fields(suite, c.item, label, decoder, c.sample), c.item, exc)]
                )
                work.bar.update(1)
    finally:  # a failed request's measures go with it
        meter.started.clear()
        meter.measures.clear()


def batch_fields(spec: RunSpec, b: Finished, epoch: float) -> BatchFields:
    return BatchFields(
        batch_size=spec.batch_size,
        batch_continuous=spec.continuous,
        batch_rows_mean=b.mean_rows,
        batch_forwards=b.forwards,
        batch_forward_share=b.forward_share,
        batch_admitted_s=b.admitted_at - epoch,
        batch_finished_s=b.finished_at - epoch,
        kv_bytes_per_position=b.kv_bytes_per_position,
        kv_scratch_positions=b.kv_scratch_positions,
        kv_row_bytes=b.kv_row_bytes,
        batch_shared_telemetry=True if spec.telemetry else None,
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
