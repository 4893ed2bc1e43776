"""Stage 5, report: results directories -> tables, figures, the pull-request gate and trends. Never imports
torch or the runner: a report renders on any machine from the records alone.

    runs.py       run directories as pandas tables (generations, work units)
    stats.py      bootstrap CIs and the ratio statistics they resample
    summary.py    the per-method summary `run` prints (τ, TPF, speedup, accuracy, identity)
    style.py      what every page shares: method order and colours, labels, CSS
    tables.py     Table 1, Figure 4's numbers, Spec-Bench, per-method summaries, provenance
    verdicts.py   the headline (speedup over the strongest AR baseline, losslessness verdict), verdicts and
                  calibration as readable tables
    distributions.py  latency percentiles (TTFT, TPOT), acceptance by draft position and its figure
    published.py  the published figures set beside the measured ones (published.toml, with sources)
    figures.py    the report's PNG figures
    page.py       `orthrus-bench report`: the HTML page and report.md
    configs.py    two runs' run.json side by side: configuration differences, which change tokens, and the
                  machine-and-software fingerprint that timing is gated on
    compare.py    `orthrus-bench compare`: the regression gate
    dashboard.py  `orthrus-bench dashboard`: trends across runs, github-action-benchmark JSON
"""
