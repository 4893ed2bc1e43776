"""The one rich Console every command prints its tables with."""

from __future__ import annotations

import sys

from rich.console import Console


def console() -> Console:
    # Piped or captured output gets a width that fits the widest tables instead of rich's default 80 columns.
    return Console(width=None if sys.stdout.isatty() else 160)
