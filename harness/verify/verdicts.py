"""`orthrus-bench verify RUN`: lossless-equivalence verdicts for every method of a run, against its AR run.

Per (method, suite, temperature), on the records of the same prompts (see docs/verification.md): under greedy
decoding (`SamplingParams.greedy`: T = 0, or a degenerate sampling setting whose distribution is one token, such
as top-k 1, which the run decoded as greedy and the verdict says so) the greedy verdict (greedy.py: token
identity, forensics), otherwise the sampling verdict (sampling_verdict.py: T1-T5, Holm-corrected), and in both
the accuracy comparison (exact McNemar under greedy decoding, paired bootstrap with TOST under sampling,
non-inferiority for lossy methods).

The run and its target are loaded once. The target's exact distributions come from teacher-forcing the run's
target checkpoint in float32 (fp32_reference.py); nothing else is needed for the greedy verdicts and T1/T3/T4/T5.
Re-synchronising after greedy divergences and T2 re-run the method: with `VerifyConfig.decoders` the method
registry rebuilds it on the run's target; a `decoder_factory` (label -> generate function) replaces that.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from harness.console import console as make_console
from harness.methods import make_decoder
from harness.methods.base import GenerateFn
from harness.methods.target import load_target
from harness.paths import default_model
from harness.progress import SILENT, Reporter
from harness.records import prompt_key
from harness.run.spec import RunSpec
from harness.store import RunInfo, StoreError, WriterLock, load_run, read_records
from harness.suites.config import GenerationSettings, parse_suite
from harness.suites.suite import load_suite
from orthrus_core.jsonfile import write_json

from .config import VERDICTS, VerifyConfig
from .equivalence import compare_accuracy
from .forensics import BenignStudy, benign_study
from .fp32_reference import Reference
from .greedy import greedy_continuation, verify_greedy
from .sampling_verdict import draw_fixed_context, fixed_context_tests, t2_context, verify_sampling

DecoderFactory = Callable[[str], GenerateFn]


def suite_settings(run: RunInfo, spec: RunSpec, suite: str) -> GenerationSettings:
    """The generation settings the run used for `suite`: its suite file as run.json recorded it (else the
    suite file of this checkout), with the run's overrides (`spec`, the RunSpec run.json records:
    RunSpec.generation, as the run applied them)."""
    raw = run.suites.get(suite, {}).get("config")
    settings = parse_suite(raw, suite, "run.json").generation if raw else load_suite(suite).generation
    return spec.generation(settings)


def correctness(records: list[dict]) -> dict[str, list[bool]]:
    """item -> per-sample correctness (last turns that were scored), in sample order."""
    by_item: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for r in records:
        if r.get("score_correct") is not None:
            by_item[r["item_id"]].append((r["sample"], bool(r["score_correct"])))
    return {item: [c for _, c in sorted(v)] for item, v in by_item.items()}


class RunVerification:
    """One run's verification: run.json, the records and the target loaded once, then one verdict per
    (method, suite, temperature) group. Each step says what it is doing and how far it is on `progress`
    (stderr; harness.progress)."""

    def __init__(
        self,
        run_dir: str | Path,
        config: VerifyConfig,
        decoder_factory: DecoderFactory | None,
        progress: Reporter = SILENT,
    ):
        self.run_dir, self.config, self.progress = run_dir, config, progress
        self.run = load_run(run_dir)
        self.spec = RunSpec.recorded(self.run.config, self.run.settings)  # its methods parsed here, once
        every = read_records(run_dir)
        if not every:
            command = " ".join(self.run.command) or "orthrus-bench run ..."
            raise StoreError(
                f"{run_dir} has no records to verify (run.json: {self.run.status}): nothing was generated "
                f"there yet. Resume it with `{command} --resume`, or verify a run that generated something"
            )
        self.record_count = len(every)
        self.records = [r for r in every if r["status"] == "ok"]
        self.dtype = str(self.run.config.get("dtype", "float32")).removeprefix("torch.")
        self.path = self.run.target_path or str(default_model())
        # What the run decoded with, in the engine it decoded in, quantized as it was (orthrus_core.quantize);
        # the exact distributions in float32, of the same quantized model.
        self.quantize = self.run.config.get("quantize")
        quantized = f", quantized {self.quantize}" if self.quantize else ""
        progress.say(
            f"verify: {len(self.records)} records of {run_dir}; loading the target {self.path} ({self.dtype}"
            f"{quantized}, {config.device})"
        )
        self.target = load_target(self.path, self.dtype, config.device, self.run.engine, self.quantize)
        # A vLLM method re-run here (re-synchronisation, T2) spreads the target as the run did.
        self.target.parallel = {
            k: self.run.settings.get(k, 1) for k in ("tensor_parallel_size", "data_parallel_size")
        }
        if self.dtype != "float32":
            progress.say(f"verify: loading the float32 reference of {self.path}")
        float32 = (
            load_target(self.path, "float32", config.device, "eager", self.quantize)
            if self.dtype != "float32"
            else self.target
        )
        self.reference = Reference(float32.model)
        if decoder_factory is None and config.decoders:
            decoder_factory = self.registry_decoder
        self.decoder_factory = decoder_factory
        self.decoders: dict[str, GenerateFn | None] = {}
        self.decoder_errors: dict[str, str] = {}
        self.benign: dict[str, BenignStudy] = {}  # per suite
        self.built: list = []  # registry decoders rebuilt here: closed when the verdicts are reached
        self.step = "verify"  # the verdict being reached, as its progress names it

    def registry_decoder(self, label: str) -> GenerateFn:
        """The decoder of a record's method `label`, built from its spec as run.json records it (parsed)."""
        decoder = make_decoder(self.spec.methods[self.spec.methods.index(label)], self.target)
        self.built.append(decoder)
        return decoder.generate

    def decoder(self, method: str) -> GenerateFn | None:
        """The method's generate function, rebuilt once; None without a factory or when it cannot be rebuilt
        here (the verdict then says why, and is reached without it)."""
        if self.decoder_factory is not None and method not in self.decoders:
            self.progress.say(f"verify: rebuilding {method} on the target (to re-run it)")
            try:
                self.decoders[method] = self.decoder_factory(method)
            except Exception as exc:
                self.decoders[method] = None
                self.decoder_errors[method] = f"{type(exc).__name__}: {exc}"
        return self.decoders.get(method)

    def stop_ids(self, settings: GenerationSettings) -> list[int]:
        """The stop tokens the run's generations of a suite used."""
        return settings.stop_token_ids_and_strings(self.target.tokenizer)[0]

    def groups(self) -> dict[tuple, list[dict]]:
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in self.records:
            groups[(r["method"], r["suite"], float(r["temperature"]))].append(r)
        return groups

    def result(self) -> dict:
        """Every verdict of the run (not written; see `verify_main`)."""
        groups = self.groups()
        reference = self.config.reference
        todo = [(key, records) for key, records in sorted(groups.items()) if key[0] != reference]
        verdicts = []
        for i, ((method, suite, temperature), records) in enumerate(todo, 1):
            self.step = f"verify {i}/{len(todo)}: {method} on {suite} at T={temperature:g}"
            reference_records = groups.get((reference, suite, temperature), [])
            verdicts.append(self.verdict(method, suite, temperature, records, reference_records))
        return {
            "run": str(self.run_dir),
            "records": self.record_count,  # what they were computed from: never replaced by fewer (verify_main)
            "alpha": self.config.alpha,
            "accuracy_margin": self.config.margin,
            "dtype": self.dtype,
            "target": self.path,
            "reference": reference,
            "decoders_available": self.decoder_factory is not None,
            "verdicts": verdicts,
        }

    def verdict(self, method: str, suite: str, temperature: float, records: list, reference_records: list):
        config = self.config
        settings = dataclasses.replace(suite_settings(self.run, self.spec, suite), temperature=temperature)
        params = settings.sampling
        info = self.run.methods.get(method, {})
        lossless = bool(records[0].get("lossless", info.get("lossless", True)))
        entry = {
            "method": method,
            "method_name": records[0].get("method_name"),
            "lossless": lossless,
            "suite": suite,
            "dtype": self.dtype,
            "temperature": temperature,
            "reference": config.reference,
            "mode": "greedy" if params.greedy else "sampling",
            "top_k": params.top_k,
            "top_p": params.top_p,
        }
        if params.degenerate:  # sampling asked for, one token's distribution: decoded and judged as greedy
            entry["degenerate"] = degenerate_words(params)
        generate = self.decoder(method)
        if method in self.decoder_errors:
            entry["decoder_error"] = self.decoder_errors[method]
        if not reference_records:
            entry.update(verdict="NO DATA", reason=f"the run has no {config.reference} records for {suite}")
        elif params.greedy:
            entry["greedy"] = self.greedy(suite, records, reference_records, settings, generate)
            entry.update(verdict=entry["greedy"]["verdict"], reason=entry["greedy"]["reason"])
            if params.degenerate:
                entry["reason"] = f"{entry['degenerate']}; {entry['reason']}"
        else:
            entry["sampling"] = self.sampling(records, reference_records, settings, params, generate)
            entry.update(verdict=entry["sampling"]["verdict"], reason=entry["sampling"]["reason"])
        accuracy = compare_accuracy(
            correctness(reference_records),
            correctness(records),
            greedy=params.greedy,
            lossy=not lossless,
            margin=config.margin,
            alpha=config.alpha,
            seed=config.seed,
        )
        entry["accuracy"] = asdict(accuracy) if accuracy else None
        entry["summary"] = plain_summary(entry)
        return entry

    def greedy(self, suite, records, reference_records, settings, generate: GenerateFn | None) -> dict:
        if suite not in self.benign:
            paths = [
                (r["prompt_ids"], r["output_ids"])
                for r in sorted(reference_records, key=prompt_key)[: self.config.tie_paths]
            ]
            paths = self.progress.bar(paths, f"verify: near-tie study, {suite}", unit="paths")
            self.benign[suite] = benign_study(self.target.model, self.reference.logits, paths)
        what = "token identity" + (", re-synchronising after divergences" if generate is not None else "")
        return verify_greedy(
            records,
            {prompt_key(r): r for r in reference_records},
            self.reference,
            self.benign[suite],
            dtype=self.dtype,
            alpha=self.config.alpha,
            continue_fn=None if generate is None else greedy_continuation(generate, self.stop_ids(settings)),
            max_new_tokens=settings.max_new_tokens,
            track=lambda items: self.progress.bar(items, f"{self.step}, {what}", unit="prompts"),
        )

    def sampling(self, records, reference_records, settings, params, generate: GenerateFn | None) -> dict:
        config = self.config
        t2 = None
        if generate is not None and config.t2_samples > 0:
            prompt = t2_context(self.reference, sorted(reference_records, key=prompt_key), params)
            track = self.progress.bar(
                desc=f"{self.step}, T2 draws at a fixed context", total=config.t2_samples, unit="draws"
            )
            draws = draw_fixed_context(
                generate,
                prompt,
                params,
                samples=config.t2_samples,
                depth=config.t2_depth,
                stop_token_ids=self.stop_ids(settings),
                seed=config.seed + 10_000,
                on_draw=lambda: track.update(1),
            )
            track.close()
            t2 = fixed_context_tests(
                draws, self.reference, prompt, params, depth=config.t2_depth, alpha=config.alpha
            )
        return verify_sampling(
            records,
            reference_records,
            self.reference,
            params,
            alpha=config.alpha,
            seed=config.seed,
            t2=t2,
            track=lambda items: self.progress.bar(
                items,
                f"{self.step}, T1 T3 T4 T5 over its and {config.reference}'s sequences",
                unit="sequences",
            ),
        )


def verify_run(
    run_dir: str | Path,
    config: VerifyConfig | None = None,
    decoder_factory: DecoderFactory | None = None,
    progress: Reporter = SILENT,
) -> dict:
    """Every verdict of the run in `run_dir` (not written; see `verify_main`), each step shown on `progress`."""
    verification = RunVerification(run_dir, config or VerifyConfig(), decoder_factory, progress)
    try:
        return verification.result()
    finally:
        for decoder in verification.built:  # a vLLM engine and its processes go with the verification
            decoder.close()


def degenerate_words(params) -> str:
    """What a verdict says of sampling settings whose distribution is one token (SamplingParams.degenerate)."""
    return (
        f"degenerate sampling settings (temperature {params.temperature:g}, top_k {params.top_k}, top_p "
        f"{params.top_p:g}): {params.greedy_reason} leaves one token, so decoded and judged as greedy"
    )


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def plain_summary(entry: dict) -> str:
    """One sentence a reader can act on: what was checked, the verdict, and the accuracy difference."""
    kind = "lossless" if entry["lossless"] else "lossy"
    head = (
        f"{entry['method']} ({kind}) {'PASSES' if entry['verdict'] == 'PASS' else entry['verdict'] + 'S'} "
        f"on {entry['suite']} at T={entry['temperature']:g} ({entry['dtype']}): {entry['reason']}"
    )
    if entry["verdict"] == "NO DATA":
        head = f"{entry['method']} on {entry['suite']} at T={entry['temperature']:g}: no verdict, {entry['reason']}"
    acc = entry.get("accuracy")
    if acc:
        lo, hi = acc["ci95"]
        head += (
            f". Accuracy {100 * acc['method_accuracy']:.1f}% vs {entry['reference']} "
            f"{100 * acc['reference_accuracy']:.1f}% (difference {_points(acc['difference'])} points, "
            f"95% CI [{_points(lo)}, {_points(hi)}], {acc['items']} items): {acc['conclusion']}"
        )
    if not entry["lossless"] and entry["verdict"] == "FAIL":
        head += ". Its outputs are not the AR model's: it is not a lossless decoder"
    return head + "."


def print_verdicts(result: dict, console=None) -> None:
    console = console or make_console()
    table = Table(title=f"verify {result['run']} (alpha {result['alpha']}, reference {result['reference']})")
    for column in ("method", "suite", "T", "mode", "N", "verdict", "evidence", "min TV", "Δ accuracy"):
        table.add_column(column, justify="left" if column in ("method", "suite", "evidence") else "right")
    style = {"PASS": "green", "FAIL": "red"}
    for v in result["verdicts"]:
        if "greedy" in v:
            g = v["greedy"]
            n = f"{g['prompts']} prompts"
            evidence = (
                f"{g['identical']}/{g['prompts']} identical, {g['near_tie_events']} near-tie, "
                f"{g['algorithmic_events']} algorithmic; alg. rate ≤ {100 * (g['algorithmic_rate_upper95'] or 0):.1f}%"
            )
            tv = "–"
        elif "sampling" in v:
            s = v["sampling"]
            n = f"{s['tokens']} tok"
            rejected = [t["name"] for t in s["tests"] if t["reject"]]
            evidence = (
                f"rejects: {', '.join(rejected)}" if rejected else f"{len(s['tests'])} tests, none rejects"
            )
            tv = f"{s['min_detectable_tv']:.3f}" if s["min_detectable_tv"] is not None else "–"
        else:
            n, evidence, tv = "–", v["reason"], "–"
        acc = v.get("accuracy")
        delta = f"{_points(acc['difference'])} pt" if acc else "–"
        verdict = f"[{style.get(v['verdict'], 'yellow')}]{v['verdict']}[/]"
        table.add_row(
            v["method"] + ("" if v["lossless"] else " (lossy)"),
            v["suite"],
            f"{v['temperature']:g}",
            v["mode"] + (" (degenerate)" if v.get("degenerate") else ""),
            n,
            verdict,
            evidence,
            tv,
            delta,
        )
    console.print(table)
    for v in result["verdicts"]:
        if v["verdict"] != "PASS" or v.get("degenerate"):
            console.print(v["summary"], highlight=False)


def _records_counted(path: Path) -> int:
    """How many records an existing verdicts file was computed from (0: none, unreadable, or from before it
    said)."""
    try:
        return int(json.loads(path.read_text()).get("records") or 0)
    except (OSError, ValueError, AttributeError):
        return 0


def verify_main(
    run_dir: str | Path,
    config: VerifyConfig | None = None,
    out: str | Path | None = None,
    decoder_factory: DecoderFactory | None = None,
    *,
    quiet: bool = False,
) -> int:
    """Verify, print the table, write verdicts.json (default RUN/verdicts.json); exit status 1 when a lossless
    method fails, else 0. Writing into the run directory takes its writer lock (no run may be adding records
    meanwhile), and a verdicts file computed from more records than the run now holds is not replaced. Each
    step's progress goes to stderr (the table to stdout), unless `quiet`."""
    path = Path(out) if out else Path(run_dir) / VERDICTS
    writes_into_run = path.parent.resolve() == Path(run_dir).resolve()
    with WriterLock(run_dir, "orthrus-bench verify") if writes_into_run else nullcontext():
        result = verify_run(run_dir, config, decoder_factory, Reporter(enabled=not quiet))
        before = _records_counted(path)
        if before > result["records"]:
            raise StoreError(
                f"{path} was computed from {before} records and {run_dir} now holds "
                f"{result['records']}: not replaced. Restore the missing records, or pass --out to write the "
                "new verdicts elsewhere"
            )
        write_json(path, result)
    print_verdicts(result)
    print(f"wrote {path}", file=sys.stderr)
    return 1 if any(v["lossless"] and v["verdict"] == "FAIL" for v in result["verdicts"]) else 0
