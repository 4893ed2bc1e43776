"""What every page and figure of a report shares: the method order and colours, the temperature labels, the
CSS."""

from __future__ import annotations

# Figure 4 of the paper orders the drafting methods EAGLE-3, DFlash, Orthrus; other methods follow.
DRAFT_ORDER = ["eagle3", "dflash", "orthrus"]


def temperature_label(t: float) -> str:
    return f"T={t:g}"


def method_order(methods) -> list[str]:
    """Baselines first, then the drafting methods in the paper's Figure 4 order, then the rest; a vLLM method
    (`vllm-eagle3`) right after the project's method of the same name (`eagle3`)."""
    methods = list(dict.fromkeys(methods))

    def rank(label: str):
        name = label.split(":", 1)[0]
        base = name.removeprefix("vllm-")
        engine = name != base
        if base in ("ar", "ar-hf"):
            return (0, base, engine, label)
        if base in DRAFT_ORDER:
            return (1, DRAFT_ORDER.index(base), engine, label)
        return (2, base, engine, label)

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
