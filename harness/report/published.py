"""The published figures a report sets beside the measured ones (published.toml: the Orthrus paper's Table 1
and Figure 4, an independent reproduction), looked up by the run's model, suite and temperature."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PUBLISHED = Path(__file__).with_name("published.toml")
# Table 1's tasks in the paper's order.
TABLE1_SUITES = ["gsm8k", "math500", "aime24", "aime25", "humaneval", "mbpp", "pseudo2code", "livecodebench"]


@dataclass(frozen=True)
class Published:
    value: float
    source: str  # the description in published.toml's [sources]


@dataclass
class PublishedFigures:
    sources: dict[str, str]
    table1_entries: list[dict] = field(default_factory=list)
    figure4_entries: list[dict] = field(default_factory=list)
    reproduction_entries: list[dict] = field(default_factory=list)

    def _matching(self, entries: list[dict], model: str, temperature: float) -> list[dict]:
        name = model.lower()
        return [
            e for e in entries if e["checkpoint"].lower() in name and float(e["temperature"]) == temperature
        ]

    def _published(self, entry: dict, value) -> Published | None:
        return None if value is None else Published(float(value), self.sources[entry["source"]])

    def table1_cell(self, model: str, suite: str, temperature: float, quantity: str) -> Published | None:
        """The paper's TPF or speedup ("tpf", "speedup") for this checkpoint, suite and temperature."""
        for entry in self._matching(self.table1_entries, model, temperature):
            value = entry.get("cells", {}).get(suite, {}).get(quantity)
            if value is not None:
                return self._published(entry, value)
        return None

    def table1_average(self, model: str, temperature: float, quantity: str) -> Published | None:
        for entry in self._matching(self.table1_entries, model, temperature):
            value = entry.get("average", {}).get(quantity)
            if value is not None:
                return self._published(entry, value)
        return None

    def figure4(self, model: str, method: str, suite: str, temperature: float) -> Published | None:
        """Verified drafts per cycle (τ − 1) in the paper's Figure 4."""
        for entry in self._matching(self.figure4_entries, model, temperature):
            value = entry["methods"].get(method, {}).get(suite)
            if value is not None:
                return self._published(entry, value)
        return None

    def reproductions(self, model: str, temperature: float) -> list[dict]:
        return [
            {**e, "source": self.sources[e["source"]]}
            for e in self._matching(self.reproduction_entries, model, temperature)
        ]


@cache
def published_figures(path: Path = PUBLISHED) -> PublishedFigures:
    data = tomllib.loads(path.read_text())
    figures = PublishedFigures(
        data["sources"], data.get("table1", []), data.get("figure4", []), data.get("reproduction", [])
    )
    for entry in figures.table1_entries + figures.figure4_entries + figures.reproduction_entries:
        if entry["source"] not in figures.sources:
            raise ValueError(f"{path}: source {entry['source']!r} is not in [sources]")
    return figures
