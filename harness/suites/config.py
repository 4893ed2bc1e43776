"""The suite file format: parsing a TOML suite file and validating it, with errors that name the file, the
table and the key at fault and say what would be accepted.

A suite file (its name is the file name without ``.toml``) has these tables::

    description = "..."                       # optional, one line

    [dataset]                                 # where the records come from, and which fields are used
    fields = { problem = "problem", answer = "answer" }   # name used below -> column of a record
    id_field = "unique_id"                    # optional; item ids default to the record's position
    report_fields = ["subject"]               # optional; copied into each item's reference for reports

    [dataset.hub]                             # a Hugging Face dataset...
    id = "HuggingFaceH4/MATH-500"
    config = "main"                           # optional
    split = "test"
    fields = {...}; id_field = "..."          # optional, where the hub's columns differ from the default

    [dataset.local]                           # ...and/or its copy in the data folder (--data-dir)
    files = ["math/math500_test.jsonl"]       # relative to the data folder; JSON, JSON Lines, .gz
    keep = { field = "task_id", min = 11, max = 510 }     # optional: rows to keep (inclusive range)
    fields = {...}; id_field = "..."          # optional overrides, as for the hub

    [dataset.builtin]                         # or records made by a Python function (no other source)
    function = "package.module:function"      # returns an iterable of dicts
    args = { count = 50 }                     # optional keyword arguments, checked on load against the
                                              # function's signature (names, annotated or default types)

    [prompt]
    system = ""                               # optional: a system message, as is (even empty); omit for none
    user = "{problem}\\nPlease ..."           # str.format template over the fields; a list for several
                                              # turns ("{turns[0]}", "{turns[1]}"); list values are
                                              # joined with newlines; "{{" and "}}" are literal braces
    turns_from = "turns"                      # instead of user: a list field, each element one user turn,
                                              # as is (items may have different numbers of turns)
    chat_template_kwargs = { enable_thinking = false }

    [generation]
    max_new_tokens = 2048
    temperature = 0.0                         # 0 = greedy (so are top_k = 1 and the floors of orthrus_core/params.py)
    top_k = 0                                 # 0 = off
    top_p = 1.0
    stop = ["<|im_end|>"]                     # strings and/or token ids

    [scoring]
    scorer = "math"                           # see harness.scoring; other keys are the scorer's options

    [subset]                                  # optional
    limit = 100
    ids = ["test/precalculus/807.json"]       # dataset ids, with or without the "<suite>/" prefix

    [context_sweep]                           # only for context-length sweeps; needs "{context}" in user
    lengths = [1000, 2000]                    # exact prompt lengths in tokens
    document_separator = "\\n\\n"
"""

from __future__ import annotations

import importlib
import inspect
import re
import string
import sys
import types
import typing
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from harness.options import OptionError, check_positive, check_sampling
from harness.scoring import ScorerConfigError, make_scorer
from orthrus_core.params import SamplingParams


class SuiteError(ValueError):
    """A suite file that cannot be used, or a suite used in a way it does not support."""


_REQUIRED = object()


class _Table:
    """One TOML table being validated: typed look-ups, then a check that no unknown key is left."""

    def __init__(self, data: object, where: str, source: str):
        if not isinstance(data, dict):
            raise SuiteError(f"{source}: [{where}] must be a table, not {type(data).__name__}")
        self.data, self.where, self.source = data, where, source
        self.seen: set[str] = set()

    def qualified(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, problem: str) -> SuiteError:
        where = f"[{self.where}] " if self.where else ""
        return SuiteError(f"{self.source}: {where}{key}: {problem}")

    def _get(self, key: str, default):
        self.seen.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise self.error(key, "missing; this key is required")
        return default

    def string(self, key: str, default=_REQUIRED) -> str | None:
        value = self._get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"must be a string, not {value!r}")
        return value

    def integer(self, key: str, default=_REQUIRED, minimum: int | None = None) -> int | None:
        value = self._get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}, not {value}")
        return value

    def number(self, key: str, default=_REQUIRED) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number, not {value!r}")
        return float(value)

    def string_list(self, key: str, default=_REQUIRED) -> list[str]:
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(key, f"must be a list of strings, not {value!r}")
        return value

    def string_map(self, key: str, default=_REQUIRED) -> dict[str, str] | None:
        value = self._get(key, default)
        if value is None:
            return None
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self.error(key, f'must be a table of strings (name = "column"), not {value!r}')
        return value

    def table(self, key: str, required: bool = False) -> _Table | None:
        value = self._get(key, None)
        if value is None and required:
            raise SuiteError(f"{self.source}: the [{self.qualified(key)}] table is missing; it is required")
        return None if value is None else _Table(value, self.qualified(key), self.source)

    def raw(self, key: str, default=_REQUIRED):
        return self._get(key, default)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            where = f"[{self.where}]" if self.where else "the top level"
            raise SuiteError(
                f"{self.source}: unknown key(s) {', '.join(unknown)} in {where}; "
                f"allowed there: {', '.join(sorted(self.seen))}"
            )


@dataclass(frozen=True)
class HubSource:
    id: str
    config: str | None
    split: str
    fields: dict[str, str] | None  # None: the dataset's default mapping
    id_field: str | None

    def describe(self) -> str:
        config = f", config {self.config}" if self.config else ""
        return f"hub dataset {self.id} (split {self.split}{config})"


@dataclass(frozen=True)
class KeepRange:
    field: str
    minimum: int
    maximum: int


@dataclass(frozen=True)
class LocalSource:
    files: tuple[str, ...]
    keep: KeepRange | None
    fields: dict[str, str] | None
    id_field: str | None


@dataclass(frozen=True)
class BuiltinSource:
    function: str  # "package.module:function"
    args: dict


@dataclass(frozen=True)
class DatasetSpec:
    fields: dict[str, str]
    id_field: str | None
    report_fields: tuple[str, ...]
    hub: HubSource | None
    local: LocalSource | None
    builtin: BuiltinSource | None


@dataclass(frozen=True)
class PromptSpec:
    system: str | None
    user: tuple[str, ...]  # one template per turn (empty with turns_from)
    chat_template_kwargs: dict
    turns_from: str | None = None  # a list field whose elements are the user turns, as is


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    stop: tuple[str | int, ...] = ()

    def __post_init__(
        self,
    ):  # the checks every run option gets (harness.options), where the settings are made
        check_positive("max_new_tokens", self.max_new_tokens)
        _ = self.sampling

    @cached_property
    def sampling(self) -> SamplingParams:
        """What the decoder samples with: made, and so checked, once per settings (in __post_init__), not again
        at each generation that reads it."""
        return check_sampling(self.temperature, self.top_k, self.top_p)

    def stop_token_ids_and_strings(self, tokenizer) -> tuple[list[int], list[str]]:
        """Split ``stop`` into token ids (ints, and strings that are a single token of ``tokenizer``, such
        as ``<|im_end|>``) and strings that must be matched in the decoded text (all of them without a
        tokenizer). The stop tokens of every generation of a suite, in a run and in verify."""
        token_ids, strings = [], []
        for entry in self.stop:
            if isinstance(entry, int):
                token_ids.append(entry)
                continue
            if tokenizer is None:
                strings.append(entry)
                continue
            token_id = tokenizer.convert_tokens_to_ids(entry)
            is_single_token = (
                isinstance(token_id, int)
                and token_id != tokenizer.unk_token_id
                and tokenizer.convert_ids_to_tokens(token_id) == entry
            )
            if is_single_token:
                token_ids.append(token_id)
            else:
                strings.append(entry)
        return token_ids, strings


@dataclass(frozen=True)
class ScoringSpec:
    scorer: str
    options: dict


@dataclass(frozen=True)
class SubsetSpec:
    limit: int | None
    ids: tuple[str, ...]


@dataclass(frozen=True)
class ContextSweepSpec:
    lengths: tuple[int, ...]
    document_separator: str


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    description: str
    dataset: DatasetSpec
    prompt: PromptSpec
    generation: GenerationSettings
    scoring: ScoringSpec
    subset: SubsetSpec
    context_sweep: ContextSweepSpec | None


# Where a context sweep puts its filler text in the user template.
CONTEXT_PLACEHOLDER = "context"


def read_suite_file(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML: {exc}") from exc


def parse_suite(raw: dict, name: str, source: str) -> SuiteConfig:
    """Validate a parsed suite file; ``source`` names it in error messages."""
    top = _Table(raw, "", source)
    description = top.string("description", "")
    dataset = _parse_dataset(top.table("dataset", required=True))
    context_sweep = _parse_context_sweep(top.table("context_sweep"))
    prompt = _parse_prompt(top.table("prompt", required=True))
    generation = _parse_generation(top.table("generation", required=True))
    scoring = _parse_scoring(top.table("scoring", required=True))
    subset = _parse_subset(top.table("subset"))
    top.finish()

    config = SuiteConfig(name, description, dataset, prompt, generation, scoring, subset, context_sweep)
    _check_cross_references(config, source)
    return config


def _parse_dataset(table: _Table) -> DatasetSpec:
    fields = table.string_map("fields")
    if not fields:
        raise table.error("fields", 'must name at least one field (name = "column")')
    id_field = table.string("id_field", None)
    report_fields = tuple(table.string_list("report_fields", []))
    hub = _parse_hub(table.table("hub"))
    local = _parse_local(table.table("local"))
    builtin = _parse_builtin(table.table("builtin"))
    table.finish()
    if builtin is not None and (hub or local):
        raise table.error(
            "builtin", "a builtin source cannot be combined with [dataset.hub] or [dataset.local]"
        )
    if not (hub or local or builtin):
        raise table.error("hub/local/builtin", "no data source: add [dataset.hub], [dataset.local] or both")
    for name in report_fields:
        if name not in fields:
            raise table.error("report_fields", f"{name!r} is not one of the fields {sorted(fields)}")
    for source_name, source in (("hub", hub), ("local", local)):
        if source is not None and source.fields is not None and set(source.fields) != set(fields):
            raise table.error(
                f"{source_name}.fields",
                f"must map the same names as [dataset] fields {sorted(fields)}, not {sorted(source.fields)}",
            )
    return DatasetSpec(fields, id_field, report_fields, hub, local, builtin)


def _parse_hub(table: _Table | None) -> HubSource | None:
    if table is None:
        return None
    hub = HubSource(
        id=table.string("id"),
        config=table.string("config", None),
        split=table.string("split"),
        fields=table.string_map("fields", None),
        id_field=table.string("id_field", None),
    )
    table.finish()
    return hub


def _parse_local(table: _Table | None) -> LocalSource | None:
    if table is None:
        return None
    files = table.string_list("files")
    if not files:
        raise table.error("files", "must list at least one file, relative to the data folder")
    for file in files:
        if Path(file).is_absolute() or ".." in Path(file).parts:
            raise table.error("files", f"{file!r} must be a path inside the data folder")
    keep_table = table.table("keep")
    keep = None
    if keep_table is not None:
        keep = KeepRange(keep_table.string("field"), keep_table.integer("min"), keep_table.integer("max"))
        keep_table.finish()
    local = LocalSource(tuple(files), keep, table.string_map("fields", None), table.string("id_field", None))
    table.finish()
    return local


def _parse_builtin(table: _Table | None) -> BuiltinSource | None:
    if table is None:
        return None
    function = table.string("function")
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", function):
        raise table.error("function", f"must look like 'package.module:function', not {function!r}")
    args = table.raw("args", {})
    if not isinstance(args, dict):
        raise table.error("args", f"must be a table of keyword arguments, not {args!r}")
    table.finish()
    _check_builtin_args(table, function, args)
    return BuiltinSource(function, args)


# The parameter types a suite file can give, with the Python types a TOML value of each may have (a TOML
# integer is a number too) and the name a suite file's author knows it by.
_TOML_TYPES = {
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
    bool: ((bool,), "true or false"),
    list: ((list,), "an array"),
    dict: ((dict,), "a table"),
}


def _check_builtin_args(table: _Table, function: str, args: dict) -> None:
    """`args` against the generator's signature, now, with the file and key named: an unknown keyword, a
    required one missing, or a value whose type the parameter's annotation (else its default) refuses. A
    generator that cannot be imported is left to the data's loading, which names it (harness.suites.data)."""
    module_name, name = function.split(":")
    try:
        fn = getattr(importlib.import_module(module_name), name)
        signature = inspect.signature(fn)
    except (ImportError, AttributeError, TypeError, ValueError):
        return
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: check by the defaults alone
        hints = {}
    params = {
        p.name: p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    for key, value in args.items():
        param = params.get(key)
        if param is None:
            if takes_any:
                continue
            known = ", ".join(params) or "none"
            raise table.error(f"args.{key}", f"{function} takes no argument {key!r}; its arguments: {known}")
        allowed = _allowed_types(hints.get(key), param.default)
        if allowed is None or _is_instance(value, allowed[0]):
            continue
        quoted = " (quoted: write it without the quotes)" if isinstance(value, str) and _parses(value) else ""
        raise table.error(
            f"args.{key}", f"must be {allowed[1]}, as {function} takes its {key}, not {value!r}{quoted}"
        )
    missing = [k for k, p in params.items() if p.default is p.empty and k not in args]
    if missing:
        raise table.error("args", f"{function} needs {', '.join(missing)}; add them to args")


def _allowed_types(hint, default) -> tuple[tuple[type, ...], str] | None:
    """The Python types a TOML value may have for a parameter, and their name: from its annotation (X,
    X | None, Optional[X] of the types in _TOML_TYPES), else from its default's type; None where neither says
    (anything goes)."""
    if hint is None:
        return _TOML_TYPES.get(type(default)) if default is not inspect.Parameter.empty else None
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    allowed: list[type] = []
    names: list[str] = []
    for option in options:
        if option is type(None):
            continue
        option = typing.get_origin(option) or option  # list[str] -> list
        if option not in _TOML_TYPES:
            return None  # a type TOML cannot express plainly: leave it to the function
        allowed += _TOML_TYPES[option][0]
        names.append(_TOML_TYPES[option][1])
    return (tuple(dict.fromkeys(allowed)), " or ".join(names)) if allowed else None


def _is_instance(value, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in allowed:  # True is an int to Python, not to a suite file
        return False
    return isinstance(value, allowed)


def _parses(text: str) -> bool:
    """Whether a string would be a TOML number or boolean without its quotes."""
    try:
        tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return False
    return True


def _parse_prompt(table: _Table) -> PromptSpec:
    system = table.string("system", None)
    turns_from = table.string("turns_from", None)
    user = table.raw("user", None if turns_from is None else [])
    if isinstance(user, str):
        user = [user]
    if turns_from is not None and user:
        raise table.error("user", "give either user templates or turns_from, not both")
    if turns_from is None and (
        not isinstance(user, list) or not user or not all(isinstance(turn, str) for turn in user)
    ):
        raise table.error("user", f"must be a template string or a non-empty list of them, not {user!r}")
    kwargs = table.raw("chat_template_kwargs", {})
    if not isinstance(kwargs, dict):
        raise table.error("chat_template_kwargs", f"must be a table, not {kwargs!r}")
    table.finish()
    return PromptSpec(system, tuple(user), kwargs, turns_from)


def _parse_generation(table: _Table) -> GenerationSettings:
    values = dict(
        max_new_tokens=table.integer("max_new_tokens", minimum=1),
        temperature=table.number("temperature", 0.0),
        top_k=table.integer("top_k", 0, minimum=0),
        top_p=table.number("top_p", 1.0),
        stop=tuple(table.raw("stop", [])),
    )
    for entry in values["stop"]:
        if isinstance(entry, bool) or not isinstance(entry, (str, int)) or entry == "":
            raise table.error("stop", f"entries must be non-empty strings or token ids, not {entry!r}")
    table.finish()
    try:
        return GenerationSettings(**values)
    except OptionError as exc:  # temperature, top_k, top_p: the checks every run option gets
        raise SuiteError(f"{table.source}: [generation] {exc}") from None


def _parse_scoring(table: _Table) -> ScoringSpec:
    scorer = table.string("scorer")
    options = {key: table.raw(key) for key in table.data if key != "scorer"}
    table.finish()
    return ScoringSpec(scorer, options)


def _parse_subset(table: _Table | None) -> SubsetSpec:
    if table is None:
        return SubsetSpec(None, ())
    subset = SubsetSpec(table.integer("limit", None, minimum=1), tuple(table.string_list("ids", [])))
    table.finish()
    return subset


def _parse_context_sweep(table: _Table | None) -> ContextSweepSpec | None:
    if table is None:
        return None
    lengths = table.raw("lengths")
    if (
        not isinstance(lengths, list)
        or not lengths
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in lengths)
    ):
        raise table.error("lengths", f"must be a non-empty list of positive token counts, not {lengths!r}")
    sweep = ContextSweepSpec(tuple(lengths), table.string("document_separator", "\n\n"))
    table.finish()
    return sweep


def template_fields(template: str) -> set[str]:
    """Names a ``str.format`` template refers to ("turns" for "{turns[0]}"); raises on a malformed one."""
    names = set()
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is None:
            continue
        if field_name == "" or field_name[0].isdigit():
            raise ValueError("positional fields such as {} or {0} are not supported; name a field")
        if "." in field_name:
            raise ValueError(f"attribute access in {{{field_name}}} is not supported; use a field name")
        names.add(field_name.split("[", 1)[0])
    return names


def _check_cross_references(config: SuiteConfig, source: str) -> None:
    known = set(config.dataset.fields)
    if config.context_sweep is not None:
        if len(config.dataset.fields) != 1:
            raise SuiteError(
                f"{source}: [context_sweep] takes its filler from one text field; [dataset] fields must map "
                f"exactly one, not {sorted(config.dataset.fields)}"
            )
        # The text field only feeds the filler; templates place it with {context}.
        known = {CONTEXT_PLACEHOLDER}
    if config.prompt.turns_from is not None and config.prompt.turns_from not in known:
        raise SuiteError(
            f"{source}: [prompt] turns_from {config.prompt.turns_from!r} is not a [dataset] field; "
            f"defined: {', '.join(sorted(known))}"
        )
    if config.prompt.turns_from is not None and config.context_sweep is not None:
        raise SuiteError(f"{source}: [context_sweep] needs a user template, not turns_from")
    for template in config.prompt.user:
        try:
            names = template_fields(template)
        except ValueError as exc:
            raise SuiteError(f"{source}: [prompt] user: malformed template {template!r}: {exc}") from exc
        unknown = sorted(names - known)
        if unknown:
            raise SuiteError(
                f"{source}: [prompt] user: the template uses {', '.join('{' + n + '}' for n in unknown)}, "
                f"which [dataset] fields does not define; defined: {', '.join(sorted(known))}"
            )
    if config.context_sweep is not None:
        if len(config.prompt.user) != 1 or CONTEXT_PLACEHOLDER not in template_fields(config.prompt.user[0]):
            raise SuiteError(
                f"{source}: [context_sweep] needs exactly one user turn whose template contains "
                f"{{{CONTEXT_PLACEHOLDER}}}, where the filler text goes"
            )
    try:
        scorer = make_scorer(config.scoring.scorer, config.scoring.options)
    except ScorerConfigError as exc:
        raise SuiteError(f"{source}: [scoring] {exc}") from exc
    missing = [name for name in scorer.reference_fields if name not in known]
    if missing:
        raise SuiteError(
            f"{source}: [scoring] scorer {config.scoring.scorer!r} needs the field(s) {', '.join(missing)}; "
            f"add them to [dataset] fields"
        )
