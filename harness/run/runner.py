"""`orthrus-bench run`: (suites × methods × model × settings) -> one record per generation, with provenance.

Order of work: every check that can fail (suites, data, methods, checkpoints, tokenizer) happens before the
first generation. Then, per method, warm-up generations (not recorded), then the work units: one unit is
one item (all its turns) by one method for one sample. Items are the outer loop and methods the inner one,
so a run stopped early still compares every method on the same prompts. `--shard i/n` keeps the items whose
position is i modulo n; `merge` joins shard directories back into one run.

Timing follows docs/methodology.md: each generation is bracketed by device synchronisation and
perf_counter; per-forward times come from CUDA events (perf_counter on CPU); telemetry is in telemetry.py.
"""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import torch

from harness.store import StoreError, open_run, write_json
from harness.suites.conversation import run_item
from harness.suites.suite import Suite, SuiteItem, load_suite

from .provenance import command_line, config_hash, git_state, hardware, model_provenance, versions
from .seeds import RULE as SEED_RULE
from .seeds import generation_seed
from .telemetry import Telemetry, load_nvml

logger = logging.getLogger(__name__)

TINY_SUITES = ["tiny-math", "tiny-code", "tiny-chat"]
DEFAULT_METHODS = ["ar", "ar-hf", "orthrus", "eagle3", "dflash", "pld", "diffusion"]
DEFAULT_LIMIT = 8  # items per tiny suite when `run` is given no arguments: a few minutes on 2 CPU cores
CONTEXT_BUCKETS = (1024, 2048, 4096, 8192, 16384, 32768, 40960)


class RunError(Exception):
    """A run that cannot start: bad suite, method, checkpoint, shard or output directory."""


@dataclass
class RunSpec:
    suites: list[str] = field(default_factory=lambda: list(TINY_SUITES))
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    model: str | None = None  # checkpoint directory or hub id; None: the embedded tiny family
    dtype: str = "float32"
    device: str = "cpu"
    temperature: float | None = None  # None: each suite's own setting
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    limit: int | None = None
    ids: list[str] | None = None  # dataset ids to keep (with or without the "<suite>/" prefix)
    samples: int = 1  # generations per item and method (> 1 for sampling-based verdicts)
    seed: int = 0
    warmup: int = 2
    telemetry: bool = True
    data_dir: str | None = None

    def config(self) -> dict:
        """What makes two runs comparable; hashed, and checked on --resume and merge."""
        return {k: v for k, v in asdict(self).items() if k not in ("warmup", "telemetry", "data_dir")}


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise RunError(f"--shard must look like i/n (e.g. 0/4), not {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise RunError(f"--shard {text}: need 0 <= i < n")
    return i, n


def context_bucket(prompt_tokens: int, context_tokens: int | None) -> int | None:
    """The sweep's target length, else the smallest standard bucket holding the prompt."""
    if context_tokens is not None:
        return context_tokens
    return next((b for b in CONTEXT_BUCKETS if prompt_tokens <= b), None)


@dataclass
class Prepared:
    spec: RunSpec
    target: object  # harness.methods.Target
    decoders: dict  # label -> Decoder
    suites: list[Suite]
    items: dict[str, list[SuiteItem]]  # suite name -> items in this shard
    nvml: object
    model_records: list[dict]


def prepare(spec: RunSpec, shard: tuple[int, int] = (0, 1)) -> Prepared:
    """Load and check everything before any generation: a bad input fails here, with nothing written."""
    from harness.cli import DTYPES
    from harness.methods import Target, make_decoder
    from harness.paths import default_model
    from orthrus_core.checkpoint import load_model, resolve
    from orthrus_core.tokenizer import load_tokenizer

    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"--device {spec.device} was asked for but no CUDA device is available; use cpu")
    if spec.dtype not in DTYPES:
        raise RunError(f"unknown dtype {spec.dtype!r}; choose one of {', '.join(DTYPES)}")
    if not spec.methods or not spec.suites:
        raise RunError("give at least one suite and one method")
    if len(set(spec.methods)) != len(spec.methods):
        raise RunError(f"a method is listed twice in {spec.methods}")
    suites = [load_suite(name, spec.data_dir, limit=spec.limit, ids=spec.ids) for name in spec.suites]
    directory = resolve(spec.model) if spec.model else default_model()
    model = load_model(directory, dtype=DTYPES[spec.dtype], device=spec.device)
    tokenizer = load_tokenizer(directory)
    if tokenizer is None:
        raise RunError(f"{directory} has no tokenizer files; suites need the model's chat template")
    target = Target(model, directory, tokenizer)
    decoders = {label: make_decoder(label, target) for label in spec.methods}

    index, count = shard
    max_context = model.config.max_position_embeddings
    items = {}
    for suite in suites:
        all_items = suite.items(tokenizer, max_context=max_context)
        items[suite.name] = [it for position, it in enumerate(all_items) if position % count == index]
    nvml = load_nvml() if spec.device.startswith("cuda") else None
    model_records = [model_provenance("target", spec.model or "embedded tiny family", directory)]
    for label, decoder in decoders.items():
        for role, path in decoder.checkpoints.items():
            if Path(path) != Path(directory):
                model_records.append(model_provenance(f"{label}:{role}", label, Path(path)))
    return Prepared(spec, target, decoders, suites, items, nvml, model_records)


def provenance(p: Prepared, shard: tuple[int, int]) -> dict:
    spec = p.spec
    return {
        "config": spec.config(),
        "config_hash": config_hash(spec.config()),
        "shard": list(shard),
        "settings": {"warmup": spec.warmup, "telemetry": spec.telemetry, "data_dir": spec.data_dir},
        "command": command_line(),
        "git": git_state(),
        "versions": versions(),
        "hardware": hardware(p.nvml),
        "suites": {
            s.name: {"config": s.config, "hash": config_hash(s.config), "data_origin": s.data_origin}
            for s in p.suites
        },
        "methods": {
            label: {
                "name": d.name,
                "lossless": d.lossless,
                "config": d.config,
                "hash": config_hash(d.config),
                "checkpoints": {k: str(v) for k, v in d.checkpoints.items()},
            }
            for label, d in p.decoders.items()
        },
        "models": p.model_records,
        "seeds": {"base": spec.seed, "rule": SEED_RULE},
    }


def _measured(decoder, telemetry: Telemetry, device: torch.device, sink: list):
    """decoder.generate wrapped: synchronised wall-clock and telemetry per call, appended to sink."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def generate(prompt_ids, max_new_tokens, **kwargs):
        telemetry.start()
        sync()
        t0 = time.perf_counter()
        result = decoder.generate(prompt_ids, max_new_tokens, **kwargs)
        sync()
        wall = time.perf_counter() - t0
        sink.append((wall, telemetry.stop()))
        return result

    return generate


def unit_records(suite, item, label, decoder, sample, turns, measures, score, spec) -> list[dict]:
    out = []
    for t, (turn, (wall, tele)) in enumerate(zip(turns, measures, strict=True)):
        r = turn.result
        last = t == len(turns) - 1
        out.append(
            {
                "suite": suite.name,
                "item_id": item.id,
                "method": label,
                "method_name": decoder.name,
                "lossless": decoder.lossless,
                "sample": sample,
                "turn": t,
                "turns": len(turns),
                "seed": generation_seed(spec.seed, item.id, sample, t),
                "status": "ok",
                "error": None,
                "temperature": spec.temperature
                if spec.temperature is not None
                else suite.generation.temperature,
                "prompt_tokens": len(turn.prompt_ids),
                "prompt_ids": turn.prompt_ids,
                "context_tokens": item.context_tokens,
                "context_bucket": context_bucket(len(turn.prompt_ids), item.context_tokens),
                "new_tokens": r.new_tokens,
                "stop_reason": r.stop_reason,
                "output_ids": r.tokens,
                "accepted": r.accepted,
                "acceptance_trace": r.acceptance_trace,
                "prefill_forwards": r.prefill_forwards,
                "ar_forwards": r.ar_forwards,
                "draft_forwards": r.draft_forwards,
                "tau": r.tau,
                "tpf": r.tpf,
                "wall_s": wall,
                "ttft_s": r.prefill_s,
                "decode_s": r.decode_s,
                "tpot_s": r.tpot_s,
                "tokens_per_s": r.new_tokens / wall if wall > 0 else None,
                **tele,
                "score_correct": score.correct if last else None,
                "score_status": score.status if last else None,
                "score_detail": score.detail if last else None,
            }
        )
    return out


def error_record(suite, item, label, decoder, sample, exc: BaseException) -> dict:
    return {
        "suite": suite.name,
        "item_id": item.id,
        "method": label,
        "method_name": decoder.name,
        "lossless": decoder.lossless,
        "sample": sample,
        "turn": 0,
        "turns": 1,
        "status": "error",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc()[-4000:],
        "context_tokens": item.context_tokens,
    }


def warm_up(p: Prepared, label: str, decoder) -> None:
    """`warmup` short generations on the first item (kernels, allocator, caches); nothing is recorded."""
    suite = next((s for s in p.suites if p.items[s.name]), None)
    if suite is None or p.spec.warmup <= 0:
        return
    item = p.items[suite.name][0]
    prompt = suite.render(p.target.tokenizer, item, [])
    try:
        for _ in range(p.spec.warmup):
            decoder.generate(prompt, min(32, suite.generation.max_new_tokens))
    except Exception as exc:  # the recorded generations will fail too, each with its own error record
        logger.warning("%s: warm-up failed (%s: %s)", label, type(exc).__name__, exc)


def execute(
    spec: RunSpec,
    out: str | Path,
    *,
    resume: bool = False,
    retry_failed: bool = False,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    prepared: Prepared | None = None,
) -> Path:
    """Run everything `spec` names into `out`; returns the directory. See the module docstring."""
    from tqdm import tqdm

    p = prepared or prepare(spec, shard)
    run = provenance(p, shard)
    try:
        store = open_run(out, resume=resume, config_hash=run["config_hash"], retry_failed=retry_failed)
    except StoreError as exc:
        raise RunError(str(exc)) from None
    run.update(status="running", started=_now(), finished=None, resumed_from=len(store.done) or None)
    store.write_run(run)
    device = p.target.model.lm_head.weight.device
    telemetry = Telemetry(p.target.model, device, enabled=spec.telemetry, nvml=p.nvml)
    units = [
        (suite, item, sample, label)
        for suite in p.suites
        for item in p.items[suite.name]
        for sample in range(spec.samples)
        for label in p.decoders
    ]
    todo = [u for u in units if (u[0].name, u[1].id, u[3], u[2]) not in store.done]
    warmed: set[str] = set()
    totals = defaultdict(lambda: [0, 0.0, 0, 0])  # label -> tokens, seconds, accepted, cycles
    bar = tqdm(
        todo, desc="run", unit="gen", disable=not progress, initial=len(units) - len(todo), total=len(units)
    )
    try:
        for suite, item, sample, label in bar:
            decoder = p.decoders[label]
            if label not in warmed:
                warm_up(p, label, decoder)
                warmed.add(label)
            measures: list = []
            try:
                turns = run_item(
                    suite,
                    item,
                    p.target.tokenizer,
                    _measured(decoder, telemetry, device, measures),
                    seed=partial(generation_seed, spec.seed, item.id, sample),
                    temperature=spec.temperature,
                    top_k=spec.top_k,
                    top_p=spec.top_p,
                    max_new_tokens=spec.max_new_tokens,
                )
                score = suite.score(item, [t.text for t in turns], tokenizer=p.target.tokenizer)
                records = unit_records(suite, item, label, decoder, sample, turns, measures, score, spec)
            except Exception as exc:  # an OOM or a bug in one generation must not end the run
                if telemetry.timer is not None and "forward" in vars(p.target.model):
                    telemetry.timer.detach()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                records = [error_record(suite, item, label, decoder, sample, exc)]
            store.write_unit(records)
            t = totals[label]
            for r in records:
                if r["status"] == "ok":
                    t[0] += r["new_tokens"]
                    t[1] += r["wall_s"]
                    t[2] += sum(r["accepted"])
                    t[3] += len(r["accepted"])
            bar.set_postfix_str(
                f"{label}: {t[0] / t[1]:.1f} tok/s" + (f" τ {1 + t[2] / t[3]:.2f}" if t[3] else "")
                if t[1]
                else label
            )
        run["status"] = "complete"
    except KeyboardInterrupt:
        run["status"] = "interrupted"
        raise
    finally:
        run["finished"] = _now()
        store.write_run(run)
        store.close()
    return Path(out)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------- merge


def merge(shard_dirs: list[str | Path], out: str | Path) -> Path:
    """Join shard directories of one run (same config hash, shards i/n covering 0..n-1 once) into `out`."""
    from harness.store import RECORDS, load_run, read_records

    if not shard_dirs:
        raise RunError("merge needs at least one shard directory")
    runs = [load_run(d) for d in shard_dirs]
    hashes = {r["config_hash"] for r in runs}
    if len(hashes) != 1:
        raise RunError(f"the shards come from different configurations (config hashes {sorted(hashes)})")
    counts = {r["shard"][1] for r in runs}
    indices = sorted(r["shard"][0] for r in runs)
    if len(counts) != 1 or indices != list(range(counts.pop())):
        raise RunError(f"shards {[r['shard'] for r in runs]} do not cover i/n for i = 0..n-1 exactly once")
    incomplete = [str(d) for d, r in zip(shard_dirs, runs, strict=True) if r.get("status") != "complete"]
    if incomplete:
        raise RunError(f"shard(s) not finished: {', '.join(incomplete)}; resume them first")
    out = Path(out)
    if (out / RECORDS).exists():
        raise RunError(f"{out} already holds a run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    staged = out / f".{RECORDS}.partial"
    with open(staged, "w") as f:
        for d in shard_dirs:
            for record in read_records(d):
                f.write(json.dumps(record, allow_nan=True) + "\n")
    merged = {
        **runs[0],
        "shard": [0, 1],
        "merged_from": [{"dir": str(d), **r} for d, r in zip(shard_dirs, runs, strict=True)],
    }
    merged["started"] = min(r["started"] for r in runs)
    merged["finished"] = max(r["finished"] for r in runs)
    staged.replace(out / RECORDS)
    write_json(out / "run.json", merged)
    return out


# ------------------------------------------------------------------------------------------------- summary


def summarize(records: list[dict]):
    """Per method: τ (over all cycles), TPF, mean per-item tokens/s and its speedup over `ar` and `ar-hf`
    (Spec-Bench: ratio of the means of per-item tokens/s), accuracy, and greedy token identity with `ar`."""
    import pandas as pd

    df = pd.DataFrame.from_records([r for r in records if r["status"] == "ok"])
    errors = defaultdict(int)
    for r in records:
        if r["status"] != "ok":
            errors[r["method"]] += 1
    failed_only = [
        {"method": m, "generations": 0, "errors": n}
        for m, n in errors.items()
        if df.empty or m not in set(df.method)
    ]
    if df.empty:
        return pd.DataFrame(failed_only)
    unit = ["suite", "item_id", "sample"]
    per_item = df.groupby(["method", *unit]).agg(tokens=("new_tokens", "sum"), wall=("wall_s", "sum"))
    per_item["tps"] = per_item.tokens / per_item.wall
    tps = per_item.groupby("method").tps.mean()
    ar_ids = {}
    if "ar" in set(df.method):
        ar = df[df.method == "ar"]
        ar_ids = {(r.suite, r.item_id, r.sample, r.turn): r.output_ids for r in ar.itertuples()}
    rows = []
    for method, g in df.groupby("method", sort=False):
        accepted = [n for a in g.accepted for n in a]
        forwards = (g.ar_forwards + g.draft_forwards).sum()
        scored = g.score_correct.dropna()
        identical = [
            r.output_ids == ar_ids[(r.suite, r.item_id, r.sample, r.turn)]
            for r in g.itertuples()
            if (r.suite, r.item_id, r.sample, r.turn) in ar_ids
        ]
        rows.append(
            {
                "method": method,
                "generations": len(g),
                "errors": errors.get(method, 0),
                # tau counts drafts a verifier accepted; a lossy decoder commits its drafts unverified
                "tau": 1 + sum(accepted) / len(accepted) if accepted and g.lossless.all() else None,
                "tpf": g.new_tokens.sum() / forwards if forwards else None,
                "tokens_per_s": tps[method],
                "speedup_vs_ar": tps[method] / tps["ar"] if "ar" in tps else None,
                "speedup_vs_ar_hf": tps[method] / tps["ar-hf"] if "ar-hf" in tps else None,
                "accuracy": scored.astype(float).mean() if len(scored) else None,
                "identical_to_ar": sum(identical) / len(identical) if identical else None,
            }
        )
    return pd.DataFrame(rows + failed_only)


def print_summary(table, title: str) -> None:
    from rich.table import Table

    from harness.console import console

    t = Table(title=title)
    columns = [
        ("method", "method", "{}"),
        ("generations", "gens", "{}"),
        ("errors", "errors", "{}"),
        ("tau", "τ", "{:.2f}"),
        ("tpf", "TPF", "{:.2f}"),
        ("tokens_per_s", "tok/s", "{:.1f}"),
        ("speedup_vs_ar", "× ar", "{:.2f}"),
        ("speedup_vs_ar_hf", "× ar-hf", "{:.2f}"),
        ("accuracy", "accuracy", "{:.1%}"),
        ("identical_to_ar", "identical to ar", "{:.1%}"),
    ]
    for _, name, _ in columns:
        t.add_column(name, justify="left" if name == "method" else "right")
    for row in table.to_dict("records"):
        cells = []
        for key, _, fmt in columns:
            v = row.get(key)
            cells.append("–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v))
        t.add_row(*cells)
    console().print(t)
