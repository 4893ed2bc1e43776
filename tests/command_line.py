"""The command line run in-process, as the fault and bad-input tests call it."""

from __future__ import annotations

from harness.cli import main


def cli(capsys, *argv) -> tuple[int, str]:
    """Run the command line in-process -> (exit code, stderr + stdout)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.err + out.out
