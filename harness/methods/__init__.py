"""Stage 2, methods: every decoder behind one interface (`base.Decoder`), built from a spec string.

    target = load_target("chiennv/Orthrus-Qwen3-8B", "bfloat16", "cuda")
    decoder = make_decoder("eagle3:tree=chain:depth=5", target)
    result = decoder.generate(prompt_ids, 256)

A spec is `name` or `name:key=value:key=value`; each method module declares its OPTIONS as
{key: (type, default)}. `overrides` passed to make_decoder win over the spec's values.
"""

from __future__ import annotations

from importlib import import_module

from .base import Decoder
from .target import DTYPES, Target, load_target

METHODS = ["ar", "ar-hf", "orthrus", "eagle3", "dflash", "pld", "diffusion"]

__all__ = ["DTYPES", "METHODS", "Decoder", "Target", "available", "load_target", "make_decoder", "parse_spec"]


def available() -> list[str]:
    return list(METHODS)


def _module(name: str):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return import_module(f"{__name__}.{name.replace('-', '_')}")  # ar-hf lives in ar_hf.py


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'name:key=value:...' -> (name, {key: value as text})."""
    name, *parts = spec.strip().split(":")
    options = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"bad method spec {spec!r}: expected name:key=value:..., got {part!r}")
        if key in options:
            raise ValueError(f"bad method spec {spec!r}: option {key!r} given twice")
        options[key] = value
    return name, options


def _coerce(method: str, key: str, kind: type, value):
    if value is None or isinstance(value, kind) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    raise ValueError(f"{method}: option {key} must be {kind.__name__}, got {value!r}")


def make_decoder(spec: str, target: Target, **overrides) -> Decoder:
    """The decoder for `spec` on `target`, its options resolved and its checkpoints loaded."""
    name, given = parse_spec(spec)
    module = _module(name)
    given.update(overrides)
    unknown = sorted(set(given) - set(module.OPTIONS))
    if unknown:
        known = ", ".join(f"{k} (default {d!r})" for k, (_, d) in module.OPTIONS.items()) or "none"
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; known options: {known}")
    options = {
        k: _coerce(name, k, kind, given.get(k, default)) for k, (kind, default) in module.OPTIONS.items()
    }
    label = ":".join([name] + [f"{k}={v}" for k, v in given.items()])
    return module.build(target, label, options)
