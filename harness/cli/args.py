"""What several commands share: the model flags, argument types and the usage error."""

from __future__ import annotations

import argparse

from harness.method_spec import MethodSpec
from orthrus_core.modes import ENGINE_CHOICES


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit status 2."""


DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "f16": "float16", "fp32": "float32", "f32": "float32"}


def parse_dtype(name: str) -> str:
    from harness.methods.target import DTYPES  # imports torch: only commands that load a model take --dtype

    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return name


def parse_int_list(text: str) -> list[int]:
    items = _items(text, "integers", "1,2,4")
    try:
        return [int(x) for x in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_float_list(text: str) -> list[float]:
    items = _items(text, "numbers", "0,1")
    try:
        values = [float(x) for x in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not all(0 <= v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers >= 0, got {text!r}")
    return values


def _items(text: str, what: str, example: str, listing: str = "") -> list[str]:
    """The comma-separated items of `text`, stripped. An empty value or an empty item (`ar,,pld`, a trailing
    comma) is refused, not dropped: `--methods ''` must not mean the default methods."""
    items = [x.strip() for x in text.split(",")]
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"empty; give one or more {what}, comma-separated, e.g. {example}{listing}"
        )
    if not all(items):
        raise argparse.ArgumentTypeError(
            f"{text!r} has an empty item; give {what} separated by single commas, e.g. {example}{listing}"
        )
    return items


def parse_list(text: str) -> list[str]:
    return _items(text, "names", "eager,compile")


def parse_method(text: str) -> MethodSpec:
    """A method spec, parsed where it enters (harness.method_spec): a malformed one is an argument error."""
    try:
        return MethodSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_methods(text: str) -> list[MethodSpec]:
    items = _items(text, "method specs", "ar,orthrus", " (`orthrus-bench methods` lists them)")
    return [parse_method(item) for item in items]


def parse_suites(text: str) -> list[str]:
    return _items(
        text, "suite names or .toml paths", "tiny-math,tiny-code", " (`orthrus-bench suites` lists them)"
    )


def parse_ids(text: str) -> list[str]:
    return _items(text, "dataset ids", "tiny-math/math-0,tiny-math/math-1")


class ArgumentParser(argparse.ArgumentParser):
    """argparse without prefix matching (allow_abbrev=False): an option is taken only as spelled, so that
    `generate --mode ar` is refused rather than read as `--model ar`. Subcommands' parsers are of the same
    class (add_subparsers makes them with type(parent))."""

    def __init__(self, *args, allow_abbrev: bool = False, **kwargs):
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", help="checkpoint directory or hub id (default: the embedded tiny Orthrus model)"
    )
    p.add_argument("--dtype", type=parse_dtype, default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")


def add_engine_arg(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """`--engine`: its name checked here, where it enters (orthrus_core.modes.ENGINE_CHOICES); whether the
    device runs it is checked where the target is loaded (orthrus_core.engine.check_engine)."""
    p.add_argument(
        "--engine",
        choices=ENGINE_CHOICES,
        default="auto",
        help=help
        or "how decode steps run: eager PyTorch, torch.compile with static shapes, or replayed CUDA graphs "
        "(auto: cudagraph on a GPU, eager on a CPU, where compiling costs more than a short run saves)",
    )


def add_quiet_arg(p: argparse.ArgumentParser, also: str = "") -> None:
    """`--quiet`: no progress on stderr (harness.progress), for the commands that can run for minutes."""
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress on stderr (what each step is doing and how far it is)"
        + (f" {also}" if also else ""),
    )


def add_data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data folder laid out like ../shared/data (default: $ORTHRUS_DATA_DIR)")
