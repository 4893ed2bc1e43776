"""nox sessions: `nox -s tests`, `nox -s lint`.

Sessions use the interpreter nox runs under (no interpreter downloads). TORCH_SPEC picks the torch wheel:
`torch==2.13.0` by default (the CPU wheel on CPU-only machines with a local wheel cache, the CUDA build from
PyPI elsewhere).
"""

import os

import nox

nox.options.sessions = ["lint", "tests"]
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")


@nox.session
def tests(session: nox.Session) -> None:
    session.install(TORCH_SPEC)
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
