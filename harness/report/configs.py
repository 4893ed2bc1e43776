"""Two runs' run.json side by side: what `orthrus-bench compare` says first.

`compare_configs` lists every configuration difference between BASE and NEW (harness.store.RunInfo: the
config `RunSpec.config()` hashes, the settings, the engine as resolved, the suites' and methods' own configs,
the checkpoints' weights, versions and hardware), grouped as GROUPS orders them. A difference that changes the
generated tokens (`Difference.tokens`: the model's weights, dtype, quantization, the effective max_new_tokens,
stop and sampling of a suite, the seed where anything samples, the suites, items and samples chosen, a
method's options) makes the comparison meaningless as a gate: τ, TPF and token identity would move for that
reason alone, so compare refuses it unless told `--allow-config-change`. How the runs ran (engine, batch
size, machine, software, warm-up) is listed but never refused: compare is how its effect is measured.

Checkpoints are compared by their weights' sha256 (run.json's `models`), not by where they lay: the same
drafter under another clone's path is the same drafter, so a committed baseline compares with a run made
anywhere. Timing is gated only between runs with one `Fingerprint` (the CPU or GPU model, torch's version,
the engine mode as resolved); `timing_not_gated` says why not otherwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from harness.store import OVERRIDES as STORE_OVERRIDES
from harness.store import RunInfo

from .runs import EMBEDDED_MODEL, Run

GROUPS = (
    "model",
    "dtype",
    "quantization",
    "methods",
    "suites",
    "lengths",
    "sampling",
    "samples/seed/items",
    "engine",
    "batch size",
    "machine",
    "software",
    "other settings",
)
# The group of each run option that overrides a suite's [generation] table (harness.store.OVERRIDES).
OVERRIDES = {key: "lengths" if key == "max_new_tokens" else "sampling" for key in STORE_OVERRIDES}
FLAGS = {"max_new_tokens": "--max-new-tokens", "top_k": "--top-k", "top_p": "--top-p"}
# Config keys read below; any other (a key added later) is listed under "other settings" as changing tokens.
CONFIG_KEYS = {"model", "dtype", "quantize", "methods", "suites", "device", *OVERRIDES}
CONFIG_KEYS |= {"limit", "ids", "samples", "seed"}
SETTINGS_GROUPS = {
    "engine": "engine",
    "tensor_parallel_size": "engine",
    "data_parallel_size": "engine",
    "batch_size": "batch size",
    "continuous": "batch size",
}
LONGEST_VALUE = 60  # characters of a value shown (a prompt template); longer ones are cut with "…"


class ConfigChangeError(ValueError):
    """BASE and NEW generated with different settings, compared without --allow-config-change (exit 2)."""


@dataclass(frozen=True)
class Difference:
    group: str  # one of GROUPS
    what: str  # the option or field, as the user knows it ("--max-new-tokens", "tiny-math max_new_tokens")
    base: str
    new: str
    tokens: bool  # changes the generated tokens (or τ, TPF): refused without --allow-config-change
    note: str = ""

    def __str__(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return f"{self.what} {self.base} → {self.new}{note}" + (" (changes tokens)" if self.tokens else "")


@dataclass
class ConfigComparison:
    """BASE's and NEW's configurations side by side; `missing` names the side(s) without a run.json."""

    differences: list[Difference] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def token_changes(self) -> list[Difference]:
        return [d for d in self.differences if d.tokens]

    def groups(self, tokens_only: bool = False) -> list[str]:
        shown = self.token_changes if tokens_only else self.differences
        return [g for g in GROUPS if any(d.group == g for d in shown)]

    def summary(self) -> str:
        """A clause for the first line: "" where the configurations are the same."""
        if self.missing:
            return f"configuration of {' and '.join(self.missing)} unknown (no run.json)"
        if self.differences:
            return f"the configurations differ ({', '.join(self.groups())})"
        return ""

    def lines(self) -> list[str]:
        """Every difference, one line per group, as markdown list items (or the sentence that says why none)."""
        if self.missing:
            sides = " and ".join(self.missing)
            return [
                f"{sides} {'has' if len(self.missing) == 1 else 'have'} no run.json: the configurations cannot "
                "be compared (nor the machines: timing is not gated)."
            ]
        if not self.differences:
            return ["The two runs' configurations are the same."]
        return [
            f"- {group}: " + "; ".join(str(d) for d in self.differences if d.group == group)
            for group in self.groups()
        ]

    def refusal(self, base: str, new: str) -> str:
        """Why compare refuses BASE and NEW, naming what changes their tokens and the flag."""
        # Each group that changes tokens, whole: the option given (--max-new-tokens) beside what it changed.
        changed = "; ".join(
            f"{group}: "
            + ", ".join(f"{d.what} {d.base} → {d.new}" for d in self.differences if d.group == group)
            for group in self.groups(tokens_only=True)
        )
        return "\n".join(
            [
                f"BASE {base} and NEW {new} were generated with different settings ({changed}): their tokens, τ "
                "and TPF would differ for that reason alone. Compare two runs of one configuration, or pass "
                "--allow-config-change to compare these anyway. Every difference:",
                *self.lines(),
            ]
        )


def compare_configs(base: Run, new: Run) -> ConfigComparison:
    missing = [side for side, run in (("BASE", base), ("NEW", new)) if run.info is None]
    if missing:
        return ConfigComparison(missing=missing)
    found = differences(base.info, new.info)
    order = {g: i for i, g in enumerate(GROUPS)}
    # Per group the options first (--max-new-tokens), then what follows from them (a suite's max_new_tokens).
    return ConfigComparison(sorted(found, key=lambda d: (order[d.group], not d.what.startswith("--"))))


def differences(a: RunInfo, b: RunInfo) -> list[Difference]:
    out: list[Difference] = []

    def add(group, what, x, y, tokens, note="", show=None) -> None:
        if x != y:
            show = show or value
            out.append(Difference(group, what, show(x), show(y), tokens, note))

    ca, cb = a.config, b.config
    model_differences(a, b, add)
    add("dtype", "--dtype", ca.get("dtype"), cb.get("dtype"), True)
    add("quantization", "--quantize", ca.get("quantize"), cb.get("quantize"), True, show=quantize_name)

    methods_a, methods_b = ca.get("methods") or [], cb.get("methods") or []
    add_only(add, "methods", "--methods", methods_a, methods_b, tokens=False, note="the others are compared")
    for label in [m for m in methods_a if m in methods_b]:
        options_a, options_b = method_options(a, label), method_options(b, label)
        for key in dict.fromkeys([*options_a, *options_b]):
            add("methods", f"{label} {key}", options_a.get(key), options_b.get(key), True)
        engine_a = a.methods.get(label, {}).get("engine_config")
        engine_b = b.methods.get(label, {}).get("engine_config")
        add("engine", f"{label}'s engine", engine_a, engine_b, False)

    suites_a, suites_b = ca.get("suites") or [], cb.get("suites") or []
    add_only(add, "suites", "--suite", suites_a, suites_b, tokens=True)
    common = [s for s in suites_a if s in suites_b]
    sampled = samples_anything(a, suites_a) or samples_anything(b, suites_b)
    for suite in common:
        suite_differences(a, b, suite, add)
    for key, group in OVERRIDES.items():
        # The override itself changes tokens only where a suite's effective value is unknown (no suite config).
        unknown = any(None in (a.generation(s)[key], b.generation(s)[key]) for s in common) or not common
        add(group, FLAGS.get(key, f"--{key}"), ca.get(key), cb.get(key), unknown, show=override_name)
        for suite in common:
            x, y = a.generation(suite)[key], b.generation(suite)[key]
            both_greedy = group == "sampling" and a.greedy(suite) and b.greedy(suite)
            if None not in (x, y):
                add(group, f"{suite} {key}", x, y, not both_greedy, "greedy in both" if both_greedy else "")

    add("samples/seed/items", "--limit", ca.get("limit"), cb.get("limit"), True)
    add("samples/seed/items", "--ids", ca.get("ids"), cb.get("ids"), True)
    add("samples/seed/items", "--samples", ca.get("samples", 1), cb.get("samples", 1), True)
    add("samples/seed/items", "--shard", a.shard, b.shard, True, show=shard_name)
    unsampled = "" if sampled else "greedy everywhere: the same tokens"
    add("samples/seed/items", "--seed", ca.get("seed", 0), cb.get("seed", 0), sampled, unsampled)
    add("samples/seed/items", "seed rule", a.seeds.get("rule"), b.seeds.get("rule"), sampled, unsampled)

    settings_a, settings_b = a.settings, b.settings
    add("engine", "engine as resolved", a.engine, b.engine, False)
    for key in dict.fromkeys([*settings_a, *settings_b]):
        group = SETTINGS_GROUPS.get(key, "other settings")
        flag = "telemetry" if key == "telemetry" else "--" + key.replace("_", "-")
        add(group, flag, settings_a.get(key), settings_b.get(key), False, show=setting_name(key))

    add("machine", "--device", ca.get("device"), cb.get("device"), False)
    ha, hb = a.hardware, b.hardware
    add("machine", "GPUs", gpu_names(ha), gpu_names(hb), False, show=lambda v: ", ".join(v) or "none")
    for key in dict.fromkeys([*ha, *hb]):
        if key != "gpus":
            add("machine", key.replace("_", " "), ha.get(key), hb.get(key), False)
    for key in dict.fromkeys([*a.versions, *b.versions]):
        add("software", key, a.versions.get(key), b.versions.get(key), False)

    for key in dict.fromkeys([*ca, *cb]):
        if key not in CONFIG_KEYS:
            add("other settings", key, ca.get(key), cb.get(key), True)
    return out


def model_differences(a: RunInfo, b: RunInfo, add) -> None:
    """The target by its weights where both runs recorded them (else by --model as given), and every drafter
    checkpoint both runs loaded by its weights."""
    weights_a, weights_b = checkpoint_weights(a), checkpoint_weights(b)
    given_a, given_b = a.config.get("model"), b.config.get("model")
    if "target" in weights_a and "target" in weights_b:
        same = weights_a["target"] == weights_b["target"]
        add("model", "--model", given_a, given_b, not same, "the same weights" if same else "", model_name)
        if given_a == given_b:
            add("model", "target weights", weights_a["target"], weights_b["target"], True)
    else:
        add("model", "--model", given_a, given_b, True, show=model_name)
    for role in [r for r in weights_a if r != "target" and r in weights_b]:
        add("model", f"{role} weights", weights_a[role], weights_b[role], True)


def checkpoint_weights(info: RunInfo) -> dict[str, str]:
    """role -> a short digest of the checkpoint's weight files (their names and sha256)."""
    out = {}
    for model in info.models:
        weights = model.get("weights")
        if weights:
            digest = hashlib.sha256(json.dumps(weights, sort_keys=True).encode()).hexdigest()
            out[model["role"]] = (
                "sha256 " + (next(iter(weights.values())) if len(weights) == 1 else digest)[:12]
            )
    return out


def method_options(info: RunInfo, label: str) -> dict:
    """A method's options as run.json records them, a checkpoint path replaced by its role: the weights
    behind it are compared by model_differences, wherever the checkout lies."""
    entry = info.methods.get(label, {})
    paths = {str(path): role for role, path in (entry.get("checkpoints") or {}).items()}
    weighed = checkpoint_weights(info)
    return {
        key: f"the {paths[v]} checkpoint"
        if isinstance(v, str) and v in paths and f"{label}:{paths[v]}" in weighed
        else v
        for key, v in (entry.get("config") or {}).items()
    }


def suite_config(info: RunInfo, suite: str) -> dict | None:
    return (info.suites.get(suite) or {}).get("config")


def suite_differences(a: RunInfo, b: RunInfo, suite: str, add) -> None:
    """A suite's own file (data, prompt, subset, scoring) and where its data came from; its [generation]
    table is compared as the effective settings (below)."""
    config_a, config_b = suite_config(a, suite), suite_config(b, suite)
    if config_a is not None and config_b is not None:
        flat_a, flat_b = flatten(config_a), flatten(config_b)
        for key in dict.fromkeys([*flat_a, *flat_b]):
            table = key.split(".")[0]
            if table == "generation" and key.split(".")[1] in OVERRIDES:
                continue  # compared as the effective value
            if table == "generation":
                group = "lengths"  # the stop strings
            elif table == "subset":
                group = "samples/seed/items"
            else:
                group = "suites"
            tokens = table not in ("description", "scoring")
            add(group, f"{suite} {key}", flat_a.get(key), flat_b.get(key), tokens)
    origin_a = (a.suites.get(suite) or {}).get("data_origin")
    origin_b = (b.suites.get(suite) or {}).get("data_origin")
    add("suites", f"{suite} data from", origin_a, origin_b, False)


def samples_anything(info: RunInfo, suites: list[str]) -> bool:
    """Whether any suite of the run samples (or may: unknown counts as yes)."""
    if not suites:
        return info.config.get("temperature") != 0
    return not all(info.greedy(s) for s in suites)


def add_only(add, group: str, flag: str, a: list, b: list, tokens: bool, note: str = "") -> None:
    """A list option (--methods, --suite) by what one run has and the other lacks; the order is no difference."""
    only_a, only_b = [x for x in a if x not in b], [x for x in b if x not in a]
    sides = [f"only in {side}: {', '.join(xs)}" for side, xs in (("BASE", only_a), ("NEW", only_b)) if xs]
    if sides:
        add(group, flag, a, b, tokens, "; ".join([*sides, *([note] if note else [])]))


def flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, v in config.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = v
    return out


def gpu_names(hardware: dict) -> list[str]:
    return [g.get("name", "?") for g in hardware.get("gpus") or []]


def value(v) -> str:
    """A value as one short line: lists joined, a string that is empty, padded or multi-line quoted."""
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
        text = ", ".join(map(str, v)) or "none"
    elif isinstance(v, (list, tuple, dict)) or (
        isinstance(v, str) and (v != v.strip() or "\n" in v or not v)
    ):
        text = json.dumps(v, sort_keys=True, ensure_ascii=False)
    else:
        text = str(v)
    return text if len(text) <= LONGEST_VALUE else text[: LONGEST_VALUE - 1] + "…"


def quantize_name(v) -> str:
    return "none (full precision)" if v is None else value(v)


def model_name(v) -> str:
    return EMBEDDED_MODEL if v is None else value(v)


def override_name(v) -> str:
    return "none (each suite's own)" if v is None else value(v)


def shard_name(v) -> str:
    return f"{v[0]}/{v[1]}" if isinstance(v, (list, tuple)) and len(v) == 2 else value(v)


def setting_name(key: str):
    if key == "batch_size":
        return lambda v: "none (one prompt at a time)" if v is None else value(v)
    return value


# ------------------------------------------------------------------------------------------------ timing


@dataclass(frozen=True)
class Fingerprint:
    """What timing depends on besides the code: the processor that decoded (the GPU model on a GPU, else the
    CPU model and torch's threads), torch's version and the engine mode as resolved."""

    processor: str | None
    torch: str | None
    engine: str | None

    def __str__(self) -> str:
        return (
            f"{self.processor or 'unknown processor'}, torch {self.torch or '?'}, {self.engine or '?'} engine"
        )


def fingerprint(run: Run) -> Fingerprint | None:
    """None without a run.json."""
    info = run.info
    if info is None:
        return None
    hardware = info.hardware or {}
    if str(info.config.get("device") or "cpu").startswith("cuda"):
        names = sorted(set(gpu_names(hardware)))
        processor = f"GPU {' + '.join(names)}" if names else None
    elif hardware.get("cpu"):
        threads = hardware.get("torch_threads")
        processor = f"CPU {hardware['cpu']}" + (f" ({threads} threads)" if threads else "")
    else:
        processor = None
    return Fingerprint(processor, (info.versions or {}).get("torch"), info.engine)


def timing_not_gated(base: Run, new: Run) -> tuple[str, str] | None:
    """None where both runs come from one machine and software (timing is gated); else (a short reason for
    the first line, the full one naming what differs)."""
    fa, fb = fingerprint(base), fingerprint(new)
    if fa is None or fb is None:
        sides = " and ".join(s for s, f in (("BASE", fa), ("NEW", fb)) if f is None)
        return f"no run.json in {sides}", f"{sides}: no run.json, so no machine to compare timing on"
    unknown = [
        f"{side}'s {part}"
        for side, f in (("BASE", fa), ("NEW", fb))
        for part in ("processor", "torch", "engine")
        if getattr(f, part) is None
    ]
    if unknown:
        return "machine unknown", f"run.json does not record {', '.join(unknown)}"
    parts = [
        (name, getattr(fa, part), getattr(fb, part))
        for part, name in (("processor", "the processor"), ("torch", "torch"), ("engine", "the engine"))
        if getattr(fa, part) != getattr(fb, part)
    ]
    if not parts:
        return None
    short = ", ".join(name for name, _, _ in parts) + (" differs" if len(parts) == 1 else " differ")
    detail = "; ".join(f"{name}: {x} → {y}" for name, x, y in parts)
    return short, f"BASE and NEW ran on different machines or software ({detail})"
