"""`orthrus-bench report RUN [RUN…] --out reports/NAME`: a self-contained HTML page (figures embedded as
data URIs, no scripts, no external requests), `report.md` for a pull-request comment or job summary, and
the figures as PNG files under `figures/`."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from orthrus_core.jsonfile import replace_file

from .batch import batch_figures, batched
from .distributions import acceptance_tables, latency_tables
from .engines import cross_engine_tables, drafter_tables
from .figures import Figure, draw_batch_figure, draw_figures, draw_sweep_figure
from .quantize import quantization_tables
from .runs import Run, generations, load_runs, read_json_if_present, units
from .style import CSS
from .sweeps import sweep_figures, sweep_tables
from .tables import (
    Table,
    batch_tables,
    compile_notes,
    errors_table,
    figure4_tables,
    provenance_table,
    reproduction_tables,
    slices,
    specbench_tables,
    summary_tables,
    table1,
    unscored_notes,
)
from .verdicts import calibration_tables, headline_tables, verification_tables


@dataclass
class Report:
    title: str
    runs: list[Run]
    drafters: list[Table]  # the headline's first tables: Orthrus against DFlash and EAGLE-3 per engine
    headline: list[Table]
    table1: list[Table]
    figure4: list[Table]
    cross_engine: list[Table]  # vllm-orthrus against orthrus (runs with both only)
    reproduction: list[Table]
    specbench: list[Table]
    sweeps: list  # τ, TPF and speedup against a swept method option, tables and figure (`run --sweep`)
    batching: list  # the batch sweep's tables and figure (batched runs only)
    quantization: list[Table]  # τ / TPF per `run --quantize` format (runs with different formats only)
    summary: list[Table]
    latency: list[Table]
    acceptance: list[Table]
    unscored: list[str]
    compiled: list[str]  # generations that met a pass shape warm-up had not compiled
    errors: Table | str
    figures: list[Figure]
    verdicts: list[Table]
    unverified: list[str]
    calibration: list[Table]
    provenance: Table

    def sections(self) -> list[tuple[str, list]]:
        verification = list(self.verdicts)
        if self.unverified:
            verification.append(
                "not verified: no verdicts.json in "
                + ", ".join(self.unverified)
                + " (run `orthrus-bench verify` on the run directory)"
            )
        calibration = self.calibration or ["no calibration table (reports/calibration.json)"]
        headline = [
            *self.drafters,
            *self.headline,
            *(
                ["not verified: " + ", ".join(self.unverified) + " (no verdicts.json)"]
                if self.unverified
                else []
            ),
        ]
        optional = [
            ("Cross-engine check", self.cross_engine),
            ("Sweeps", self.sweeps),
            ("Independent reproduction", self.reproduction),
            ("Spec-Bench", self.specbench),
            ("Batching", self.batching),
            ("Weight quantization", self.quantization),
        ]
        return [
            ("Headline", headline),
            ("Table 1", self.table1),
            ("Figure 4", self.figure4),
            *[(heading, tables) for heading, tables in optional if tables],
            ("Summary", [*self.summary, *self.unscored, *self.compiled, self.errors]),
            ("Latency", self.latency),
            ("Acceptance by draft position", self.acceptance or ["no method drafted tokens"]),
            ("Figures", self.figures),
            ("Equivalence verdicts", verification),
            ("Calibration", calibration),
            ("Provenance", [self.provenance]),
        ]

    def shown(self) -> list[tuple[str, list[tuple[object, str | None, str | None]]]]:
        """The sections as the page shows them: (heading, [(item, its title, its note)]). A table's title drops
        what repeats its section's heading (## Headline, then "Embedded tiny family, T=0", not "Headline
        (embedded tiny family, T=0)"; ## Provenance, then the table alone), and a note that the next table
        repeats word for word is shown once, under the last of them. None: the item's own."""
        out = []
        for heading, items in self.sections():
            shown = []
            for i, item in enumerate(items):
                if isinstance(item, Table):
                    after = items[i + 1] if i + 1 < len(items) else None
                    repeated = isinstance(after, Table) and after.note == item.note
                    shown.append((item, under(heading, item.title), "" if repeated else None))
                else:
                    shown.append((item, None, None))
            out.append((heading, shown))
        return out

    def markdown(self) -> str:
        parts = [f"# {self.title}"]
        for heading, items in self.shown():
            parts.append(f"## {heading}")
            for item, title, note in items:
                if isinstance(item, Table):
                    parts.append(item.markdown(title, note))
                elif isinstance(item, Figure):
                    parts.append(
                        f"**{item.title}**\n\n![{item.title}](figures/{item.path.name})\n\n{item.caption}"
                    )
                else:
                    parts.append(f"_{item}_")
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for heading, items in self.shown():
            body.append(f"<h2>{html.escape(heading)}</h2>")
            for item, title, note in items:
                if isinstance(item, Table):
                    body.append(item.html(title, note))
                elif isinstance(item, Figure):
                    data = base64.b64encode(item.path.read_bytes()).decode()
                    body.append(
                        f'<figure id="fig-{item.name}"><img src="data:image/png;base64,{data}" '
                        f'alt="{html.escape(item.title)}"><figcaption><b>{html.escape(item.title)}.</b> '
                        f"{html.escape(item.caption)}</figcaption></figure>"
                    )
                else:
                    body.append(f'<p class="note">{html.escape(item)}</p>')
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n"
        )


def under(heading: str, title: str) -> str:
    """A table's title as its section shows it: without the section's heading where the title begins with it
    ("Table 1 — Orthrus TPF …" under ## Table 1: "Orthrus TPF …"; "Headline (tiny, T=0)": "Tiny, T=0";
    "Latency percentiles …": "Percentiles …"; the heading alone: no title), a first plain word capitalised; the
    whole title where the rest does not stand alone ("Independent reproduction (GSM8K), beside this run")."""
    if title == heading:
        return ""
    if not title.startswith(heading):
        return title
    rest = title[len(heading) :]
    if rest.startswith(" (") and rest.endswith(")") and closes_at_end(rest[1:]):
        rest = rest[2:-1]
    elif rest.startswith((" — ", ", ", ": ")):
        rest = rest[2:].lstrip(" ")
    elif re.match(r" \w", rest):  # "Latency percentiles per method and suite" under ## Latency
        rest = rest[1:]
    else:
        return title
    return rest[0].upper() + rest[1:] if re.match(r"[a-z]+( |$)", rest) else rest


def closes_at_end(text: str) -> bool:
    """Whether the parenthesis that opens `text` is the one that closes it at its end."""
    depth = 0
    for i, c in enumerate(text):
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth == 0:
            return i == len(text) - 1
    return False


def build_report(run_dirs: list[str], out: str | Path, title: str | None = None, calibration=None) -> Report:
    runs = load_runs(run_dirs)
    every = generations(runs)
    if every.empty:
        raise ValueError(f"no successful generations in {', '.join(map(str, run_dirs))}")
    gens, notes = one_at_a_time(every)
    u = units(gens)
    by_slice = slices(gens, u)
    out = Path(out)
    verdicts, unverified = verification_tables(runs)
    calibration_tables_ = []
    for path in calibration_files(calibration):
        data = read_json_if_present(path)
        if isinstance(data, dict):  # the per-replicate values are data for analysis, not a table
            data = {k: v for k, v in data.items() if k != "replicate_t3_z"}
        if data is not None:
            calibration_tables_ += calibration_tables(path.name, data)
    sweep = batch_figures(every)
    batch_figure = draw_batch_figure(sweep, out / "figures")
    batching = [*notes, *batch_tables(sweep), *([batch_figure] if batch_figure else [])]
    swept = sweep_figures(u, runs)
    sweep_figure = draw_sweep_figure(swept, out / "figures")
    return Report(
        title=title or f"orthrus-bench report: {', '.join(str(r.directory) for r in runs)}",
        runs=runs,
        drafters=drafter_tables(u, batch_size_of(gens)),
        headline=headline_tables(u, runs, batch_size_of(gens)),
        table1=table1(gens, by_slice, u),
        figure4=figure4_tables(u),
        cross_engine=cross_engine_tables(gens),
        reproduction=reproduction_tables(u),
        specbench=specbench_tables(u),
        sweeps=[*sweep_tables(swept), *([sweep_figure] if sweep_figure else [])],
        batching=batching,
        quantization=quantization_tables(gens),
        unscored=unscored_notes(gens),
        compiled=compile_notes(runs),
        summary=summary_tables(by_slice),
        latency=latency_tables(gens),
        acceptance=acceptance_tables(gens),
        errors=errors_table(runs),
        figures=draw_figures(gens, u, out / "figures"),
        verdicts=verdicts,
        unverified=unverified,
        calibration=calibration_tables_,
        provenance=provenance_table(runs),
    )


def calibration_files(calibration) -> list[Path]:
    """The calibration given (reports/calibration.json by default) and, beside it, the greedy calibrations
    (`calibrate --greedy` writes calibration-greedy-DTYPE.json there), those that exist."""
    if not calibration:
        return []
    path = Path(calibration)
    greedy = sorted(path.parent.glob("calibration-greedy-*.json")) if path.name == "calibration.json" else []
    return [p for p in [path, *greedy] if p.is_file()]


def one_at_a_time(gens):
    """The generations the per-prompt sections (every one but Batching) read: those decoded alone; when every
    run was given a batch size, those at the smallest, said so in a note (throughput across batch sizes is the
    Batching section's)."""
    rows = batched(gens)
    if len(rows) < len(gens):
        return gens.drop(index=rows.index), []
    sizes = sorted({int(b) for b in rows.batch_size})
    smallest = sizes[0]
    note = (
        f"every run here was decoded with a batch size (B = {', '.join(map(str, sizes))}): this section sets them "
        f"side by side; the other sections' figures (speedup, τ, TPF, latency) are those at the smallest, "
        f"B={smallest}" + (" (a batch of one: one prompt at a time)" if smallest == 1 else "") + ", and the "
        "verdicts cover every run"
    )
    return rows[rows.batch_size == smallest], [note]


def batch_size_of(gens) -> int | None:
    """The batch size the per-prompt sections read (one_at_a_time): None where they read prompts decoded alone."""
    rows = batched(gens)
    return int(rows.batch_size.min()) if len(rows) else None


def write_report(run_dirs: list[str], out: str | Path, title: str | None = None, calibration=None) -> Path:
    out = Path(out)
    report = build_report(
        run_dirs, out, title, calibration
    )  # every run read whole before anything is written
    # Each file whole or not at all: a failed write (a full disk) leaves the previous report's file.
    replace_file(out / "report.md", report.markdown().encode())
    replace_file(out / "report.html", report.html().encode())
    return out
