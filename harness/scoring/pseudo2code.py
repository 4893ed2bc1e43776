"""Pseudo2code (LongProc's `pseudo_to_code`): the answer's C++ compiled and run on the problem's test cases,
with LongProc's rules (longproc/spoc_evaluator.py, described in the data folder's MANIFEST.md):

1. ```` ```c++ ```` is read as ```` ```cpp ````; the code is the text between the first ```` ```cpp ```` and
   the last ```` ``` ```` (no such block: wrong, not extracted);
2. the fixed header below (the libraries the prompt says are included) goes in front, and the program is
   compiled with `g++ -std=c++11 -O` (a compile error: wrong);
3. it runs on the first 10 test cases, each input joined with newlines (plus one) on stdin, 3 s each;
4. it passes only if its stdout equals each case's output lines joined the same way, exactly, on every case;
   and, stricter than LongProc (which compares stdout alone), only if the program ended by itself with
   status 0 on every case: output printed before a crash or a non-zero exit is a failure, with the reason.

Every step runs in the sandbox (harness.scoring.sandbox). A missing g++ fails when the suite loads, before
any generation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .base import Score, ScorerConfigError
from .sandbox import CompilerMissingError, SandboxLimits, compile_cpp, cxx_compiler, run_binary

HEADER = "\n".join(
    [
        *(
            f"#include <{library}>"
            for library in (
                "cstdio",
                "iostream",
                "vector",
                "algorithm",
                "numeric",
                "cmath",
                "cstring",
                "set",
                "map",
                "queue",
                "stack",
                "list",
                "fstream",
                "climits",
                "cassert",
                "iomanip",
                "sstream",
                "bitset",
            )
        ),  # fmt: skip
        "using namespace std;",
        "",
    ]
)
CASES = 10  # LongProc runs the first 10 test cases only


def extract_cpp(answer: str) -> str | None:
    """The code between the first ```cpp and the last ``` (LongProc's greedy match), or None."""
    text = answer.replace("```c++", "```cpp")
    start = text.find("```cpp")
    if start < 0:
        return None
    body = text[start + len("```cpp") :]
    end = body.rfind("```")
    return body[:end] if end >= 0 else None


@dataclass(frozen=True)
class Pseudo2codeScorer:
    reference_fields = ("testcases",)
    timeout_s: float = 3.0
    cases: int = CASES

    def check_ready(self) -> None:
        try:
            cxx_compiler()
        except CompilerMissingError as e:
            raise ScorerConfigError(str(e)) from None

    def __post_init__(self):
        if not self.timeout_s > 0 or not (isinstance(self.cases, int) and self.cases >= 1):
            raise ValueError(f"timeout_s must be > 0 and cases >= 1, got {self.timeout_s!r}, {self.cases!r}")

    def score(self, reference: dict, outputs: list[str], tokenizer=None) -> Score:
        code = extract_cpp(outputs[-1])
        if code is None:
            return Score(False, "wrong", {"extracted": False, "reason": "no ```cpp block in the answer"})
        binary, compiled = compile_cpp(HEADER + code)
        detail = {"extracted": True, "code": code}
        if binary is None:
            reason = "does not compile" if compiled.status == "error" else f"compiler {compiled.status}"
            return Score(
                False, "wrong", {**detail, "reason": reason, "compiler": compiled.stderr_tail[-1000:]}
            )
        limits = SandboxLimits(wall_s=self.timeout_s, cpu_s=math.ceil(self.timeout_s))
        cases = reference["testcases"][: self.cases]
        for index, (input_lines, output_lines) in enumerate(cases):
            result = run_binary(binary, "\n".join(input_lines) + "\n", limits)
            expected = "\n".join(output_lines) + "\n"
            where = {**detail, "case": index, "cases": len(cases), **result.as_detail()}
            if result.status == "timeout":
                return Score(False, "timeout", {**where, "reason": f"test case {index}: {result.reason}"})
            if result.status != "pass":
                return Score(False, "fail", {**where, "reason": f"test case {index}: {result.reason}"})
            if result.stdout != expected:
                return Score(False, "fail", {**where, "reason": f"test case {index}: wrong output",
                                             "expected": expected[:500], "got": result.stdout[:500]})  # fmt: skip
        return Score(True, "pass", {**detail, "cases": len(cases)})
