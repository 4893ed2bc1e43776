"""`orthrus-bench dashboard`: trend figures over a history of runs, in time order, and the
github-action-benchmark export of the newest run."""

from __future__ import annotations

import json

import pytest
from browser import CHROMIUM, load_page
from synthetic_runs import make_run

from harness.cli import main
from harness.report.dashboard import write_dashboard


def test_trends_and_benchmark_export(tmp_path):
    history = tmp_path / "history"
    # Written in an order other than their start times: the dashboard must sort by run.json's `started`.
    for day, slowdown in ((3, 1.3), (1, 1.0), (2, 1.15)):
        make_run(
            history / f"run-{slowdown}",
            methods=("ar", "orthrus"),
            suites=("tiny-math",),
            items=4,
            seed=day,
            slowdown={"orthrus": slowdown},
            commit=f"{day}" * 12,
            started=f"2026-11-0{day}T00:00:00+00:00",
            gpu=day == 3,
        )
    assert main(["dashboard", str(history), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    for metric in ("tokens_per_s", "speedup_vs_ar", "tau", "tpf", "accuracy", "ttft_ms", "tpot_ms"):
        assert (out / "figures" / f"trend_{metric}.png").read_bytes()[:4] == b"\x89PNG"
    listing = (out / "dashboard.md").read_text()
    assert listing.index("1111111111") < listing.index("2222222222") < listing.index("3333333333")

    bigger = json.loads((out / "benchmark-bigger.json").read_text())
    smaller = json.loads((out / "benchmark-smaller.json").read_text())
    names = {e["name"]: e for e in bigger}
    tps = names["embedded tiny family / tiny-math / T=0 / orthrus / tokens/s"]
    assert tps["unit"] == "tokens/s" and tps["range"].startswith("± ")
    assert "commit 3333333333" in tps["extra"]  # the newest run is exported
    # The newest run is the slowest orthrus: about 4× ar / 1.3.
    speedup = names["embedded tiny family / tiny-math / T=0 / orthrus / speedup over ar"]["value"]
    assert 2.8 < speedup < 3.4
    assert {e["unit"] for e in smaller} == {"ms", "MiB", "J"}
    assert all(set(e) <= {"name", "unit", "value", "range", "extra"} for e in bigger + smaller)


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)"
)
def test_dashboard_page_loads_in_chromium(tmp_path):
    for day in (1, 2):
        make_run(
            tmp_path / "history" / str(day),
            methods=("ar",),
            suites=("tiny-math",),
            items=3,
            seed=day,
            started=f"2026-11-0{day}T00:00:00+00:00",
        )
    out = write_dashboard(tmp_path / "history", tmp_path / "out")
    page = load_page(out / "dashboard.html")
    assert page.errors == []
    assert page.images and all(image["loaded"] for image in page.images)
