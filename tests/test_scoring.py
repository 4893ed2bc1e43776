"""Scorers on known-correct, known-wrong and equivalent answers."""

import gzip
import json
import threading

import pytest

from harness.scoring import Score, make_scorer
from harness.scoring.code import extract_code
from harness.scoring.math_answers import MathVerifier, final_number, last_boxed


def math_score(gold: str, answer: str) -> Score:
    return make_scorer("math", {}).score({"answer": gold}, [answer])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("the answer is \\boxed 5$.", "5"),
        ("\\fbox{7}", "7"),
        ("no box here: 42", None),
        ("cut off \\boxed{\\frac{1}{", None),
    ],
)
def test_last_boxed_extracts_the_final_boxed_expression(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("gold", "prediction"),
    [
        ("\\frac{1}{2}", "0.5"),
        ("0.5", "\\frac12"),
        ("3", "3.0"),
        ("[2, 5)", "[2,5)"),
        ("(-\\infty, 2] \\cup [5, \\infty)", "(-\\infty,2]\\cup[5,\\infty)"),
        ("10\\text{ cm}", "10"),
        ("15\\mbox{ cm}^2", "15"),
        ("90^\\circ", "90"),
        ("30", "30^{\\circ}"),
        ("\\text{Evelyn}", "\\text{Evelyn}"),
        ("\\dfrac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"),
        ("x^2+2x+1", "(x+1)^2"),
        ("\\$18.90", "18.90"),
        (
            "\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}",
            "\\begin{pmatrix}-\\frac{1}{3}\\\\\\frac{2}{3}\\end{pmatrix}",
        ),
    ],
)
def test_math_accepts_equivalent_forms(gold, prediction):
    score = math_score(gold, f"Reasoning... so the answer is $\\boxed{{{prediction}}}$.")
    assert (score.correct, score.status) == (True, "correct"), score.detail
    assert score.detail["extracted"] == prediction


@pytest.mark.parametrize(
    ("gold", "prediction"),
    [
        ("\\frac{1}{2}", "\\frac{1}{3}"),
        ("3", "4"),
        ("(2, 5]", "[2, 5)"),
        ("10", "10.001"),
        ("90^\\circ", "45^\\circ"),
        ("\\text{Evelyn}", "\\text{Navin}"),
    ],
)
def test_math_rejects_wrong_answers(gold, prediction):
    score = math_score(gold, f"$\\boxed{{{prediction}}}$")
    assert (score.correct, score.status) == (False, "wrong"), score.detail


def test_math_uses_only_the_last_box_and_needs_one():
    assert math_score("5", "\\boxed{4}, no wait: \\boxed{5}").correct is True
    assert math_score("5", "\\boxed{5}, no wait: \\boxed{4}").correct is False
    unboxed = math_score("5", "The answer is 5.")
    assert (unboxed.correct, unboxed.status, unboxed.detail["reason"]) == (
        False,
        "wrong",
        "no \\boxed{} answer",
    )


def test_math_scoring_works_outside_the_main_thread():
    results = []
    worker = threading.Thread(target=lambda: results.append(math_score("\\frac{1}{2}", "\\boxed{0.5}")))
    worker.start()
    worker.join()
    assert results[0].correct is True


def test_math_verifier_reports_a_hang_as_timeout_and_recovers():
    verifier = MathVerifier(timeout_s=0.01)  # shorter than the worker takes to start
    try:
        assert verifier.check("$\\boxed{1}$", "$\\boxed{1}$") == {"timeout": True}
        verifier.timeout_s = 60
        assert verifier.check("$\\boxed{1}$", "$\\boxed{1}$")["correct"] is True
    finally:
        verifier.close()


@pytest.mark.parametrize(
    ("answer", "correct"),
    [
        ("She makes 9 * 2 = $18 a day. \\boxed{18}", True),
        ("\\boxed{18.0}", True),
        ("\\boxed{\\$18}", True),
        ("\\boxed{18 \\text{ dollars}}", True),
        ("16 - 3 - 4 = 9 eggs, sold for $2 each: 18", True),  # no box: the last number
        ("\\boxed{18} ... I got 20 by mistake", True),  # a box wins over later numbers
        ("\\boxed{17}", False),
        ("I do not know.", False),
    ],
)
def test_gsm8k_compares_the_final_number_with_the_gold(answer, correct):
    reference = {"answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 18"}
    score = make_scorer("gsm8k", {}).score(reference, [answer])
    assert score.correct is correct, score.detail
    assert score.detail["gold"] == "18"


def test_gsm8k_reads_thousands_separators_and_negative_numbers():
    scorer = make_scorer("gsm8k", {})
    assert scorer.score({"answer": "... #### 1,080"}, ["\\boxed{1{,}080}"]).correct is True
    assert scorer.score({"answer": "... #### 1080"}, ["so \\$1,080 in total"]).correct is True
    assert scorer.score({"answer": "... #### -3"}, ["\\boxed{-3}"]).correct is True
    assert scorer.score({"answer": "... #### -3"}, ["\\boxed{3}"]).correct is False
    assert final_number("no digits") is None


def test_extract_code_prefers_the_block_defining_the_function():
    answer = (
        "Usage:\n```python\nprint(add(1, 2))\n```\n"
        "Solution:\n```python\ndef add(a, b):\n    return a + b\n```\n"
    )
    assert extract_code(answer, "add") == "def add(a, b):\n    return a + b\n"
    assert extract_code(answer) == "def add(a, b):\n    return a + b\n"
    assert extract_code("```py\nx = 1\n") == "x = 1\n", "a block cut off at the token limit still counts"
    assert extract_code("def add(a, b): return a + b") == "def add(a, b): return a + b"


@pytest.fixture(scope="module")
def humaneval_records(data_dir):
    with gzip.open(data_dir / "code" / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f][:3]


def humaneval_reference(record):
    return {key: record[key] for key in ("prompt", "test", "entry_point")}


def test_humaneval_canonical_solutions_pass_as_completion_and_as_chat_answer(humaneval_records):
    scorer = make_scorer("humaneval", {})
    for record in humaneval_records:
        completion = scorer.score(humaneval_reference(record), [record["canonical_solution"]])
        assert completion.status == "pass", completion.detail
        solution = record["prompt"] + record["canonical_solution"]
        chat = f"Here it is:\n```python\n{solution}```\nIt works because..."
        assert scorer.score(humaneval_reference(record), [chat]).correct is True


def test_humaneval_wrong_broken_and_hanging_answers(humaneval_records):
    record = humaneval_records[0]  # has_close_elements
    reference = humaneval_reference(record)
    signature = "def has_close_elements(numbers, threshold):\n"
    wrong = make_scorer("humaneval", {}).score(reference, [f"```python\n{signature}    return False\n```"])
    assert (wrong.correct, wrong.status) == (False, "fail")
    assert "AssertionError" in wrong.detail["stderr_tail"]
    broken = make_scorer("humaneval", {}).score(
        reference, [f"```python\n{signature}    return numbers[\n```"]
    )
    assert (broken.status, broken.correct) == ("error", False)
    assert broken.detail["reason"].startswith("SyntaxError")
    hanging = make_scorer("humaneval", {"timeout_s": 1.0}).score(
        reference, [f"```python\n{signature}    while True:\n        pass\n```"]
    )
    assert (hanging.status, hanging.correct) == ("timeout", False)


def test_mbpp_runs_the_asserts_with_their_imports(data_dir):
    records = json.loads((data_dir / "code" / "mbpp" / "sanitized-mbpp.json").read_text())
    record = next(r for r in records if r["test_imports"])  # a task whose tests need an import
    reference = {"test_list": record["test_list"], "test_imports": record["test_imports"]}
    scorer = make_scorer("mbpp", {})
    assert scorer.score(reference, [f"```python\n{record['code']}\n```"]).status == "pass"
    function_name = record["code"].split("def ", 1)[1].split("(", 1)[0]
    wrong = scorer.score(reference, [f"```python\ndef {function_name}(*args):\n    return None\n```"])
    assert wrong.status in {"fail", "error"} and wrong.correct is False
    assert wrong.detail["stderr_tail"]


def test_length_scorer_counts_without_judging():
    score = make_scorer("lengths", {}).score({}, ["one two three", "four"])
    assert score == Score(correct=None, status="unscored", detail={"chars": [13, 4], "words": [3, 1]})
