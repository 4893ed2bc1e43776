"""The report's tables: Table 1 (Orthrus TPF and speedup per suite and temperature), Figure 4's numbers (τ per
suite and drafting method), the per-method summary, failed generations, verdicts, calibration, provenance.

Figures estimated from samples carry 95% percentile-bootstrap CIs over work units (an item's turns by one
method and sample); speedups resample items paired with the baseline. Run-level figures (τ, TPF, speedup,
accuracy) come from `harness.report.summary.summarize`, applied to each (model, suite, temperature) slice, so
they agree with what `orthrus-bench run` prints.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.records import UNIT
from harness.store import RunInfo
from orthrus_core import metrics

from .published import TABLE1_SUITES, Published, PublishedFigures, published_figures
from .runs import Run
from .stats import bootstrap_ci, mean, pooled_tau, pooled_tpf, ratio_of_means
from .style import method_order, temperature_label
from .summary import has_batch_size, summarize


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self, title: str | None = None, note: str | None = None) -> str:
        """The table in Markdown, under its title (or `title`, as its section shows it) with its note (or
        `note`; "" for none)."""
        title = self.title if title is None else title
        note = self.note if note is None else note

        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [f"**{title}**", ""] if title else []
        lines.append("| " + " | ".join(cell(c) for c in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        if note:
            lines += ["", note]
        return "\n".join(lines)

    def html(self, title: str | None = None, note: str | None = None) -> str:
        title = self.title if title is None else title
        note = self.note if note is None else note
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(cell_html(c) for c in row) + "</tr>" for row in self.rows)
        caption = f"<caption>{html.escape(title)}</caption>" if title else ""
        note = f'<p class="note">{html.escape(note)}</p>' if note else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


LONG_CELL = 60  # characters: a cell of prose (evidence, reasons) wraps rather than widen the page


def cell_html(text: str) -> str:
    long = ' class="prose"' if len(text) > LONG_CELL else ""
    return f"<td{long}>{html.escape(text)}</td>"


def fmt(value, spec: str = ".2f", ci: tuple[float, float] | None = None, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:{spec}}{suffix}"
    if ci is not None:
        text += f" ({ci[0]:{spec}}–{ci[1]:{spec}})"
    return text


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------------------------- Table 1


# The autoregressive decoders a speedup is measured against (each the same model, decoded one token a pass).
AR_BASELINES = ("ar", "ar-hf", "vllm-ar")


def strongest_baseline(u: pd.DataFrame) -> str | None:
    """The AR baseline with the highest mean per-item tokens/s among those run: the headline's denominator."""
    rates = {m: u[u.method == m].tokens_per_s.mean() for m in AR_BASELINES if m in set(u.method)}
    return max(rates, key=rates.get) if rates else None


def baseline_label(methods: set[str]) -> str | None:
    """The paper's denominator is transformers `generate` (ar-hf); the project's own AR loop otherwise."""
    return "ar-hf" if "ar-hf" in methods else ("ar" if "ar" in methods else None)


@dataclass
class Cell:
    tpf: float | None = None  # token-weighted: all new tokens / all forwards (summarize)
    tpf_ci: tuple | None = None
    tpf_per_question: float | None = None
    speedup: float | None = None  # per-question: ratio of mean per-item tokens/s (summarize, Spec-Bench)
    speedup_ci: tuple | None = None
    speedup_token_weighted: float | None = None  # Σ tokens / Σ time, method over baseline
    baseline: str | None = None


@dataclass
class SliceFigures:
    """summarize() on one (model, suite, temperature) slice, with the slice's work units (for the CIs
    summarize does not give) and the speedup baseline."""

    summary: pd.DataFrame
    units: pd.DataFrame
    baseline: str | None


def slice_figures(gens: pd.DataFrame, unit_table: pd.DataFrame) -> SliceFigures:
    records = gens.drop(columns=["run", "model"]).to_dict("records")
    return SliceFigures(summarize(records), unit_table, baseline_label(set(gens.method)))


def paired_units(unit_table: pd.DataFrame, method: str, baseline: str) -> pd.DataFrame:
    """The method's work units beside the baseline's of the same item and sample (suffix _base)."""
    keys = [c for c in UNIT if c != "method"]
    a = unit_table[unit_table.method == method].set_index(keys)
    b = unit_table[unit_table.method == baseline].set_index(keys)
    return a.merge(b, left_index=True, right_index=True, suffixes=("", "_base"))


def speedup_over(unit_table: pd.DataFrame, method: str, baseline: str) -> tuple[float, tuple | None] | None:
    """The per-question speedup (Spec-Bench's): mean per-item tokens/s of `method` over the baseline's on the
    same items (paired_units), with its 95% paired bootstrap CI; None where they share no item."""
    pairs = paired_units(unit_table, method, baseline)
    if pairs.empty:
        return None
    value = float(ratio_of_means(pairs.tokens_per_s, pairs.tokens_per_s_base))
    return value, bootstrap_ci(ratio_of_means, pairs.tokens_per_s, pairs.tokens_per_s_base)


def pooled_ratio(unit_table: pd.DataFrame, method: str, baseline: str) -> float | None:
    """speedup_over's value without its CI."""
    pairs = paired_units(unit_table, method, baseline)
    return None if pairs.empty else float(ratio_of_means(pairs.tokens_per_s, pairs.tokens_per_s_base))


def table1_cell(figures: SliceFigures, method: str) -> Cell:
    row = figures.summary.set_index("method").loc[method]
    own = figures.units[figures.units.method == method]
    cell = Cell(baseline=figures.baseline)
    cell.tpf = row.tpf
    cell.tpf_ci = bootstrap_ci(pooled_tpf, own.tokens, own.forwards)
    with_forwards = own[own.forwards > 0]  # a one-token answer has no forward after the prefill
    cell.tpf_per_question = (
        float(metrics.tpf(with_forwards.tokens, with_forwards.forwards).mean()) if len(own) else None
    )
    if figures.baseline is not None:
        cell.speedup = row[f"speedup_vs_{figures.baseline.replace('-', '_')}"]
        pairs = paired_units(figures.units, method, figures.baseline)
        cell.speedup_ci = bootstrap_ci(ratio_of_means, pairs.tokens_per_s, pairs.tokens_per_s_base)
        base = figures.units[figures.units.method == figures.baseline]
        cell.speedup_token_weighted = (own.tokens.sum() / own.wall_s.sum()) / (
            base.tokens.sum() / base.wall_s.sum()
        )
    return cell


def slices(gens: pd.DataFrame, unit_table: pd.DataFrame) -> dict[tuple, SliceFigures]:
    out = {}
    for key, g in gens.groupby(["model", "suite", "temperature"], sort=True):
        u = unit_table[
            (unit_table.model == key[0]) & (unit_table.suite == key[1]) & (unit_table.temperature == key[2])
        ]
        out[key] = slice_figures(g, u)
    return out


def orthrus_labels(gens: pd.DataFrame) -> list[str]:
    return method_order(set(gens[gens.method_name == "orthrus"].method))


def suite_order(suites) -> list[str]:
    """Table 1's tasks in the paper's order, then any other suite."""
    suites = set(suites)
    return [s for s in TABLE1_SUITES if s in suites] + sorted(suites - set(TABLE1_SUITES))


def beside(published: Published | None, ci: tuple | None, spec: str = ".2f", suffix: str = "") -> str:
    """A published value, flagged ⚑ where it lies outside the measured 95% CI."""
    if published is None:
        return "–"
    outside = ci is not None and not ci[0] <= published.value <= ci[1]
    return fmt(published.value, spec, suffix=suffix) + (" ⚑" if outside else "")


def sources_note(used: set[str]) -> str:
    if not used:
        return "No published figure is known for these checkpoints."
    return "Published: " + "; ".join(sorted(used)) + "."


@dataclass
class Table1Cells:
    """Table 1's cells, (model, method, suite, temperature) -> Cell, with what each of its tables reads: the
    temperatures (its column groups), the (model, method) groups in order, the published figures, and the
    sources of the published figures its tables have shown so far."""

    cells: dict[tuple, Cell]
    temps: list[float]
    groups: list[tuple[str, str]]
    paper: PublishedFigures
    used: set[str] = field(default_factory=set)

    def published(self, figure: Published | None, ci: tuple | None, suffix: str = "") -> str:
        """A published figure's cell (beside), its source noted in `used`."""
        self.used.update([figure.source] if figure else [])
        return beside(figure, ci, suffix=suffix)

    def table(self, title: str, tpf_of, speedup_of, with_ci: bool, with_paper: bool, note: str) -> Table:
        """The cells under one averaging (`tpf_of`, `speedup_of` read it from a Cell): a row per suite of each
        group, then the group's average row; `with_ci`: the CIs in parentheses; `with_paper`: the published
        figure beside each."""
        columns = ["model", "method", "suite"]
        for t in self.temps:
            label = temperature_label(t)
            columns += [f"{label} TPF", *([f"{label} TPF paper"] if with_paper else [])]
            columns += [f"{label} speedup", *([f"{label} speedup paper"] if with_paper else [])]
        rows = []
        for model, label in self.groups:
            suites = suite_order({s for m, lab, s, _ in self.cells if (m, lab) == (model, label)})
            for suite in suites:
                row = [model, label, suite]
                for t in self.temps:
                    row += self.suite_cells(model, label, suite, t, tpf_of, speedup_of, with_ci, with_paper)
                rows.append(row)
            average = [model, label, "Average"]
            for t in self.temps:
                average += self.average_cells(model, label, suites, t, tpf_of, speedup_of, with_paper)
            rows.append(average)
        return Table(title, columns, rows, note)

    def suite_cells(
        self, model, label, suite, t, tpf_of, speedup_of, with_ci: bool, with_paper: bool
    ) -> list:
        """One suite's TPF and speedup at temperature `t` (each beside its published figure `with_paper`)."""
        c = self.cells.get((model, label, suite, t))
        out = [fmt(tpf_of(c), ci=c.tpf_ci if with_ci else None) if c else "–"]
        if with_paper:
            out.append(
                self.published(self.paper.table1_cell(model, suite, t, "tpf"), c.tpf_ci if c else None)
            )
        out.append(fmt(speedup_of(c), ci=c.speedup_ci if with_ci else None, suffix="×") if c else "–")
        if with_paper:
            p = self.paper.table1_cell(model, suite, t, "speedup")
            out.append(self.published(p, c.speedup_ci if c else None, suffix="×"))
        return out

    def average_cells(self, model, label, suites, t, tpf_of, speedup_of, with_paper: bool) -> list:
        """The arithmetic mean of the suites' TPF and speedup at `t`, "–" unless every suite has one."""
        per_suite = [self.cells.get((model, label, s, t)) for s in suites]
        tpfs = [tpf_of(c) for c in per_suite if c and not is_missing(tpf_of(c))]
        sps = [speedup_of(c) for c in per_suite if c and not is_missing(speedup_of(c))]
        out = [fmt(float(np.mean(tpfs))) if len(tpfs) == len(suites) else "–"]
        if with_paper:
            out.append(self.published(self.paper.table1_average(model, t, "tpf"), None))
        out.append(fmt(float(np.mean(sps)), suffix="×") if len(sps) == len(suites) else "–")
        if with_paper:
            out.append(self.published(self.paper.table1_average(model, t, "speedup"), None, suffix="×"))
        return out


def table1_cells(gens: pd.DataFrame, by_slice: dict[tuple, SliceFigures]) -> Table1Cells:
    """Every Orthrus method's cell per model, suite and temperature (T = 0 and T = 1 always among the
    temperatures), grouped per model and method in the report's method order."""
    temps = sorted({0.0, 1.0} | set(gens.temperature.dropna()))
    cells: dict[tuple, Cell] = {}
    for (model, suite, temp), figures in by_slice.items():
        for label in orthrus_labels(gens):
            if label in set(figures.summary.method):
                cells[(model, label, suite, temp)] = table1_cell(figures, label)
    order = {label: i for i, label in enumerate(orthrus_labels(gens))}
    groups = sorted({(m, label) for m, label, _, _ in cells}, key=lambda g: (g[0], order[g[1]]))
    return Table1Cells(cells, temps, groups, published_figures())


def table1(gens: pd.DataFrame, by_slice: dict[tuple, SliceFigures], u: pd.DataFrame) -> list[Table]:
    """The paper's Table 1: per model and suite (the paper's eight tasks in its order first), Orthrus's TPF
    and speedup at T = 0 and T = 1 (and any other temperature run) beside the published cell where the paper
    reports the checkpoint, with an average row per model; then the same cells under the other averaging.
    Its denominator is the paper's (`ar-hf`) where the run has it; where that is not the headline's (the
    fastest AR baseline, over the work units `u`), the note ties the two speedups together."""
    t1 = table1_cells(gens, by_slice)
    if not t1.groups:
        return [Table("Table 1", ["model", "method", "suite"], [], "no Orthrus method in these runs")]
    baselines = sorted({c.baseline for c in t1.cells.values() if c.baseline})
    denominators = " and ".join(f"`{b}`" for b in baselines) or "no AR baseline in the run"
    over = " and ".join(f"`{b}`" for b in baselines) or "AR"
    has_paper = any(
        t1.paper.table1_cell(model, suite, t, q) or t1.paper.table1_average(model, t, q)
        for model, _ in t1.groups
        for suite in TABLE1_SUITES
        for t in t1.temps
        for q in ("tpf", "speedup")
    )
    main = t1.table(
        f"Table 1 — Orthrus TPF and wall-clock speedup over {over}"
        + (", the paper's baseline" if baselines == ["ar-hf"] else "")
        + (", beside the paper's figures" if has_paper else ""),
        lambda c: c.tpf,
        lambda c: c.speedup,
        True,
        has_paper,
        "",
    )
    main.note = (
        "TPF is token-weighted: all new tokens / all forwards after prefill (an Orthrus cycle counts two). "
        "Speedup is per-question (Spec-Bench): mean per-item tokens/s of Orthrus / the same for "
        f"{denominators}"
        + (", transformers' AR decoding, the paper's denominator" if "ar-hf" in baselines else "")
        + ". Parentheses: 95% bootstrap CI over items (paired with the baseline for speedup). "
        "Average: arithmetic mean of the suite rows, as in the paper."
        + headline_tie(u, t1.groups, t1.cells, t1.temps)
    )
    if has_paper:
        main.note += (
            " Paper columns: the published cell where the paper reports this checkpoint, ⚑ where it lies "
            "outside the measured CI (an average has no CI: its suites differ). " + sources_note(t1.used)
        )
    other = t1.table(
        "Table 1, other averaging",
        lambda c: c.tpf_per_question,
        lambda c: c.speedup_token_weighted,
        False,
        False,
        "TPF is the per-question mean of (item tokens / item forwards); speedup is token-weighted: "
        f"(Σ tokens / Σ wall time) of Orthrus over the same for {denominators}. The paper does not say which "
        "averaging it uses; they differ by about 8% on long-output suites.",
    )
    return [main, other]


def headline_tie(u: pd.DataFrame, groups, cells: dict[tuple, Cell], temps) -> str:
    """The sentence that ties Table 1's speedups to the headline's where their denominators differ: the
    headline's over the fastest AR baseline of the run, pooled over every suite's items, beside the same items
    over Table 1's baseline, and how fast that baseline runs against the fastest."""
    clauses, against = [], set()
    for model, label in groups:
        found = []
        for t in temps:
            base = next(
                (c.baseline for (m, lab, _, tt), c in cells.items() if (m, lab, tt) == (model, label, t)),
                None,
            )
            g = u[(u.model == model) & (u.temperature == t)]
            fastest = strongest_baseline(g) if len(g) else None
            if base is None or fastest is None or base == fastest:
                continue
            headline, here, rate = (
                pooled_ratio(g, *pair) for pair in ((label, fastest), (label, base), (base, fastest))
            )
            if None not in (headline, here, rate):
                found.append((temperature_label(t), headline, here, rate, fastest, base))
                against.add((fastest, base))
        if found:
            who = (f"{model}'s " if len({m for m, _ in groups}) > 1 else "") + f"`{label}`"
            clauses.append(
                f"{who}: "
                + "; ".join(
                    f"{h:.2f}× over `{fastest}` and {x:.2f}× over `{base}` at {t} (`{base}` runs at {r:.2f}× "
                    f"`{fastest}`'s rate)"
                    for t, h, x, r, fastest, base in found
                )
            )
    if not clauses:
        return ""
    fastest = " and ".join(sorted({f"`{f}`" for f, _ in against}))
    return (
        f" Against the headline: its speedups are over {fastest}, the fastest AR baseline in the run, and pool the "
        "items of every suite; on those items, " + "; ".join(clauses) + "."
    )


# ----------------------------------------------------------------------------------- per-method summary


def summary_tables(by_slice: dict[tuple, SliceFigures]) -> list[Table]:
    """Per temperature, one row per model, suite and method. Token identity with ar is the losslessness
    criterion at T = 0 only; at T > 0 the column says what it counts: the same tokens as ar drawn from the
    same seeds (a lossless sampler need not reproduce them; the sampling verdict tests distributions). A B
    column, the batch size each method decoded at, where any was batched; a quantized run's format is in its
    model's name (Run.model)."""
    batched = any(has_batch_size(f.summary) for f in by_slice.values())
    by_temperature: dict[float, list] = {}
    for (model, suite, temp), figures in by_slice.items():
        rows = by_temperature.setdefault(float(temp), [])
        summary = figures.summary.set_index("method")
        for method in method_order(summary.index):
            rows.append([model, suite, *summary_cells(figures, summary.loc[method], method, batched)])
    columns = [
        "model",
        "suite",
        "method",
        "backend",
        *(["B"] if batched else []),
        "gens",
        "τ",
        "TPF",
        "tok/s",
        "× ar",
        "× ar-hf",
        "accuracy",
    ]
    note = (
        "τ = accepted drafts + 1 per cycle, pooled over cycles; TPF = all new tokens / all forwards after "
        "prefill; tok/s = mean over items of item tokens / item wall time; accuracy = mean score over items. "
        "Parentheses: 95% bootstrap CI over items (speedup: paired with ar's item). backend: whose engine "
        "decoded it, the project's (orthrus-bench) or vLLM's (its version and settings under Provenance)."
        + (" B: the batch size the method decoded at (–: one prompt at a time)." if batched else "")
        + " Definitions: docs/methodology.md."
    )
    tables = []
    for temp, rows in sorted(by_temperature.items()):
        identity, extra = identity_column(temp)
        title = f"Per method and suite, {temperature_label(temp)}"
        tables.append(Table(title, [*columns, identity], rows, note + extra))
    return tables


def summary_cells(figures: SliceFigures, s: pd.Series, method: str, batched: bool) -> list[str]:
    """One method's cells of the per-method summary after its model and suite, from its summary row `s`, each
    figure estimated from samples with its CI over the slice's work units."""
    own = figures.units[figures.units.method == method]
    scored = own.correct.dropna().astype(float)
    pairs = paired_units(figures.units, method, "ar")
    return [
        method,
        s.backend,
        *([fmt(s.get("batch_size"), ".0f")] if batched else []),
        str(int(s.generations)),
        fmt(s.tau, ci=bootstrap_ci(pooled_tau, own.accepted, own.cycles) if own.cycles.sum() else None),
        fmt(s.tpf, ci=bootstrap_ci(pooled_tpf, own.tokens, own.forwards)),
        fmt(s.tokens_per_s, ".1f", bootstrap_ci(mean, own.tokens_per_s)),
        fmt(
            s.speedup_vs_ar,
            ci=bootstrap_ci(ratio_of_means, pairs.tokens_per_s, pairs.tokens_per_s_base),
            suffix="×",
        ),
        fmt(s.speedup_vs_ar_hf, suffix="×"),
        fmt(s.accuracy, ".1%", bootstrap_ci(mean, scored) if len(scored) else None),
        fmt(s.identical_to_ar, ".1%"),
    ]


def identity_column(temp: float) -> tuple[str, str]:
    """(the summary's last column at `temp`, what the note says of it): token identity with ar at T = 0, the
    greedy criterion; the same draws as ar from the same seeds at T > 0, which is not the criterion."""
    if temp == 0:
        return (
            "identical to ar",
            " identical to ar: share of generations token-identical to ar's, the greedy criterion.",
        )
    return "same draws as ar (same seeds)", (
        " same draws as ar: share of generations whose sampled tokens equal ar's from the same seeds; "
        "not the criterion at T > 0 (a lossless sampler need only match ar's distribution: Equivalence "
        "verdicts)."
    )


def unscored_notes(gens: pd.DataFrame) -> list[str]:
    """Suites run for speed only because scoring was not possible, each with the scorer's reason."""
    notes = []
    for suite, g in gens.groupby("suite", sort=True):
        reasons = [d.get("reason") for d in g.score_detail if isinstance(d, dict) and d.get("reason")]
        if (g.score_status.dropna() == "unscored").all() and reasons:
            notes.append(f"{suite}: unscored, run for speed only ({reasons[0]})")
    return notes


def compile_notes(runs: list[Run]) -> list[str]:
    """Where generations met a pass shape warm-up had not compiled (a record's `compiles`, absent before it was
    recorded): per run and method, how many records, and whether their times hold the compilation (batched: a
    batch is not run again) or are a rerun's that compiled nothing (decoded alone)."""
    notes = []
    for run in runs:
        compiled: dict[tuple[str, bool], list[int]] = {}
        for r in run.records:
            if r["status"] == "ok" and r.get("compiles"):
                compiled.setdefault((r["method"], r.get("batch_size") is not None), []).append(r["compiles"])
        for (method, batched), counts in compiled.items():
            how = (
                "batched, so their times include the compilation"
                if batched
                else "each was run again before it was recorded, so their times are the reruns', which compiled "
                "nothing"
            )
            notes.append(
                f"{run.directory}: {len(counts)} record(s) of {method} met a pass shape warm-up had not compiled "
                f"({sum(counts)} graph(s) compiled or captured during them); {how}"
            )
    return notes


def errors_table(runs: list[Run]) -> Table | str:
    """Failed generations per run, method and suite, with the first error (they have no timing or score)."""
    failed: dict[tuple, list[str]] = {}
    for run in runs:
        for r in run.records:
            if r["status"] != "ok":
                failed.setdefault((str(run.directory), r["method"], r["suite"]), []).append(
                    r.get("error") or ""
                )
    if not failed:
        return "no failed generations"
    rows = [
        [run, method, suite, str(len(errors)), errors[0][:160]]
        for (run, method, suite), errors in failed.items()
    ]
    return Table("Failed generations", ["run", "method", "suite", "count", "first error"], rows)


def figure4_tables(u: pd.DataFrame) -> list[Table]:
    """The numbers behind the Figure 4 plot: τ per suite (rows) and drafting method (columns), each beside
    the paper's where it reports the method on this checkpoint."""
    drafting = u[u.cycles.gt(0) & u.lossless.astype(bool)]  # verified drafts; lossy diffusion has none
    paper = published_figures()
    tables = []
    for model, temp in sorted(set(zip(drafting.model, drafting.temperature, strict=True))):
        d = drafting[(drafting.model == model) & (drafting.temperature == temp)]
        methods = method_order(set(d.method))
        names = {m: d[d.method == m].method_name.iloc[0] for m in methods}
        with_paper = [
            m for m in methods if any(paper.figure4(model, names[m], s, temp) for s in TABLE1_SUITES)
        ]
        used: set[str] = set()
        rows = []
        for suite in suite_order(set(d.suite)):
            row = [suite]
            for method in methods:
                g = d[(d.suite == suite) & (d.method == method)]
                tau = pooled_tau(g.accepted, g.cycles) if len(g) else None
                ci = bootstrap_ci(pooled_tau, g.accepted, g.cycles) if len(g) else None
                row.append(fmt(tau, ci=ci) if len(g) else "–")
                if method in with_paper:
                    p = paper.figure4(model, names[method], suite, temp)
                    as_tau = Published(p.value + 1, p.source) if p else None  # the paper plots τ − 1
                    row.append(beside(as_tau, ci))
                    used.update([p.source] if p else [])
            rows.append(row)
        columns = ["suite"] + [c for m in methods for c in ([m, f"{m} paper"] if m in with_paper else [m])]
        title = f"Figure 4 — average acceptance length τ ({model}, {temperature_label(temp)})"
        note = "τ = accepted drafts + 1 per cycle, pooled over cycles; the paper's Figure 4 shows τ − 1."
        if with_paper:
            note += " Paper columns: its values + 1, ⚑ where outside the measured 95% CI. " + sources_note(
                used
            )
        tables.append(Table(title, columns, rows, note))
    return tables


def reproduction_tables(u: pd.DataFrame) -> list[Table]:
    """The independent reproduction's GSM8K figures (published.toml) beside the same quantities measured."""
    paper = published_figures()
    rows, used = [], set()
    for (model, temp, method), g in u.groupby(["model", "temperature", "method"], sort=True):
        name = g.method_name.iloc[0]
        for rep in paper.reproductions(model, temp):
            if rep["method"] != name:
                continue
            s = g[g.suite == rep["suite"]]
            if s.empty:
                continue
            with_forwards = s[s.forwards > 0]
            measured = {
                "tpf": (pooled_tpf(s.tokens, s.forwards), bootstrap_ci(pooled_tpf, s.tokens, s.forwards)),
                "tpf_per_question": (
                    float(metrics.tpf(with_forwards.tokens, with_forwards.forwards).mean()),
                    None,
                ),
                "tau": (pooled_tau(s.accepted, s.cycles), bootstrap_ci(pooled_tau, s.accepted, s.cycles))
                if s.cycles.sum()
                else (None, None),
                "tokens_per_s": (mean(s.tokens_per_s), bootstrap_ci(mean, s.tokens_per_s)),
            }
            for quantity, (value, ci) in measured.items():
                if quantity in rep:
                    p = Published(float(rep[quantity]), rep["source"])
                    rows.append([model, method, rep["suite"], temperature_label(temp), quantity,
                                 fmt(value, ci=ci), beside(p, ci)])  # fmt: skip
                    used.add(rep["source"])
    if not rows:
        return []
    note = (
        "tpf: token-weighted; tpf_per_question: mean of item TPF; tau: tokens per cycle; tokens_per_s: mean per "
        "item (hardware-dependent: compare the counts, not the rates). ⚑: outside the measured 95% CI. "
        + sources_note(used)
    )
    columns = ["model", "method", "suite", "T", "quantity", "measured", "reproduction"]
    return [Table("Independent reproduction (GSM8K), beside this run", columns, rows, note)]


# Spec-Bench's leaderboard groups MT-Bench's eight categories into one column.
SPECBENCH_COLUMNS = {
    "MT-Bench": ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"),
    "Translation": ("translation",),
    "Summarization": ("summarization",),
    "QA": ("qa",),
    "Math": ("math_reasoning",),
    "RAG": ("rag",),
}


def specbench_tables(u: pd.DataFrame, suite: str = "specbench") -> list[Table]:
    """Spec-Bench's leaderboard layout: per method, the speedup in each category group, the mean accepted
    tokens (τ) and the overall speedup, against the run's AR baseline."""
    tables = []
    s = u[(u.suite == suite) & u.category.notna()]
    for (model, temp), g in s.groupby(["model", "temperature"], sort=True):
        baseline = baseline_label(set(g.method))
        if baseline is None:
            continue
        rows = []
        for method in method_order(set(g.method)):
            row = [method]
            for categories in SPECBENCH_COLUMNS.values():
                pairs = paired_units(g[g.category.isin(categories)], method, baseline)
                row.append(
                    fmt(ratio_of_means(pairs.tokens_per_s, pairs.tokens_per_s_base), suffix="×")
                    if len(pairs)
                    else "–"
                )
            own = g[g.method == method]
            row.append(fmt(metrics.tau(int(own.accepted.sum()), int(own.cycles.sum()))))
            pairs = paired_units(g, method, baseline)
            ci = bootstrap_ci(ratio_of_means, pairs.tokens_per_s, pairs.tokens_per_s_base)
            row.append(fmt(ratio_of_means(pairs.tokens_per_s, pairs.tokens_per_s_base), ci=ci, suffix="×"))
            rows.append(row)
        columns = ["method", *SPECBENCH_COLUMNS, "mean accepted tokens", "overall"]
        note = (
            f"Speedup: mean per-question tokens/s over `{baseline}`'s on the same questions, per category group "
            "(MT-Bench: its 8 categories, two turns); mean accepted tokens: τ pooled over all cycles. "
            "Parentheses: 95% bootstrap CI over questions."
        )
        tables.append(Table(f"Spec-Bench ({model}, {temperature_label(temp)})", columns, rows, note))
    return tables


# ------------------------------------------------------------------------------------------- provenance


def engine_cell(info: RunInfo) -> str:
    """The engine the run's passes ran in and, where it is a static one (compile, cudagraph), the methods whose
    passes ran outside it, eager: their comparison with methods inside it is not even. Methods another engine
    decoded (vLLM) follow, with its version, mode and parallelism."""
    if info.engine == "eager":
        cell = "eager"
    else:
        outside = [
            f"{label}: {m['outside_engine']}" for label, m in info.methods.items() if m.get("outside_engine")
        ]
        cell = info.engine + (f" (eager: {'; '.join(outside)})" if outside else "")
    others: dict[str, list[str]] = {}
    for label, m in info.methods.items():
        config = m.get("engine_config")
        if config:
            args = config.get("engine_args", {})
            what = (
                f"{config.get('backend', m.get('backend'))} {config.get('version', '?')} "
                f"({'eager' if args.get('enforce_eager') else 'compiled'}, "
                f"TP {args.get('tensor_parallel_size', 1)}, DP {args.get('data_parallel_size', 1)})"
            )
            others.setdefault(what, []).append(label)
    return "; ".join([cell] + [f"{what}: {', '.join(labels)}" for what, labels in others.items()])


def provenance_table(runs: list[Run]) -> Table:
    rows = []
    for run in runs:
        info = run.info or RunInfo(config={}, config_hash="–", status="–")
        config, hardware, versions = info.config, info.hardware, info.versions
        gpus = hardware.get("gpus") or []
        rows.append(
            [
                str(run.directory),
                run.model,
                str(config.get("dtype", "–")),
                str(config.get("device", "–")),
                run.commit,
                info.config_hash[:12],
                ", ".join(g.get("name", "?") for g in gpus if isinstance(g, dict))
                or str(hardware.get("cpu", "–")),
                ", ".join(
                    [f"{k} {v}" for k, v in versions.items() if k in ("python", "torch", "transformers")]
                    + [f"{k} {hardware[k]}" for k in ("cuda", "driver") if hardware.get(k)]
                ),
                engine_cell(info),
                f"{info.started or '–'} → {info.finished or '–'}",
                info.status,
                ", ".join(f"{label} ({m.get('hash', '')[:8]})" for label, m in info.methods.items()),
            ]
        )
    columns = [
        "run",
        "model",
        "dtype",
        "device",
        "commit",
        "config",
        "hardware",
        "versions",
        "engine",
        "started → finished",
        "status",
        "methods (config hash)",
    ]
    return Table("Provenance", columns, rows, "Full provenance: run.json in each run directory.")


def batch_tables(figures: pd.DataFrame) -> list[Table]:
    """The batch sweep (harness.report.batch.batch_figures), one table per figure, batch sizes as columns."""
    if figures.empty:
        return []
    out = []
    for (model, temperature, continuous), f in figures.groupby(
        ["model", "temperature", "batch_continuous"], sort=False
    ):
        where = (
            f"{model}, {temperature_label(temperature)}, {'continuous' if continuous else 'static'} batching"
        )
        out += batch_sweep_tables(f, where)
    return out


def batch_sweep_tables(f: pd.DataFrame, where: str) -> list[Table]:
    """One sweep's tables (`f`: its figures, one row per method and batch size; `where`: the model, temperature
    and batching their titles name): throughput, latency, τ / TPF, KV cache per row, and greedy identity across
    batch sizes where it was measured."""
    sizes = sorted(f.batch_size.unique())
    out = [
        batch_table(
            f,
            sizes,
            where,
            "Throughput against batch size: tok/s over the batch (× ar at the same B)",
            lambda r: (
                fmt(r.throughput, ".1f")
                + (f" ({fmt(r.speedup_vs_ar, '.2f')}×)" if not is_missing(r.speedup_vs_ar) else "")
            ),
            "Σ tokens / Σ spans, a span being one suite's first admission to its last finish.",
        ),
        batch_table(
            f,
            sizes,
            where,
            "Per-request latency: median TTFT / TPOT (ms)",
            lambda r: f"{fmt(r.ttft_ms, '.1f')} / {fmt(r.tpot_ms, '.2f')}",
            "TTFT counts from the request's admission to the batch (rows prefilled before it included).",
        ),
        batch_table(f, sizes, where, "τ / TPF against batch size", lambda r: f"{fmt(r.tau)} / {fmt(r.tpf)}"),
        batch_table(
            f,
            sizes,
            where,
            "KV cache per row: median MiB a row needs (× ar); bytes per position (× ar); scratch positions",
            kv_cell,
            "A row needs its prompt, its new tokens and the method's scratch positions (its largest proposal), "
            "at the bytes per position of the target's cache and the drafter's own. Orthrus shares the "
            "target's cache: the same bytes per position as ar, and only its block's scratch positions more "
            "per row (the O(1) overhead); a drafter with its own cache adds bytes to every position.",
        ),
    ]
    if f.identical_to_smallest_b.notna().any():
        out.append(
            batch_table(
                f,
                sizes,
                where,
                f"Greedy output identical to the same method at B={sizes[0]}",
                lambda r: fmt(r.identical_to_smallest_b, ".1%"),
            )
        )
    return out


def batch_table(f: pd.DataFrame, sizes: list, where: str, title: str, cell, note: str = "") -> Table:
    """One figure of a sweep, titled `title` (`where`): a row per method, `cell` of its row at each batch size
    ("–" where not run)."""
    rows = []
    for method in method_order(f.method.unique()):
        by_size = {r.batch_size: r for r in f[f.method == method].itertuples()}
        rows.append([method] + [cell(by_size[b]) if b in by_size else "–" for b in sizes])
    return Table(f"{title} ({where})", ["method"] + [f"B={b}" for b in sizes], rows, note)


def kv_cell(r) -> str:
    """The KV cache cell of a method at one batch size: MiB per row (× ar); bytes per position (× ar); scratch
    positions."""
    return (
        f"{fmt(r.kv_mib_per_row, '.3f')}"
        + (f" ({fmt(r.kv_vs_ar, '.3f')}×)" if not is_missing(r.kv_vs_ar) else "")
        + f"; {r.kv_bytes_per_position:.0f}"
        + (f" ({fmt(r.kv_per_position_vs_ar, '.2f')}×)" if not is_missing(r.kv_per_position_vs_ar) else "")
        + f"; {r.kv_scratch_positions}"
    )
