"""What every page and figure of a report shares: the method order and colours, the temperature labels, the
CSS."""

from __future__ import annotations

import re

# Figure 4 of the paper orders the drafting methods EAGLE-3, DFlash, Orthrus; the other methods keep the registry's
# order. The project's methods in harness.methods.REGISTRY's order, and the lossy ones: repeated here so that the
# report needs no torch (the registry's package imports it on use; tests/test_report_order.py holds them equal).
DRAFT_ORDER = ["eagle3", "dflash", "orthrus"]
REGISTRY_ORDER = ["ar", "ar-hf", "orthrus", "eagle3", "dflash", "pld", "diffusion"]
LOSSY = {"diffusion"}
BASELINES = ("ar", "ar-hf")
# A vLLM method is named after the project's method it runs in vLLM (`vllm-orthrus`: Orthrus' diffusion view as
# a vLLM speculative method), and sorts right after it.
VLLM_PREFIX = "vllm-"


def temperature_label(t: float) -> str:
    return f"T={t:g}"


def natural_key(text: str) -> tuple:
    """Text with its numbers compared as numbers: block_size=4 before block_size=16."""
    parts = re.split(r"(\d+(?:\.\d+)?)", text)
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts))


def method_order(methods) -> list[str]:
    """One order for every table and figure of a report: the AR baselines (ar, ar-hf), the drafting methods in
    the paper's Figure 4 order (eagle3, dflash, orthrus), the other lossless methods in the registry's order
    (pld), any method the registry does not know, and the lossy ones last (diffusion); a vLLM method
    (`vllm-eagle3`) right after the project's method of the same name (`eagle3`); the labels of one method by
    their options, numbers as numbers (`orthrus:block_size=4`, then 8, then 16)."""
    methods = list(dict.fromkeys(methods))

    def rank(label: str):
        name = label.split(":", 1)[0]
        base = name.removeprefix(VLLM_PREFIX)
        if base in BASELINES:
            group, position = 0, BASELINES.index(base)
        elif base in DRAFT_ORDER:
            group, position = 1, DRAFT_ORDER.index(base)
        elif base not in REGISTRY_ORDER:
            group, position = 3, 0
        else:
            group, position = (4 if base in LOSSY else 2), REGISTRY_ORDER.index(base)
        return (group, position, base, name != base, natural_key(label))

    return sorted(methods, key=rank)


def method_colors(methods) -> dict[str, str]:
    """One colour per method for every figure of a report (matplotlib's default cycle, in method order)."""
    return {method: f"C{i % 10}" for i, method in enumerate(method_order(methods))}


CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:.85em}"
    "caption{font-weight:bold;text-align:left;padding:.3em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}"
    "th:first-child,td:first-child{text-align:left}"
    "td.prose{white-space:normal;text-align:left;min-width:24em;max-width:48em}"
    "img{max-width:100%;height:auto}figure{margin:1.5em 0}.note{color:#555;font-size:.85em}"
)
