"""Scorers: turn a model's answers to one suite item into a :class:`Score`.

A suite file names its scorer under ``[scoring]`` (``scorer = "math"``); every other key there is an
option of that scorer. Each scorer says which dataset fields it needs in an item's ``reference``.

    math_answers.py  MATH-style \\boxed{} answers and GSM8K numbers, checked with math-verify
    code.py          HumanEval and MBPP: the answer's code run against the tests in the sandbox
    pseudo2code.py   LongProc's pseudo_to_code: the answer's C++ compiled and run on the test cases
    livecodebench.py LiveCodeBench: stdin/stdout and LeetCode-style tests, where test files are present
    sandbox.py       untrusted code in a separate, resource-limited process (_sandbox_launcher.py)
    lengths.py       chat suites: no correctness, the answer's length
    base.py          what every scorer returns (Score) and is (Scorer)
"""

from __future__ import annotations

import dataclasses

from .base import Score, Scorer, ScorerConfigError

__all__ = ["Score", "Scorer", "ScorerConfigError", "make_scorer"]


# What the harness, not the suite file, gives a scorer that declares it: the data folder (or None).
INJECTED = ("data_dir",)


def make_scorer(name: str, options: dict, *, data_dir=None) -> Scorer:
    """Build the scorer ``name`` with the suite file's options; unknown names or options raise clearly."""
    registry = _registry()
    if name not in registry:
        raise ScorerConfigError(f"unknown scorer {name!r}; known scorers: {', '.join(sorted(registry))}")
    scorer_class = registry[name]
    fields = {f.name for f in dataclasses.fields(scorer_class) if f.init}
    allowed = fields - set(INJECTED)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ScorerConfigError(
            f"scorer {name!r} has no option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(sorted(allowed)) or 'none'}"
        )
    injected = {"data_dir": data_dir} if "data_dir" in fields else {}
    try:
        return scorer_class(**options, **injected)
    except ValueError as exc:
        raise ScorerConfigError(f"scorer {name!r}: {exc}") from exc


def _registry() -> dict[str, type]:
    # Imported here so that loading a suite does not pull in every scorer's dependencies up front.
    from .code import HumanEvalScorer, MbppScorer
    from .lengths import LengthScorer
    from .livecodebench import LiveCodeBenchScorer
    from .math_answers import Gsm8kScorer, MathScorer
    from .pseudo2code import Pseudo2codeScorer

    return {
        "math": MathScorer,
        "gsm8k": Gsm8kScorer,
        "humaneval": HumanEvalScorer,
        "mbpp": MbppScorer,
        "pseudo2code": Pseudo2codeScorer,
        "livecodebench": LiveCodeBenchScorer,
        "lengths": LengthScorer,
    }
