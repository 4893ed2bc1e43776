"""The scorers that run programs: a pass means every test ran to its end (Python and C++), Pseudo2code as
LongProc scores it, LiveCodeBench where its tests are present; and AIME's answer forms under math-verify."""

from __future__ import annotations

import hashlib
import json

import pytest

from harness.scoring import ScorerConfigError, make_scorer
from harness.scoring.pseudo2code import extract_cpp
from harness.scoring.sandbox import compile_cpp, run_binary, run_python


@pytest.mark.parametrize(
    "gold, answer, correct",
    [
        ("025", "so the answer is $\\boxed{25}$.", True),
        ("025", "\\boxed{025}", True),
        (70, "\\boxed{70}", True),  # AIME 2025's answers are integers
        ("033", "\\boxed{33.0}", True),
        ("025", "\\boxed{\\text{25}}", True),
        ("025", "\\boxed{26}", False),
        ("025", "\\boxed{250}", False),
        ("204", "The answer is 204.", False),  # no box: not extracted
    ],
)
def test_aime_answers_under_math_verify(gold, answer, correct):
    assert make_scorer("math", {}).score({"answer": gold}, [answer]).correct is correct


# ------------------------------------------------------------------------------- ran to its end: Python


def test_a_python_program_that_exits_before_its_tests_is_a_failure_whatever_its_status():
    for early_exit in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "exit()"):
        result = run_python(f"{early_exit}\nassert False, 'the tests'\n")
        assert (result.status, result.reason) == ("fail", "exited with status 0 before its tests finished")
    finished = run_python("print('done')\n")
    assert finished.status == "pass" and finished.stdout.strip() == "done"  # the end marker is not shown


def test_humaneval_answer_that_exits_early_fails(data_dir):
    import gzip

    with gzip.open(data_dir / "code" / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        record = json.loads(f.readline())
    reference = {key: record[key] for key in ("prompt", "test", "entry_point")}
    cheat = "```python\nimport sys\nsys.exit(0)\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    score = make_scorer("humaneval", {}).score(reference, [cheat])
    assert (score.correct, score.status) == (False, "fail")
    assert score.detail["reason"] == "exited with status 0 before its tests finished"


# --------------------------------------------------------------------------------------- C++ and LongProc


def test_cpp_compiles_and_runs_in_the_sandbox():
    binary, compiled = compile_cpp(
        '#include <iostream>\nint main(){int a,b;std::cin>>a>>b;std::cout<<a+b<<"\\n";}\n'
    )
    assert binary is not None and compiled.status == "pass"
    result = run_binary(binary, "2 3\n")
    assert (result.status, result.stdout) == ("pass", "5\n")
    assert "rlimits" in result.isolation  # it ran confined
    _, broken = compile_cpp("int main( {\n")
    assert broken.status == "error" and "error" in broken.stderr_tail


@pytest.fixture(scope="module")
def pseudo2code(data_dir):
    records = json.loads(
        (data_dir / "code" / "longproc_pseudo_to_code" / "pseudo_to_code_0.5k.json").read_text()
    )
    record = records[0]  # 723A: read three numbers, print max - min
    return {"testcases": record["testcases"]}, "\n".join(record["code_lines"])


def cpp(code: str) -> str:
    return f"Here is the code.\n```cpp\n{code}\n```\n"


def test_pseudo2code_scores_as_longproc(pseudo2code):
    reference, solution = pseudo2code
    scorer = make_scorer("pseudo2code", {})
    right = scorer.score(reference, [cpp(solution)])
    assert (right.correct, right.status, right.detail["cases"]) == (True, "pass", 10)  # the first 10 cases
    assert scorer.score(reference, [cpp(solution).replace("```cpp", "```c++")]).correct  # c++ is cpp
    wrong = scorer.score(reference, [cpp(solution.replace("k = x[2] - x[0]", "k = x[2] + x[0]"))])
    assert (wrong.correct, wrong.status) == (False, "fail") and "wrong output" in wrong.detail["reason"]
    hangs = make_scorer("pseudo2code", {"timeout_s": 1.0}).score(
        reference, [cpp("int main() { while (true) {} }")]
    )
    assert (hangs.correct, hangs.status) == (False, "timeout")
    broken = scorer.score(reference, [cpp("int main() { return x; }")])
    assert (broken.correct, broken.detail["reason"]) == (False, "does not compile")
    assert "was not declared" in broken.detail["compiler"]
    unextracted = scorer.score(reference, ["int main() {}"])
    assert (unextracted.correct, unextracted.detail["extracted"]) == (False, False)


def test_pseudo2code_early_exit_fails_even_with_the_right_output(pseudo2code):
    reference, solution = pseudo2code
    crashes = solution.replace("return 0;", "abort();")  # prints the right answer, then dies
    score = make_scorer("pseudo2code", {}).score(reference, [cpp(crashes)])
    assert (score.correct, score.status) == (False, "fail") and "SIGABRT" in score.detail["reason"]
    exits = solution.replace("return 0;", "return 3;")
    assert make_scorer("pseudo2code", {}).score(reference, [cpp(exits)]).detail["reason"].endswith("status 3")


def test_longprocs_greedy_extraction():
    assert extract_cpp("a ```cpp\nint x;\n``` b ```cpp\nint y;\n``` c") == "\nint x;\n``` b ```cpp\nint y;\n"
    assert extract_cpp("```python\nx\n```") is None


def test_a_missing_compiler_is_an_error_before_the_run(monkeypatch):
    monkeypatch.setattr("harness.scoring.sandbox.shutil.which", lambda name: None)
    scorer = make_scorer("pseudo2code", {})  # a suite file still parses and lists without g++
    with pytest.raises(ScorerConfigError, match="g\\+\\+ is not on PATH.*apt-get install g\\+\\+"):
        scorer.check_ready()


# ---------------------------------------------------------------------------------------- LiveCodeBench


def write_tests(root, fname, inputs, outputs, fn_name=None) -> dict:
    folder = root / "code" / "livecodebench" / "tests"
    folder.mkdir(parents=True, exist_ok=True)
    content = json.dumps(
        {"input_output": json.dumps({"inputs": inputs, "outputs": outputs, "fn_name": fn_name})}
    )
    (folder / fname).write_text(content)
    return {"fname": fname, "md5": hashlib.md5(content.encode()).hexdigest()}


def python(code: str) -> str:
    return f"```python\n{code}\n```"


def test_livecodebench_stdin_and_functional_tests(tmp_path):
    scorer = make_scorer("livecodebench", {}, data_dir=tmp_path)
    stdin = write_tests(tmp_path, "1.json", ["2 3\n", "10 -4\n"], ["5\n", "6\n"])
    add = "a, b = map(int, input().split())\nprint(a + b)"
    assert scorer.score({"tests": stdin}, [python(add)]).status == "pass"
    assert scorer.score({"tests": stdin}, [python(add.replace("+", "*"))]).status == "fail"
    leetcode = write_tests(
        tmp_path, "2.json", ["[1, 2, 3]\n2", "[5]\n5"], ["true", "true"], fn_name="contains"
    )
    solution = (
        "class Solution:\n    def contains(self, nums: List[int], x: int) -> bool:\n        return x in nums"
    )
    assert scorer.score({"tests": leetcode}, [python(solution)]).correct is True
    wrong = scorer.score({"tests": leetcode}, [python(solution.replace("x in nums", "x not in nums"))])
    assert (wrong.correct, wrong.status) == (False, "fail")
    early = scorer.score({"tests": leetcode}, [python("import sys\nsys.exit(0)\n" + solution)])
    assert (early.correct, early.detail["reason"]) == (
        False,
        "exited with status 0 before its tests finished",
    )


def test_livecodebench_without_its_tests_is_unscored_and_says_why(tmp_path):
    scorer = make_scorer("livecodebench", {}, data_dir=tmp_path)
    missing = scorer.score({"tests": {"fname": "559.json", "md5": "x"}}, [python("print(1)")])
    assert (missing.correct, missing.status) == (None, "unscored") and "no test file" in missing.detail[
        "reason"
    ]
    tests = write_tests(tmp_path, "3.json", ["1\n"], ["1\n"])
    tampered = scorer.score({"tests": {**tests, "md5": "0" * 32}}, [python("print(1)")])
    assert tampered.status == "unscored" and "md5 mismatch" in tampered.detail["reason"]
    no_folder = make_scorer("livecodebench", {}).score({"tests": tests}, [python("print(1)")])
    assert no_folder.status == "unscored" and "no data folder" in no_folder.detail["reason"]
