"""Benchmark suites: a declarative suite file turned into prompts, generation settings and scoring.

Suite files are TOML files in the checkout's ``suites/`` folder (see :mod:`harness.paths`);
:mod:`harness.suites.config` documents the format.
``load_suite("math500")`` loads a named suite, ``load_suite("path/to/my.toml")`` any file.
"""

from __future__ import annotations

import json
import logging
import os
import string
from dataclasses import dataclass, field
from pathlib import Path

from harness.paths import SUITES_DIR
from harness.scoring import Score, ScorerConfigError, make_scorer

from .config import (
    CONTEXT_PLACEHOLDER,
    GenerationSettings,
    SuiteConfig,
    SuiteError,
    parse_suite,
    read_suite_file,
)
from .context_fill import fill_to_length
from .data import LoadedRecords, load_records, resolve_data_dir

__all__ = [
    "GenerationSettings",
    "Score",
    "Suite",
    "SuiteError",
    "SuiteItem",
    "list_suites",
    "load_suite",
    "suite_files_dir",
]

logger = logging.getLogger(__name__)

# How many characters of text per target token a context sweep tokenises; English web text runs at about
# four characters per token, so this leaves a wide margin without tokenising a whole large file.
_SWEEP_CHARS_PER_TOKEN = 8


@dataclass(frozen=True)
class SuiteItem:
    id: str  # stable: "<suite>/<dataset id or position>", e.g. "math500/test/precalculus/807.json"
    turns: tuple[str, ...]  # user messages, already filled from the template
    reference: dict  # what the scorer needs, plus the suite's report fields; JSON-serialisable
    context_tokens: int | None = None  # the target prompt length of a context sweep, else None
    tags: dict = field(default_factory=dict)  # the suite's report fields (category, subject...), for reports


class _TemplateFormatter(string.Formatter):
    """``str.format`` that writes list values one element per line (test lists, for instance)."""

    def format_field(self, value, format_spec):
        if isinstance(value, list):
            value = "\n".join(str(element) for element in value)
        return super().format_field(value, format_spec)


_FORMATTER = _TemplateFormatter()


class Suite:
    def __init__(self, config: SuiteConfig, raw_config: dict, data_dir: Path | None):
        self.name = config.name
        self.config = raw_config  # the suite file as parsed, with subset overrides applied
        self.generation: GenerationSettings = config.generation
        self.data_origin: str | None = None  # set once the records are loaded
        self._spec = config
        self._data_dir = data_dir
        self._scorer = make_scorer(config.scoring.scorer, config.scoring.options, data_dir=data_dir)
        self._records: LoadedRecords | None = None

    def __repr__(self) -> str:
        return f"Suite({self.name!r})"

    def items(self, tokenizer=None, max_context: int | None = None) -> list[SuiteItem]:
        """The suite's prompts, after the subset. A context sweep needs the model's ``tokenizer`` (lengths
        are exact) and skips, with a logged message, every length that with ``max_new_tokens`` would not
        fit in ``max_context`` positions (the model's maximum sequence length)."""
        records = self._load()
        if self._spec.context_sweep is not None:
            return self._sweep_items(records, tokenizer, max_context)
        items = [self._item(record) for record in records]
        chosen = self._select([item.id for item in items])
        return [items[index] for index in chosen]

    def render(self, tokenizer, item: SuiteItem, history: list[str]) -> list[int]:
        """Prompt token ids for turn ``len(history)``, where ``history`` holds the model's earlier answers."""
        if len(history) >= len(item.turns):
            raise ValueError(f"{item.id} has {len(item.turns)} turn(s); there is no turn {len(history) + 1}")
        messages = []
        if self._spec.prompt.system is not None:
            messages.append({"role": "system", "content": self._spec.prompt.system})
        for user, answer in zip(item.turns, history, strict=False):
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": item.turns[len(history)]})
        ids = tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
            **self._spec.prompt.chat_template_kwargs,
        )
        return list(ids)

    def check_ready(self) -> None:
        """Raise a SuiteError when the scorer lacks something it needs to score (a compiler, say)."""
        check = getattr(self._scorer, "check_ready", None)
        if check is not None:
            try:
                check()
            except ScorerConfigError as e:
                raise SuiteError(f"suite {self.name!r}: {e}") from None

    def score(self, item: SuiteItem, outputs: list[str], tokenizer=None) -> Score:
        """Score one answer per turn. ``tokenizer`` is optional; the chat scorer uses it to count tokens."""
        if len(outputs) != len(item.turns):
            raise ValueError(
                f"{item.id} has {len(item.turns)} turn(s) but {len(outputs)} answer(s) were given"
            )
        return self._scorer.score(item.reference, list(outputs), tokenizer)

    def _load(self) -> list[dict]:
        if self._records is None:
            self._records = load_records(self._spec.dataset, self._data_dir, self.name)
            self.data_origin = self._records.origin
            logger.info(
                "suite %s: %d records from %s", self.name, len(self._records.records), self.data_origin
            )
        return self._records.records

    def _item(self, record: dict) -> SuiteItem:
        prompt = self._spec.prompt
        try:
            if prompt.turns_from is not None:
                turns = tuple(str(turn) for turn in record[prompt.turns_from])
            else:
                turns = tuple(_FORMATTER.format(template, **record) for template in prompt.user)
        except (IndexError, KeyError, TypeError) as exc:
            raise SuiteError(
                f"suite {self.name!r}: the user template does not fit record {record['id']!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not turns:
            raise SuiteError(f"suite {self.name!r}: record {record['id']!r} has no user turn")
        tags = {name: record[name] for name in self._spec.dataset.report_fields}
        return SuiteItem(
            id=f"{self.name}/{record['id']}", turns=turns, reference=self._reference(record), tags=tags
        )

    def _reference(self, record: dict) -> dict:
        names = [*self._scorer.reference_fields, *self._spec.dataset.report_fields]
        reference = {name: record[name] for name in names}
        json.dumps(reference)  # the runner stores references; fail here rather than there
        return reference

    def _select(self, ids: list[str]) -> list[int]:
        """Positions of the items the subset keeps: the listed ids (in dataset order), then ``limit``."""
        subset = self._spec.subset
        positions = list(range(len(ids)))
        if subset.ids:
            wanted = {
                wanted if wanted.startswith(f"{self.name}/") else f"{self.name}/{wanted}"
                for wanted in subset.ids
            }
            unknown = sorted(wanted - set(ids))
            if unknown:
                raise SuiteError(
                    f"suite {self.name!r}: [subset] ids not in the dataset: {', '.join(unknown[:10])}"
                    + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
                )
            positions = [position for position in positions if ids[position] in wanted]
        return positions[: subset.limit] if subset.limit is not None else positions

    def _sweep_items(self, records: list[dict], tokenizer, max_context: int | None) -> list[SuiteItem]:
        if tokenizer is None:
            raise SuiteError(
                f"suite {self.name!r} fills prompts to exact token counts and needs the model's tokenizer: "
                f"call items(tokenizer=...)"
            )
        sweep = self._spec.context_sweep
        lengths = [
            sweep.lengths[index] for index in self._select([f"{self.name}/{n}" for n in sweep.lengths])
        ]
        max_new = self.generation.max_new_tokens
        fitting = []
        for length in lengths:
            if max_context is not None and length + max_new > max_context:
                logger.warning(
                    "suite %s: skipping the %d-token prompt: with max_new_tokens=%d it needs %d positions, "
                    "more than the model's %d",
                    self.name,
                    length,
                    max_new,
                    length + max_new,
                    max_context,
                )
            else:
                fitting.append(length)
        if not fitting:
            return []

        (text_field,) = self._spec.dataset.fields  # validated: a sweep maps exactly one field, its text
        corpus = self._sweep_corpus(records, text_field, max(fitting))
        corpus_ids = tokenizer.encode(corpus, add_special_tokens=False)

        def turn_with(filler: str) -> str:
            return _FORMATTER.format(self._spec.prompt.user[0], **{CONTEXT_PLACEHOLDER: filler})

        def prompt_length(filler: str) -> int:
            return len(self.render(tokenizer, SuiteItem(id="", turns=(turn_with(filler),), reference={}), []))

        items = []
        for length in fitting:
            filler = fill_to_length(length, corpus_ids, tokenizer.decode, prompt_length)
            items.append(
                SuiteItem(
                    id=f"{self.name}/{length}",
                    turns=(turn_with(filler),),
                    reference={},
                    context_tokens=length,
                )
            )
        return items

    def _sweep_corpus(self, records: list[dict], text_field: str, longest: int) -> str:
        needed_chars = longest * _SWEEP_CHARS_PER_TOKEN
        documents, total = [], 0
        for record in records:
            documents.append(str(record[text_field]))
            total += len(documents[-1])
            if total >= needed_chars:
                break
        return self._spec.context_sweep.document_separator.join(documents)


def suite_files_dir() -> Path:
    return SUITES_DIR


def list_suites() -> list[str]:
    return sorted(path.stem for path in suite_files_dir().glob("*.toml"))


def load_suite(
    name_or_path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    ids: list[str] | None = None,
) -> Suite:
    """Load a suite by name (a file in :func:`suite_files_dir`) or by path to a ``.toml`` file.

    ``data_dir`` is the local data folder (default ``$ORTHRUS_DATA_DIR``). ``limit`` and ``ids`` override
    the file's ``[subset]``; the override is part of :attr:`Suite.config`, so it is part of its hash."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = suite_files_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise SuiteError(f"no suite named {str(name_or_path)!r}; available: {', '.join(list_suites())}")
    elif not path.is_file():
        raise SuiteError(f"suite file {path} does not exist")
    raw = read_suite_file(path)
    if limit is not None or ids is not None:
        subset = dict(raw.get("subset", {}))
        if limit is not None:
            subset["limit"] = limit
        if ids is not None:
            subset["ids"] = list(ids)
        raw = {**raw, "subset": subset}
    config = parse_suite(raw, path.stem, str(path))
    return Suite(config, raw, resolve_data_dir(data_dir))
