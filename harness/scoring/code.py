"""Scoring of generated code by running it against the dataset's tests in the sandbox."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .base import Score
from .sandbox import SandboxLimits, run_python

# A fenced block, closed or (when generation stopped at the token limit) running to the end.
_FENCED_BLOCK = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(answer: str, function_name: str | None = None) -> str:
    """The code in a chat answer: the first fenced block that defines ``function_name`` (else the first
    that defines any function, else the first block); the whole answer when it has no fenced block."""
    blocks = _FENCED_BLOCK.findall(answer)
    if not blocks:
        return answer
    patterns = [rf"^\s*def\s+{re.escape(function_name)}\s*\(" if function_name else None, r"^\s*def\s+\w+"]
    for pattern in filter(None, patterns):
        for block in blocks:
            if re.search(pattern, block, re.MULTILINE):
                return block
    return blocks[0]


def humaneval_program(prompt: str, code: str, test: str, entry_point: str) -> str:
    """HumanEval's program: the answer, the dataset's ``check`` function, and a call of it.

    An answer that defines the entry point is appended after the prompt, so the prompt's imports and
    helper functions stay available and the answer's definition replaces the prompt's stub; any other
    answer is taken as the continuation of the prompt's function body, as in the original completion
    setting."""
    defines_entry_point = re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE)
    solution = f"{prompt}\n{code}" if defines_entry_point else prompt + code
    return f"{solution}\n\n{test}\n\ncheck({entry_point})\n"


def mbpp_program(code: str, test_imports: list[str], test_list: list[str]) -> str:
    return "\n".join([*test_imports, code, "", *test_list]) + "\n"


@dataclass(frozen=True)
class _SandboxedTests:
    timeout_s: float = 10.0
    memory_mb: int = 1024

    def __post_init__(self):
        if (
            isinstance(self.timeout_s, bool)
            or not isinstance(self.timeout_s, (int, float))
            or self.timeout_s <= 0
        ):
            raise ValueError(f"timeout_s must be a positive number of seconds, not {self.timeout_s!r}")
        if isinstance(self.memory_mb, bool) or not isinstance(self.memory_mb, int) or self.memory_mb < 64:
            raise ValueError(f"memory_mb must be an integer of at least 64, not {self.memory_mb!r}")

    def _run(self, program: str, code: str) -> Score:
        limits = SandboxLimits(
            wall_s=self.timeout_s, cpu_s=math.ceil(self.timeout_s), memory_bytes=self.memory_mb << 20
        )
        result = run_python(program, limits)
        passed = result.status == "pass"
        return Score(correct=passed, status=result.status, detail={"code": code, **result.as_detail()})


@dataclass(frozen=True)
class HumanEvalScorer(_SandboxedTests):
    reference_fields = ("prompt", "test", "entry_point")

    def score(self, reference: dict, outputs: list[str], tokenizer=None) -> Score:
        code = extract_code(outputs[-1], reference["entry_point"])
        program = humaneval_program(reference["prompt"], code, reference["test"], reference["entry_point"])
        return self._run(program, code)


@dataclass(frozen=True)
class MbppScorer(_SandboxedTests):
    reference_fields = ("test_list", "test_imports")

    def score(self, reference: dict, outputs: list[str], tokenizer=None) -> Score:
        code = extract_code(outputs[-1])
        return self._run(mbpp_program(code, reference["test_imports"], reference["test_list"]), code)
