"""The record schema: what one line of a run's `records.jsonl` holds.

A run writes, per work unit (one item's turns by one method for one sample), one `GenerationRecord` per turn,
or a single `ErrorRecord` when the unit failed (an OOM, a bug: the run goes on). On disk a record is one flat
JSON object, telemetry's fields inline, so that `pandas.DataFrame.from_records` gives one column per field;
a run made with `--no-telemetry` has none of them. docs/methodology.md defines every metric.

The runner builds these classes, `harness.store` writes them and checks every line it reads against them, and
the tests' synthetic runs build them too, so there is one schema, not several dict literals.
"""

from __future__ import annotations

import json
import math
import types
from dataclasses import dataclass, field, fields
from typing import Union, get_args, get_origin, get_type_hints


@dataclass(kw_only=True)
class TelemetryFields:
    """What `harness.run.telemetry` measures around one generation. Forward times are CUDA events on a GPU,
    perf_counter on a CPU; the prefill is the request's own (the engine's, else the first AR forward). Memory,
    NVML and energy fields are None where they cannot be measured (no CUDA device, no NVML).

    In a batched run (issue 39; older batched records have none of these fields) they are measured over the
    request's stay in the batch, admission to finish, and BatchFields.batch_shared_telemetry says so: the
    memory peaks, power, clocks, throttling and pass counts and times are the batch's over that stretch, shared
    with the requests decoded beside it (the passes it took part in, and the others' prefills left out: its
    ar_forward_count is its ar_forwards); energy_j is its part of the device's energy, every stretch between two
    admissions or finishes split evenly among the requests then in the batch, so that the records of a batch
    add up to its energy; kv_capacity is the bucket of the batch's cache."""

    prefill_forward_ms: float | None = None  # None when the target's own forward never ran (ar-hf)
    ar_forward_count: int
    ar_forward_ms_mean: float | None
    ar_forward_ms_median: float | None
    diffusion_forward_count: int
    diffusion_forward_ms_mean: float | None
    diffusion_forward_ms_median: float | None
    # The generation's own peak: torch.cuda.max_memory_allocated (weights included) less the KV caches the engine
    # keeps for other buckets (other_caches_bytes), plus what captured graphs reserved (graph_pool_bytes)
    allocator_peak_bytes: int | None
    nvml_samples: int | None
    device_mem_peak_bytes: int | None
    process_mem_peak_bytes: int | None
    power_mean_w: float | None
    sm_clock_mean_mhz: float | None
    mem_clock_mean_mhz: float | None
    throttle_reasons: int | None  # NVML clock-event reasons OR-ed over the generation
    energy_j: float | None
    energy_reliable: bool | None  # False below a second: the energy counter updates every few tens of ms
    # Added with issue 26 (absent from older records): the KV bucket the generation ran in (positions per row:
    # its prompt and new tokens rounded up by orthrus_core.engine.bucket), and the two corrections above.
    kv_capacity: int | None = None
    other_caches_bytes: int | None = None
    graph_pool_bytes: int | None = None
    # Added with issue 27: True where the device is a MIG instance, whose NVML figures above (device memory,
    # power, clocks, energy) are its whole GPU's
    nvml_whole_gpu: bool | None = None
    nvml_error: str | None = None  # why the NVML fields are None where NVML was there but failed


TELEMETRY_FIELDS = tuple(f.name for f in fields(TelemetryFields))


@dataclass(kw_only=True)
class BatchFields:
    """How a generation shared its batch (`run --batch-size B`, in the decode loop: orthrus_core.loop). Times
    are seconds since the method's batched decoding of the suite began, so that the batch's throughput is the
    tokens of a (suite, method) over the span from its first admission to its last finish."""

    batch_size: int  # rows the batch holds
    batch_continuous: bool  # a finished row's slot refilled with the next request at once
    batch_rows_mean: (
        float  # rows per batched pass it took part in (itself included), averaged over its passes
    )
    batch_forwards: int  # batched passes (target and drafter, prefill excluded) it took part in
    batch_forward_share: float  # sum over those passes of 1 / rows in the pass: its share of the batch's work
    batch_admitted_s: float  # when it entered the batch (its wait in the queue before is not counted)
    batch_finished_s: float
    kv_bytes_per_position: float  # KV cache bytes (the target's and the drafter's own) per row and position
    kv_scratch_positions: (
        int  # positions a row holds beyond its committed ones (the drafter's largest proposal)
    )
    kv_row_bytes: int  # the KV cache its row needs: bytes per position x (prompt + new tokens + scratch)
    # Added with issue 39 (absent from older records, whose batched runs measured no telemetry): True where the
    # record's telemetry fields are the batch's over its stay, shared (TelemetryFields says how); None: no
    # telemetry (`run --no-telemetry`)
    batch_shared_telemetry: bool | None = None


BATCH_FIELDS = tuple(f.name for f in fields(BatchFields))


# Whose engine decoded a method: the project's own (harness.methods.BACKEND); vLLM's methods record "vllm".
# ("engine" alone is the project's engine and its mode, eager, compile or cudagraph: run.json's `engine`.)
BACKEND = "orthrus-bench"
# Keys renamed since records were first written: old name -> new (issue 39: a record's `engine` is its backend)
RENAMED = {"engine": "backend"}


@dataclass(kw_only=True)
class UnitFields:
    """Which generation a record is: a turn of one item by one method for one sample."""

    suite: str
    item_id: str  # "<suite>/<dataset id>"
    method: str  # the method spec, canonical (harness.method_spec.MethodSpec), e.g. "eagle3:tree=chain"
    method_name: str  # the registry name, e.g. "eagle3"
    lossless: bool
    sample: int
    turn: int
    turns: int
    # Added with issue 28 (absent from older records, all the project's) as `engine`, named `backend` since issue
    # 39 (readers rename it: `upgraded`): whose engine decoded it, the project's or vLLM's
    backend: str = BACKEND
    # Added with issue 37 (absent from older records): the config_hash of the run.json of the run that wrote it,
    # stamped by harness.store as it writes, so that a record from another run's configuration is found
    config_hash: str | None = None


@dataclass(kw_only=True)
class GenerationRecord(UnitFields):
    """One successful generation (one turn)."""

    seed: int  # harness.run.seeds.generation_seed(base, item_id, sample, turn)
    status: str = field(default="ok", init=False)
    error: str | None = field(default=None, init=False)
    temperature: float
    prompt_tokens: int
    prompt_ids: list[int]
    context_tokens: int | None  # a context sweep's target prompt length, else None
    context_bucket: int | None
    tags: dict = field(default_factory=dict)  # the item's report fields (Spec-Bench's category...)
    new_tokens: int
    stop_reason: str  # "stop" or "length"
    output_ids: list[int]
    accepted: list[int]  # drafts the verifier accepted, per cycle
    acceptance_trace: list  # orthrus_core GenerationResult.acceptance_trace (sampled drafts only)
    prefill_forwards: int
    ar_forwards: int
    draft_forwards: int
    tau: float | None
    tpf: float | None
    wall_s: float
    ttft_s: float
    decode_s: float
    tpot_s: float | None
    tokens_per_s: float | None
    # Added with issue 29 (absent from older records): when each emission after the first token came, seconds
    # since the first token (orthrus_core GenerationResult.emit_offsets_s: one per verification cycle, or per
    # token after the first for AR; a cycle's tokens come at once). Its successive gaps, from 0, are the
    # inter-token latencies. None: the decoder could not tell (or a record from before).
    emit_offsets_s: list[float] | None = None
    # Added with warm-up of every compiled shape (absent from older records): graphs compiled or captured during
    # the generation (the project's, and transformers' own), so a shape warm-up had not compiled. Decoded alone:
    # its first attempt's, which the runner ran again, so wall_s is the rerun's and holds none; batched: during
    # its stay in the batch, admission to finish, so wall_s holds them. None: a record from before.
    compiles: int | None = None
    # inlined on disk; None: `run --no-telemetry`, or a batched run from before issue 39
    telemetry: TelemetryFields | None
    score_correct: bool | None  # the score belongs to the item's last turn; None on earlier turns
    score_status: str | None
    score_detail: dict | None  # harness.scoring.base.Score.detail (extracted answer, gold, ...)
    batch: BatchFields | None = None  # inlined on disk; None: decoded alone (no --batch-size)

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("telemetry", "batch"):
                if value is not None:
                    out.update({name: getattr(value, name) for name in fields_of(value)})
            else:
                out[f.name] = value
        return out


@dataclass(kw_only=True)
class ErrorRecord(UnitFields):
    """A work unit that failed: one record for the whole unit, with the error and its traceback."""

    status: str = field(default="error", init=False)
    error: str  # "<exception type>: <message>"
    traceback: str  # the last 4000 characters
    context_tokens: int | None

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


Record = GenerationRecord | ErrorRecord


def fields_of(inlined) -> tuple[str, ...]:
    return TELEMETRY_FIELDS if isinstance(inlined, TelemetryFields) else BATCH_FIELDS


# Fields added after results were first committed: absent from older records, which still load.
LATER_FIELDS = ("tags", "backend", "emit_offsets_s", "compiles", "config_hash")
# The fields every record of a status has on disk (telemetry's are all there or, with --no-telemetry, none;
# the batch's are all there in a batched run and none elsewhere).
REQUIRED_FIELDS = {
    "ok": tuple(
        f.name for f in fields(GenerationRecord) if f.name not in ("telemetry", "batch", *LATER_FIELDS)
    ),
    "error": tuple(f.name for f in fields(ErrorRecord) if f.name not in LATER_FIELDS),
}


def _types(cls) -> dict[str, object]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


# Each field's type as the schema declares it, telemetry's and the batch's inlined as they are on disk.
FIELD_TYPES = {
    "ok": {
        **{k: v for k, v in _types(GenerationRecord).items() if k not in ("telemetry", "batch")},
        **_types(TelemetryFields),
        **_types(BatchFields),
    },
    "error": _types(ErrorRecord),
}
# An inlined group is all there or not at all: its fields without a default (those with one came later).
INLINED = {
    "telemetry": tuple(f.name for f in fields(TelemetryFields) if f.default is not None),
    "batch": tuple(f.name for f in fields(BatchFields) if f.default is not None),
}


def _conforms(value, hint) -> bool:
    """`value`, as json.loads gives it, is of the schema's type `hint` (an int is a float; a bool is not an
    int; a float is finite; None only where the type has it)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arm) for arm in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if hint is list or origin is list:
        return isinstance(value, list) and all(_conforms(v, arm) for arm in get_args(hint) for v in value)
    raise TypeError(f"the record schema has a type with no rule here: {hint}")


def _type_name(hint) -> str:
    """A type as the schema's reader would say it: "int", "list[int]", "float or null"."""
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(arm) for arm in get_args(hint))
    return (
        "null" if hint is type(None) else getattr(hint, "__name__", None) if not get_args(hint) else str(hint)
    )


def upgraded(record):
    """A record as read from disk with the keys renamed since it was written given their names now (RENAMED),
    so that every reader sees one schema; anything else (not a dict) as it is, for schema_problem to judge."""
    if not isinstance(record, dict) or not RENAMED.keys() & record.keys():
        return record
    return {RENAMED.get(key, key): value for key, value in record.items()}


def schema_problem(record) -> str | None:
    """What makes a line read from disk not a record of the schema, or None: a field missing (its status
    decides which are required; an inlined group is all there or none), a field of another type (a null where
    the schema has none included), or counts that contradict each other."""
    if not isinstance(record, dict):
        return "not a JSON object"
    required = REQUIRED_FIELDS.get(record.get("status"))
    if required is None:
        return f'its status is {json.dumps(record.get("status"))}, not "ok" or "error"'
    missing = [name for name in required if name not in record]
    if record["status"] == "ok":
        for group in INLINED.values():
            there = [name for name in group if name in record]
            if there:
                missing += [name for name in group if name not in record]
    if missing:
        return f"it lacks {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}"
    for name, hint in FIELD_TYPES[record["status"]].items():
        if name in record and not _conforms(record[name], hint):
            shown = json.dumps(record[name])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return f"its {name} is {shown}, not of the schema's type ({_type_name(hint)})"
    if not (0 <= record["turn"] < record["turns"] and record["sample"] >= 0):
        return f"its turn {record['turn']} of {record['turns']} (sample {record['sample']}) is out of range"
    if record["status"] == "ok" and len(record["output_ids"]) != record["new_tokens"]:
        return f"its new_tokens {record['new_tokens']} is not the length of its output_ids ({len(record['output_ids'])})"
    return None


# The keys a record is counted and paired by, as column tuples (a DataFrame's groupby, merge and index take
# them as they are) and as functions of one record (a dict, or a DataFrame row). The only definitions.
UNIT = ("suite", "item_id", "method", "sample")  # a work unit: one item's turns by one method for one sample
PROMPT = ("suite", "item_id", "sample", "turn")  # a generation's prompt: the same prompt across methods


def unit_key(record) -> tuple:
    """The work unit a record belongs to: what resume and merge count, and what the report's units are."""
    return tuple(record[column] for column in UNIT)


def unit_name(record) -> str:
    """A work unit as messages name it."""
    return f"the unit of item {record['item_id']} by {record['method']} (sample {record['sample']})"


def prompt_key(record) -> tuple:
    """The prompt a record answered: the same key in every method's record of that prompt (what the greedy
    verdict and the report pair methods' generations by)."""
    return tuple(record[column] for column in PROMPT)
