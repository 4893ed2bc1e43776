"""A method as a run names it, parsed once where it enters: `MethodSpec`.

    spec = MethodSpec.parse("eagle3:tree=chain:depth=5")
    spec.name, spec.options        # "eagle3", {"tree": "chain", "depth": "5"}
    str(spec)                      # "eagle3:tree=chain:depth=5": run.json's methods, a record's `method`

A spec is `name` or `name:key=value:key=value`. It enters from the command line (`--methods`, `--sweep`,
`--method`), a RunSpec (its methods, from the command line or from a run.json), a record's label (verify, the
report) and the lm-eval adapter's `method=`; from there the runner, verify and the report pass the parsed value
on, and what the registry says of it (harness.methods: its decoder, whether it batches, its options resolved to
their types) takes it as it is.

A MethodSpec is the string it is written as (a `str`), so that it is the key it always was (run.json's
`methods`, the runner's decoders, the compiles' ledger, a record's `method`) and is written as that string
wherever JSON is written. Torch-free and free of the registry, so that the report reads labels with it.
"""

from __future__ import annotations


class MethodSpec(str):
    """A parsed method spec: `name`, the options as written (`options`, text values in the order given), and
    the canonical form, which is the string itself (the text stripped). Built by `parse` (or `of`) only."""

    name: str
    _given: tuple[tuple[str, str], ...]

    def __new__(cls, *args, **kwargs):  # a spec unparsed would have no name: parse() makes one
        raise TypeError("MethodSpec.parse(text) makes a MethodSpec")

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        """'name:key=value:...' -> its MethodSpec; a ValueError says what is malformed."""
        if not isinstance(text, str):
            raise TypeError(f"a method spec is a string like 'eagle3:tree=chain', got {text!r}")
        name, *parts = text.strip().split(":")
        given: dict[str, str] = {}
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise ValueError(f"bad method spec {text!r}: expected name:key=value:..., got {part!r}")
            if key in given:
                raise ValueError(f"bad method spec {text!r}: option {key!r} given twice")
            given[key] = value
        return cls._from_parts(name, given)

    @classmethod
    def of(cls, value: str | MethodSpec) -> MethodSpec:
        """`value` as a MethodSpec: itself where it is one (parsed where it entered), else parsed now."""
        return value if isinstance(value, MethodSpec) else cls.parse(value)

    @classmethod
    def _from_parts(cls, name: str, given: dict[str, str]) -> MethodSpec:
        spec = str.__new__(cls, ":".join([name] + [f"{k}={v}" for k, v in given.items()]))
        spec.name, spec._given = name, tuple(given.items())
        return spec

    @property
    def options(self) -> dict[str, str]:
        """The options as written (a fresh dict: the spec itself does not change)."""
        return dict(self._given)

    def with_options(self, **values) -> MethodSpec:
        """The same spec with `values` in place of (or after) its own: each a value as it would be written."""
        return self._from_parts(self.name, {**self.options, **{k: str(v) for k, v in values.items()}})

    def __copy__(self) -> MethodSpec:  # immutable, as a str is: a copy (dataclasses.asdict's) is itself
        return self

    def __deepcopy__(self, memo) -> MethodSpec:
        return self

    def __reduce__(self):  # to another process (pickle): its text, parsed there
        return (MethodSpec.parse, (str(self),))
