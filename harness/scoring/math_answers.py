"""Scoring of mathematical answers: MATH-500 with math-verify, GSM8K by its final number."""

from __future__ import annotations

import atexit
import json
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .base import Score

WORKER = Path(__file__).with_name("_math_verify_worker.py")
_BOXED_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed 5``) in ``text``, with
    nested braces matched; None if there is none or its braces never close."""
    start, command = max((text.rfind(command), command) for command in _BOXED_COMMANDS)
    if start < 0:
        return None
    rest = text[start + len(command) :]
    if rest.startswith(" "):
        # "\boxed 5": the argument is the next token, up to a space, "$" or the end.
        return re.split(r"[\s$]", rest.lstrip(), maxsplit=1)[0] or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for index, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:index]
    return None


class MathVerifier:
    """math-verify in a long-lived child process.

    math-verify's timeouts use ``signal.alarm`` and fail outside the main thread. The child runs every
    check in its own main thread, so they work whatever thread the harness scores from; on top of them a
    hard timeout here kills and restarts the child when a check hangs where no signal reaches (inside
    sympy's C-level big-number arithmetic, for instance).
    """

    def __init__(self, timeout_s: float = 30.0):
        self.timeout_s = timeout_s
        self._process: subprocess.Popen | None = None
        self._buffer = b""  # bytes read from the worker beyond the last complete reply
        self._lock = threading.Lock()

    def check(self, gold_latex: str, prediction_latex: str) -> dict:
        """``{"correct": bool, "gold": [...], "prediction": [...]}`` as parsed, or ``{"timeout": True}``."""
        request = json.dumps({"gold": gold_latex, "prediction": prediction_latex}, allow_nan=False) + "\n"
        with self._lock:
            process = self._running_process()
            process.stdin.write(request.encode())
            process.stdin.flush()
            line = self._read_line(process, time.monotonic() + self.timeout_s)
            if line is None:
                self._stop()
                return {"timeout": True}
            return json.loads(line)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _running_process(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            self._buffer = b""
        return self._process

    def _read_line(self, process: subprocess.Popen, deadline: float) -> bytes | None:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError("the math-verify worker exited unexpectedly")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


_shared_verifier: MathVerifier | None = None
_shared_lock = threading.Lock()


def shared_verifier() -> MathVerifier:
    global _shared_verifier
    with _shared_lock:
        if _shared_verifier is None:
            _shared_verifier = MathVerifier()
            atexit.register(_shared_verifier.close)
        return _shared_verifier


def _as_boxed_latex(answer: str) -> str:
    # math-verify's LaTeX extraction needs an environment; a box is the one the answers came from.
    return f"$\\boxed{{{answer}}}$"


@dataclass(frozen=True)
class MathScorer:
    """Gold from the dataset's ``answer``; prediction from the last ``\\boxed{}`` of the final answer."""

    reference_fields = ("answer",)

    def score(self, reference: dict, outputs: list[str], tokenizer=None) -> Score:
        gold = str(reference["answer"])
        extracted = last_boxed(outputs[-1])
        detail = {"gold": gold, "extracted": extracted}
        if extracted is None:
            return Score(correct=False, status="wrong", detail={**detail, "reason": "no \\boxed{} answer"})
        verdict = shared_verifier().check(_as_boxed_latex(gold), _as_boxed_latex(extracted))
        if verdict.get("timeout"):
            return Score(
                correct=False, status="timeout", detail={**detail, "reason": "math-verify timed out"}
            )
        detail.update(parsed_gold=verdict["gold"], parsed_prediction=verdict["prediction"])
        correct = verdict["correct"]
        return Score(correct=correct, status="correct" if correct else "wrong", detail=detail)


# A number, with optional thousands separators and decimals: "1,234.5", "-3", ".5".
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def final_number(text: str) -> Decimal | None:
    """The last number in ``text`` (LaTeX thousands separators such as ``1{,}000`` understood)."""
    cleaned = text.replace("{,}", ",").replace("\\,", "").replace("\\!", "")
    matches = _NUMBER.findall(cleaned)
    if not matches:
        return None
    try:
        return Decimal(matches[-1].replace(",", ""))
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class Gsm8kScorer:
    """Gold is the number after ``####`` in the dataset's answer; the prediction is the last number in the
    last ``\\boxed{}`` of the final answer or, without a box, the last number of the answer (as the
    field's "flexible extract" does). Compared as exact decimals, so 3 equals 3.0."""

    reference_fields = ("answer",)

    def score(self, reference: dict, outputs: list[str], tokenizer=None) -> Score:
        gold_text = str(reference["answer"]).rsplit("####", 1)[-1].strip()
        gold = final_number(gold_text)
        if gold is None:
            raise ValueError(f"GSM8K reference answer has no number after '####': {reference['answer']!r}")
        boxed = last_boxed(outputs[-1])
        predicted = final_number(boxed if boxed is not None else outputs[-1])
        detail = {
            "gold": str(gold),
            "extracted": None if predicted is None else str(predicted),
            "extracted_from": "boxed" if boxed is not None else "last number",
        }
        correct = predicted is not None and predicted == gold
        return Score(correct=correct, status="correct" if correct else "wrong", detail=detail)
