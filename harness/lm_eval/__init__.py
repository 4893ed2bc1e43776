"""The decoders as an lm-evaluation-harness model (`orthrus`), and offline task configs (tasks/).

`main` is the `orthrus-lm-eval` command (and `python -m harness.lm_eval`): lm-eval's command line with the
model registered (adapter.main). It imports nothing of lm-eval before checking that lm-eval is installed, so
that without the `lm-eval` extra the command says how to install it (exit 2) instead of a traceback."""

from __future__ import annotations

import sys

# What pyproject.toml's [project.optional-dependencies] calls the extra that brings lm-eval.
EXTRA = "lm-eval"


def main(argv: list[str] | None = None) -> int | None:
    try:
        import lm_eval  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "lm_eval").split(".")[0] != "lm_eval":  # lm-eval is there; something it needs is not
            raise
        print(
            f"orthrus-lm-eval: error: lm-eval is not installed (No module named {exc.name or 'lm_eval'!r}); "
            f"install the {EXTRA} extra: pip install -e '.[{EXTRA}]' in a checkout of orthrus-bench, or pip "
            f"install 'orthrus-bench[{EXTRA}]'",
            file=sys.stderr,
        )
        return 2
    from .adapter import main as run

    return run(argv)
