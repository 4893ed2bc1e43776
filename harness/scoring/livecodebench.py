"""LiveCodeBench code generation, scored where its test cases are present, unscored (saying why) otherwise.

Test files are those QwQ's `eval/data/process_data.py` writes, one per problem, `<global_id>.json` holding
`{"input_output": json.dumps({"inputs": [...], "outputs": [...], "fn_name": name or None})}`, in the data
folder's `code/livecodebench/tests/` (`tests_dir`); each is checked against the md5 the problem records. The
data folder shipped with the project has none (they exist only on the Hugging Face hub, where the private tests
are pickled: this scorer never unpickles anything), so there every item is unscored.

As LiveCodeBench's own runner (lcb_runner/evaluation/testing_util.py) does:
* stdin/stdout problems (no `fn_name`): the answer's last ```python block runs once per test, the input on
  stdin; it passes when its output equals the expected one line by line, each line stripped;
* LeetCode problems (`fn_name`): `Solution().<fn_name>(*args)` with the arguments one JSON value per input
  line, compared with the JSON-decoded expected output; all tests in one program that must run to its end.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .base import Score
from .sandbox import SandboxLimits, run_program, run_python

TESTS_DIR = "code/livecodebench/tests"
# What LiveCodeBench's runner puts in front of every answer (its `import_string`), so that starter code's
# type hints (List[int]) and the usual helpers resolve.
_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random", "statistics",
            "itertools", "functools", "operator", "io", "sys", "json")  # fmt: skip
IMPORTS = "\n".join(
    [f"from {m} import *" for m in (*_MODULES, "builtins", "typing")]
    + [f"import {m}" for m in _MODULES]
    + ["sys.setrecursionlimit(50000)", ""]
)
_PYTHON_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def last_python_block(answer: str) -> str | None:
    blocks = _PYTHON_BLOCK.findall(answer)
    return blocks[-1] if blocks else None


def same_output(got: str, expected: str) -> bool:
    return [line.strip() for line in got.strip().splitlines()] == [
        line.strip() for line in expected.strip().splitlines()
    ]


def functional_program(code: str, fn_name: str, inputs: list[str], outputs: list[str]) -> str:
    """The answer, then one assertion per test calling Solution().fn_name with the test's JSON arguments."""
    cases = json.dumps(
        [
            [[json.loads(arg) for arg in i.split("\n")], json.loads(o)]
            for i, o in zip(inputs, outputs, strict=True)
        ]
    )
    return (
        f"{IMPORTS}{code}\n\n"
        "import json as _json\n"
        f"for _index, (_args, _expected) in enumerate(_json.loads({cases!r})):\n"
        f"    _got = Solution().{fn_name}(*_args)\n"
        "    assert _got == _expected, f'test {_index}: expected {_expected!r}, got {_got!r}'\n"
    )


@dataclass(frozen=True)
class LiveCodeBenchScorer:
    reference_fields = ("tests",)
    tests_dir: str = TESTS_DIR  # relative to the data folder
    timeout_s: float = 6.0  # per test, as LiveCodeBench's runner
    data_dir: Path | None = None  # given by the harness: the suite's data folder

    def test_file(self, tests: dict) -> tuple[dict | None, str]:
        """The problem's tests and where they came from, or (None, why there are none)."""
        if self.data_dir is None:
            return None, "no data folder (--data-dir or ORTHRUS_DATA_DIR), so no test files"
        path = Path(self.data_dir) / self.tests_dir / tests["fname"]
        if not path.is_file():
            return None, f"no test file {path} (the data folder has no LiveCodeBench test cases)"
        if hashlib.md5(path.read_bytes()).hexdigest() != tests["md5"]:
            return None, f"{path} is not the test file this problem records (md5 mismatch)"
        return json.loads(json.loads(path.read_text())["input_output"]), str(path)

    def score(self, reference: dict, outputs: list[str], tokenizer=None) -> Score:
        tests, origin = self.test_file(reference["tests"])
        if tests is None:
            return Score(None, "unscored", {"reason": origin})
        code = last_python_block(outputs[-1])
        detail = {"tests": origin, "code": code}
        if code is None:
            return Score(False, "wrong", {**detail, "reason": "no ```python block in the answer"})
        inputs, expected = tests["inputs"], tests["outputs"]
        if tests.get("fn_name"):
            wall = min(self.timeout_s * len(inputs), 120.0)
            limits = SandboxLimits(wall_s=wall, cpu_s=math.ceil(wall))
            result = run_python(functional_program(code, tests["fn_name"], inputs, expected), limits)
            return Score(result.status == "pass", result.status, {**detail, **result.as_detail()})
        limits = SandboxLimits(wall_s=self.timeout_s, cpu_s=math.ceil(self.timeout_s))
        for index, (stdin, want) in enumerate(zip(inputs, expected, strict=True)):
            program = {"program.py": (IMPORTS + code).encode()}
            result = run_program(
                [sys.executable, "-I", "-B", "program.py"], program, limits, stdin=stdin.encode()
            )
            if result.status == "timeout":
                return Score(False, "timeout", {**detail, "case": index, **result.as_detail()})
            if result.status != "pass" or not same_output(result.stdout, want):
                reason = result.reason if result.status != "pass" else "wrong output"
                return Score(False, "fail", {**detail, "case": index, **result.as_detail(), "reason": reason})
        return Score(True, "pass", {**detail, "cases": len(inputs)})
