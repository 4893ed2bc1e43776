"""What the listings print lines up and keeps its units ("The first ten minutes"): `suites` starts every
description in one column however long a name, and `inspect --context` keeps one unit to a line."""

from __future__ import annotations

import re
from pathlib import Path

from harness.cli import main
from harness.suites import list_suites

ROOT = Path(__file__).resolve().parents[1]


def test_suites_aligns_every_description(capsys):
    assert main(["suites"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = list_suites()
    assert max(map(len, names)) > 12  # a name longer than the old fixed column (pseudo2code-0.5k)
    assert [line.split(" ", 1)[0] for line in lines] == names
    starts = {len(line) - len(line.split(" ", 1)[1].lstrip(" ")) for line in lines}
    assert len(starts) == 1  # every description starts in one column


def test_inspect_keeps_one_unit_to_a_line(capsys):
    tiny = str(ROOT / "models" / "tiny" / "orthrus")
    for memory, verdict_unit in (("64", "GiB"), ("0.5", "MiB")):  # the verdict's unit: its larger figure's
        assert main(["inspect", tiny, "--context", "64", "--methods", "ar,orthrus", "--memory", memory]) == 0
        out = capsys.readouterr().out
        for line in out.splitlines():
            assert not ("GiB" in line and "MiB" in line), line
        verdicts = [line for line in out.splitlines() if re.match(r"  (ar|orthrus)  fits: ", line)]
        assert len(verdicts) == 2 and all(
            line.split("(")[0].rstrip().endswith(verdict_unit) for line in verdicts
        )
        figures = [line for line in out.splitlines() if re.match(r"    (weights|KV cache|total) ", line)]
        assert len(figures) == 6 and all(re.search(r"\d MiB  |\d MiB$", line) for line in figures)
