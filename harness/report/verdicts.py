"""The report's answer and the documents it reads in words: the headline (per method, the speedup over the
strongest AR baseline with its CI and the losslessness verdict with its evidence), the equivalence verdicts
of `orthrus-bench verify` (verdicts.json) and the calibration tables of `orthrus-bench calibrate`, each as a
readable table: no cell holds JSON, and no cell holds an absolute path of the machine that rendered it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePath

import pandas as pd

from .engines import cross_engine_words
from .runs import Run, read_json_if_present
from .style import method_order, temperature_label
from .tables import AR_BASELINES, Table, fmt, speedup_over, strongest_baseline

# ------------------------------------------------------------------------------------------ plain words


def display_path(path: str, base: Path | None = None) -> str:
    """A path as the report shows it: relative ones (and hub ids) as they are; an absolute one relative to
    `base` where it lies under it, else from its last `models` folder on, else the directory's name alone."""
    p = PurePath(path)
    if not p.is_absolute():
        return path
    if base is not None:
        try:
            return str(p.relative_to(Path(base).resolve()))
        except ValueError:
            pass
    parts = p.parts
    if "models" in parts[:-1]:
        last = len(parts) - 1 - parts[::-1].index("models")
        return "/".join(parts[last:])
    return p.name


def readable(value, base: Path | None = None) -> str:
    """Any JSON value in words: numbers to four significant digits, a pair of numbers as a range, lists and
    objects as `key: value` phrases, absolute paths shortened (display_path)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return display_path(value, base) if value.startswith("/") else value
    if isinstance(value, list):
        if not value:
            return "none"
        if len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return f"{readable(value[0])}–{readable(value[1])}"
        if all(isinstance(v, dict) for v in value):
            return f"{len(value)} entries"
        return ", ".join(readable(v, base) for v in value)
    if isinstance(value, dict):
        if not value:
            return "none"
        return "; ".join(f"{k}: {readable(v, base)}" for k, v in value.items())
    return str(value)


def readable_tables(title: str, data, base: Path | None = None) -> list[Table]:
    """The top-level tables of a JSON document of any schema, every cell in words (readable): a list of
    objects is one table; an object's members that are lists of objects or objects of objects become tables;
    its other members go together in a field/value table."""

    def records_table(name: str, records: list[dict]) -> Table:
        columns = list(dict.fromkeys(k for r in records for k in r))
        return Table(name, columns, [[readable(r.get(c), base) for c in columns] for r in records])

    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return [records_table(title, data)]
    if not isinstance(data, dict):
        return [Table(title, ["value"], [[readable(data, base)]])]
    tables, scalars = [], []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            tables.append(records_table(f"{title}: {key}", value))
        elif isinstance(value, dict) and value and all(isinstance(r, dict) for r in value.values()):
            tables.append(records_table(f"{title}: {key}", [{"name": k, **r} for k, r in value.items()]))
        else:
            scalars.append([key, readable(value, base)])
    if scalars:
        tables.insert(0, Table(title, ["field", "value"], scalars))
    return tables


# -------------------------------------------------------------------------------------------- verdicts


def is_verify_document(data) -> bool:
    """verdicts.json as `orthrus-bench verify` writes it (one entry per method, suite and temperature)."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("verdicts"), list)
        and all(isinstance(v, dict) and "mode" in v and "suite" in v for v in data["verdicts"])
    )


def evidence_size(v: dict) -> tuple[int | None, str]:
    """How many prompts (greedy) or sampled sequences (sampling) the verdict rests on."""
    detail = v.get(v.get("mode")) or {}
    if v.get("mode") == "greedy":
        return detail.get("prompts"), "prompts"
    return detail.get("sequences"), "sequences"


def detectable_value(v: dict) -> tuple[str, float] | None:
    """The smallest deviation the verdict could detect, where it records one, as (kind, value): sampling,
    the total variation distance its tests detect ("tv", min_detectable_tv); greedy and passed, the 95% upper
    bound on the share of prompts with an algorithmic divergence that the prompts leave open ("share",
    algorithmic_rate_upper95; a failed greedy verdict has found its deviation)."""
    detail = v.get(v.get("mode")) or {}
    if detail.get("min_detectable_tv") is not None:
        return "tv", float(detail["min_detectable_tv"])
    passed = str(v.get("verdict")).upper() == "PASS"
    if passed and detail.get("algorithmic_rate_upper95") is not None:
        return "share", float(detail["algorithmic_rate_upper95"])
    return None


def detectable_words(kind: str, low: float, high: float | None = None) -> str:
    if kind == "tv":
        return f"TV {low:.3f}" + (f"–{high:.3f}" if high is not None and high != low else "")
    span = f"{low:.0%}" + (f"–{high:.0%}" if high is not None and high != low else "")
    return f"divergence on > {span} of prompts"


def detectable(v: dict) -> str:
    found = detectable_value(v)
    return detectable_words(*found) if found else "–"


def accuracy_words(accuracy) -> str:
    if not isinstance(accuracy, dict):
        return "–"
    method, reference = accuracy.get("method_accuracy"), accuracy.get("reference_accuracy")
    if method is None or reference is None:
        return readable(accuracy)
    text = f"{method:.1%} vs {reference:.1%}"
    ci = accuracy.get("ci95")
    if isinstance(ci, list) and len(ci) == 2:
        text += f" (difference 95% CI {ci[0] * 100:+.1f} to {ci[1] * 100:+.1f} points)"
    if accuracy.get("conclusion"):
        text += f": {accuracy['conclusion']}"
    return text


def verify_tables(run: Run, data: dict) -> list[Table]:
    """One run's verdicts.json: one row per method, suite and temperature, the verdict and its evidence in
    the words verify gives it, how many prompts or sequences it rests on and what it could detect."""
    rows = []
    for v in data["verdicts"]:
        n, unit = evidence_size(v)
        rows.append(
            [
                v.get("method", "–"),
                "lossless" if v.get("lossless") else "lossy",
                v.get("suite", "–"),
                temperature_label(float(v.get("temperature") or 0.0)),
                v.get("mode", "–") + (" (degenerate)" if v.get("degenerate") else ""),
                str(v.get("verdict", "–")),
                str(v.get("reason") or "–"),
                f"{n} {unit}" if n is not None else "–",
                detectable(v),
                accuracy_words(v.get("accuracy")),
            ]
        )
    columns = ["method", "kind", "suite", "T", "mode", "verdict", "evidence", "N", "smallest detectable",
               "accuracy vs reference"]  # fmt: skip
    settings = (
        f"Reference {data.get('reference', 'ar')}, {data.get('dtype', '?')}, alpha {readable(data.get('alpha'))}, "
        f"accuracy margin {readable(data.get('accuracy_margin'))}; target "
        f"{readable(data.get('target'), run.directory)}."
    )
    note = (
        settings
        + " Smallest detectable: sampling, the total variation distance between the method's and the "
        "reference's next-token distributions its tests detect; greedy, the share of prompts with an "
        "algorithmic divergence that these prompts cannot rule out (95% upper bound)."
    )
    return [Table(f"Equivalence verdicts ({run.directory})", columns, rows, note)]


def verification_tables(runs: list[Run]) -> tuple[list[Table], list[str]]:
    tables, unverified = [], []
    for run in runs:
        data = read_json_if_present(run.directory / "verdicts.json")
        if data is None:
            unverified.append(str(run.directory))
        elif is_verify_document(data):
            tables += verify_tables(run, data)
        else:
            tables += readable_tables(f"Equivalence verdicts ({run.directory})", data, run.directory)
    return tables, unverified


# ------------------------------------------------------------------------------------------ calibration


def calibration_tables(name: str, data) -> list[Table]:
    """A calibration (`orthrus-bench calibrate`, sampling or --greedy): its arms as a table, the rate of
    rejection against the requirement with its CI, and the settings in a sentence; another schema in words."""
    if not (isinstance(data, dict) and isinstance(data.get("arms"), list)):
        return readable_tables(f"Calibration ({name})", data)
    rows = []
    for arm in data["arms"]:
        rejected = arm.get("rejections", arm.get("fail"))
        ci = arm.get("ci95")
        rate = fmt(arm.get("rate"), ".1%", tuple(ci) if isinstance(ci, list) and len(ci) == 2 else None)
        by = arm.get("rejected_by")
        if isinstance(by, dict):
            by = ", ".join(f"{test} ×{n}" for test, n in by.items()) or "none"
        elif by is None:
            parts = {k: arm.get(f"by_{k}") for k in ("margin", "combined", "rate") if f"by_{k}" in arm}
            by = ", ".join(f"{k} ×{n}" for k, n in parts.items() if n) or "none"
        rows.append(
            [
                str(arm.get("name", "–")),
                str(arm.get("requirement", "–")),
                readable(arm.get("replicates")),
                readable(rejected),
                rate,
                "yes" if arm.get("met") else "no",
                by,
            ]
        )
    config = data.get("config") or {}
    meta = data.get("meta") or {}
    settings = ", ".join(
        f"{k} {readable(v)}"
        for k, v in config.items()
        if not isinstance(v, (dict, list))
        and k in ("dtype", "alpha", "replicates", "prompts", "max_new_tokens")
    )
    where = ", ".join(
        ("torch " if k == "torch" else "") + readable(meta[k])
        for k in ("model", "machine", "torch")
        if isinstance(meta.get(k), (str, int, float))
    )
    note = (
        f"Rate: share of replicates rejected (A/A and lossless arms: false alarms; mutants: power), 95% CI in "
        f"parentheses. Settings: {settings or '–'}. Measured with {where or '–'}. "
        f"Full detail: {name}."
    )
    columns = ["arm", "requirement", "replicates", "rejected", "rate", "met", "rejected by"]
    return [Table(f"Calibration ({name})", columns, rows, note)]


# ---------------------------------------------------------------------------------------------- headline


def verdict_index(runs: list[Run]) -> dict[tuple, list[dict]]:
    """(model, method, temperature) -> verify's verdicts for it, across the runs' verdicts.json (a run's model
    is its quantized model where it quantizes: Run.model)."""
    out: dict[tuple, list[dict]] = {}
    for run in runs:
        data = read_json_if_present(run.directory / "verdicts.json")
        if not is_verify_document(data):
            continue
        for v in data["verdicts"]:
            key = (run.model, v.get("method"), float(v.get("temperature") or 0.0))
            out.setdefault(key, []).append(v)
    return out


def passed_in_words(found: list[dict]) -> str:
    """What passing verdicts of every suite showed, in one phrase: the prompts token-identical (greedy), or
    that no sampling test rejected."""
    greedy = [v.get("greedy") or {} for v in found if v.get("mode") == "greedy"]
    words = []
    if greedy:
        identical = sum(g.get("identical") or 0 for g in greedy)
        prompts = sum(g.get("prompts") or 0 for g in greedy)
        words.append(f"{identical}/{prompts} prompts token-identical")
    sampled = len(found) - len(greedy)
    if sampled:
        words.append(f"no sampling test rejects in {sampled} suite{'s' if sampled > 1 else ''}")
    return "; ".join(words)


@dataclass
class VerdictSummary:
    """verify's verdicts for one method and temperature over every suite, in the headline's words."""

    verdict: str  # PASS only where every suite passes; FAIL; "not verified"
    size: str  # how many prompts or sequences, over how many suites
    detectable: str  # the smallest deviation the passing suites could detect (range over suites)
    evidence: str  # the failing suites' reasons, or what every suite showed


def verdict_summary(found: list[dict]) -> VerdictSummary:
    """One method's verdicts (verdict_index) over every suite: PASS only where every suite passes."""
    if not found:
        return VerdictSummary("not verified", "–", "–", "no verdicts.json entry")
    found = sorted(found, key=lambda v: str(v.get("suite")))
    failed = [v for v in found if str(v.get("verdict")).upper() != "PASS"]
    verdict = "FAIL" if failed else "PASS"
    evidence = (
        "; ".join(f"{v.get('suite')}: {v.get('reason')}" for v in failed)
        if failed
        else passed_in_words(found)
    )
    sizes = [evidence_size(v) for v in found]
    n = sum(s for s, _ in sizes if s is not None)
    units_ = sorted({unit for _, unit in sizes})
    size = f"{n} {'/'.join(units_)} ({len(found)} suites)"
    # a failed verdict has found its deviation: what the passing suites could detect is beside it
    values = [d for d in map(detectable_value, found) if d] if verdict == "PASS" else []
    detect = "; ".join(
        detectable_words(kind, min(x for k, x in values if k == kind), max(x for k, x in values if k == kind))
        for kind in sorted({k for k, _ in values})
    )
    return VerdictSummary(verdict, size, detect or "–", evidence)


def headline_tables(u: pd.DataFrame, runs: list[Run], batch_size: int | None = None) -> list[Table]:
    """The report's answer, per model and temperature: for each method, the speedup over the strongest AR
    baseline (mean per-item tokens/s over the baseline's on the same items, all suites; 95% paired bootstrap
    CI) and the losslessness verdict: PASS only where every suite passes, with the evidence as verify
    words it, how many prompts (or sequences) it rests on and the smallest deviation it could detect.
    `batch_size`: the batch size of the generations in `u`, named in each title (None: decoded alone)."""
    verdicts = verdict_index(runs)
    tables = []
    for (model, temp), g in u.groupby(["model", "temperature"], sort=True):
        baseline = strongest_baseline(g)
        rows = []
        for method in method_order(set(g.method)):
            if method in AR_BASELINES and method == baseline:
                continue
            found = speedup_over(g, method, baseline) if baseline is not None else None
            speedup = fmt(found[0], ci=found[1], suffix="×") if found else "–"
            v = verdict_summary(verdicts.get((model, method, float(temp)), []))
            lossy = "lossless" in g and not g[g.method == method].lossless.astype(bool).all()
            name = f"{method} (lossy)" if lossy else method  # as verify's table names it
            rows.append([name, speedup, v.verdict, v.size, v.detectable, v.evidence])
        columns = [
            "method",
            f"speedup over {baseline or 'AR'}",
            "lossless?",
            "N",
            "smallest detectable",
            "evidence",
        ]
        note = (
            f"Speedup: mean per-item tokens/s over that of `{baseline}`, the fastest AR baseline in the run, on the "
            "same items of every suite; parentheses: 95% paired bootstrap CI over items. lossless?: verify's "
            "verdict (Equivalence verdicts), PASS only where every suite passes; evidence: the failing suites' "
            "reasons, or what every suite showed (per suite under Equivalence verdicts). Smallest detectable: the range over suites (Equivalence verdicts, per suite)."
            if baseline
            else "No AR baseline in the run: no speedup. lossless?: verify's verdict (Equivalence verdicts)."
        )
        note += cross_engine_words(set(g.method), set(g.method_name))
        where = f"{model}, {temperature_label(temp)}" + (f", B={batch_size}" if batch_size else "")
        tables.append(Table(f"Headline ({where})", columns, rows, note))
    return tables
