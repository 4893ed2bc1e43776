"""Offline data and scoring for the local lm-eval task configs in this folder.

The datasets come from the project's data folder ($ORTHRUS_DATA_DIR, laid out like shared/data; see its
MANIFEST.md), or for tiny_math from the tiny family's generator, so no task touches the Hugging Face Hub.
MATH-500 answers are checked with math-verify in the harness's own worker process
(harness.scoring.math_answers), because lm-eval's stock minerva_math utilities insist on antlr4 4.11 while
math-verify here runs on 4.13.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets

from harness.scoring.math_answers import shared_verifier
from harness.suites.data import DatasetUnavailableError, resolve_data_dir


def _jsonl(relative: str) -> datasets.Dataset:
    data_dir = resolve_data_dir(None)
    if data_dir is None:
        raise DatasetUnavailableError("set ORTHRUS_DATA_DIR to the data folder (laid out like shared/data)")
    path = Path(data_dir) / relative
    with open(path) as f:
        return datasets.Dataset.from_list([json.loads(line) for line in f if line.strip()])


def gsm8k_dataset(**_metadata) -> datasets.DatasetDict:
    return datasets.DatasetDict(
        {"train": _jsonl("math/gsm8k_train.jsonl"), "test": _jsonl("math/gsm8k_test.jsonl")}
    )


def math500_dataset(**_metadata) -> datasets.DatasetDict:
    return datasets.DatasetDict({"test": _jsonl("math/math500_test.jsonl")})


def tiny_math_dataset(**_metadata) -> datasets.DatasetDict:
    """The tiny-math suite's 200 held-out problems (generated, so no data folder is needed)."""
    from orthrus_core.training.tiny_corpus import heldout_math

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(heldout_math(200))})


def minerva_doc_to_text(doc: dict) -> str:
    return "Problem:\n" + doc["problem"] + "\n\nSolution:"


# The four Minerva exemplars of lm-eval's minerva_math tasks (lm_eval/tasks/minerva_math/utils.py, MIT).
def minerva_fewshot_samples() -> list[dict]:
    return [
        {
            "problem": "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
            "solution": "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.\nFinal Answer: The final answer is $[2,5)$. I hope it is correct.",
            "few_shot": "1",
        },
        {
            "problem": "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
            "solution": "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = \\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct.",
            "few_shot": "1",
        },
        {
            "problem": "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many times must Terrell lift them in order to lift the same total weight?",
            "solution": "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of $2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\nFinal Answer: The final answer is $16$. I hope it is correct.",
            "few_shot": "1",
        },
        {
            "problem": "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is nonzero.",
            "solution": "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\nFinal Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct.",
            "few_shot": "1",
        },
    ]


# Minerva's answer line, lm-eval's get_unnormalized_answer pattern; the closing sentence is appended to the
# generation so that an answer line cut off by the token limit or a stop string still reads.
FINAL_ANSWER = re.compile(r"Final Answer: The final answer is(.*?). I hope it is correct.")


def minerva_process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """exact_match: the "Final Answer" line against the dataset's answer; math_verify: the whole generation
    against the whole reference solution (lm-eval's definition). Both judged by math-verify."""
    generation = results[0]
    verifier = shared_verifier()
    match = FINAL_ANSWER.search(generation + " I hope it is correct.")
    exact = False
    if match:
        stated = match.group(1).strip().strip("$")
        exact = verifier.check(f"$\\boxed{{{doc['answer']}}}$", f"$\\boxed{{{stated}}}$").get(
            "correct", False
        )
    whole = verifier.check(doc["solution"], generation).get("correct", False)
    return {"exact_match": int(exact), "math_verify": int(whole)}
