"""The tiny family's corpus: procedurally generated problems with checkable answers, plus real training text.

Three generators, each a pure function of a seeded `random.Random`, so any split can be regenerated:
* `math_problem`: multi-step arithmetic word problems (and bare expressions) with worked solutions ending in
  `\\boxed{answer}`;
* `code_problem`: small Python functions with their asserts, answered in a ```python block;
* `chat_exchange`: short templated conversations, one or two turns.

`heldout_*` give the evaluation problems (the tiny suites' data). They come from seeds disjoint from the
training seeds and any problem whose text also occurs in training is dropped, so nothing evaluated was seen.
Real text from the data folder is read only from training splits: GSM8K train, MATH train and MBPP tasks
601-974 (its train split). The CC BY-NC instruction sets there are deliberately not used.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

MATH_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_PREFIX = "You are an expert Python programmer, and here is your task: "

# Seeds: training documents use TRAIN_SEED + i, evaluation problems HELDOUT_SEED + i (never overlapping).
TRAIN_SEED = 0
HELDOUT_SEED = 10_000_000

NAMES = [
    "Ava",
    "Ben",
    "Cara",
    "Dan",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ian",
    "Jade",
    "Kai",
    "Lena",
    "Max",
    "Nora",
    "Omar",
    "Pia",
    "Raj",
    "Sara",
    "Tom",
    "Uma",
    "Vic",
    "Wen",
    "Yara",
    "Zack",
    "Mia",
    "Leo",
    "Ivy",
    "Noah",
]
ITEMS = [
    "apples",
    "marbles",
    "stickers",
    "books",
    "pencils",
    "cookies",
    "stamps",
    "cards",
    "shells",
    "coins",
    "balloons",
    "candies",
    "crayons",
    "buttons",
    "flowers",
    "toys",
    "rocks",
    "beads",
    "eggs",
    "nuts",
]
CONTAINERS = ["boxes", "bags", "packs", "jars", "baskets", "crates", "cans", "trays"]
PRONOUN = {
    n: (
        "She"
        if n
        in {
            "Ava",
            "Cara",
            "Fay",
            "Hana",
            "Jade",
            "Lena",
            "Nora",
            "Pia",
            "Sara",
            "Uma",
            "Wen",
            "Yara",
            "Mia",
            "Ivy",
        }
        else "He"
    )
    for n in NAMES
}


# ----------------------------------------------------------------------------------------------------- math


def _step(rng: random.Random, total: int, name: str, item: str) -> tuple[str, str, int]:
    """One story step applied to `total` -> (sentence, worked line, new total)."""
    he = PRONOUN[name]
    kinds = ["add", "mul_add", "sub", "double"]
    if total >= 4:
        kinds.append("div")
    kind = rng.choice(kinds)
    if kind == "add":
        b = rng.randint(2, 40)
        return (
            f"{he} finds {b} more {item}.",
            f"After finding {b} more, {name} has {total} + {b} = {total + b} {item}.",
            total + b,
        )
    if kind == "mul_add":
        n, m = rng.randint(2, 9), rng.randint(2, 9)
        box = rng.choice(CONTAINERS)
        return (
            f"{he} buys {n} {box} with {m} {item} in each.",
            f"The {box} hold {n} * {m} = {n * m} {item}, so {name} has {total} + {n * m} = {total + n * m} {item}.",
            total + n * m,
        )
    if kind == "sub" and total >= 3:
        b = rng.randint(1, total - 1)
        return (
            f"{he} gives {b} {item} to a friend.",
            f"After giving away {b}, {name} has {total} - {b} = {total - b} {item}.",
            total - b,
        )
    if kind == "div":
        divisors = [d for d in range(2, 10) if total % d == 0]
        if divisors:
            d = rng.choice(divisors)
            return (
                f"{he} splits them into {d} equal groups and keeps one group.",
                f"One group holds {total} / {d} = {total // d} {item}.",
                total // d,
            )
    return (
        f"Then the number of {item} doubles.",
        f"Doubling gives {total} * 2 = {total * 2} {item}.",
        total * 2,
    )


def math_problem(rng: random.Random) -> dict:
    """A word problem (three in four) or a bare expression, with a worked solution and the integer answer."""
    if rng.random() < 0.25:
        return _expression(rng)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    total = rng.randint(2, 40)
    sentences, lines = [f"{name} has {total} {item}."], [f"{name} starts with {total} {item}."]
    for _ in range(rng.randint(1, 3)):
        sentence, line, total = _step(rng, total, name, item)
        sentences.append(sentence)
        lines.append(line)
    sentences.append(f"How many {item} does {name} have now?")
    lines.append(f"The answer is \\boxed{{{total}}}.")
    return {"problem": " ".join(sentences), "solution": "\n".join(lines), "answer": str(total)}


def _expression(rng: random.Random) -> dict:
    value = rng.randint(2, 50)
    text, lines = str(value), []
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["+", "-", "*"] if value <= 30 else ["+", "-"])
        b = (
            rng.randint(2, 9)
            if op == "*"
            else rng.randint(1, 40 if op == "+" else value - 1 if value > 1 else 1)
        )
        new = value + b if op == "+" else value - b if op == "-" else value * b
        if new < 0:
            op, new = "+", value + b
        lines.append(f"{value} {op} {b} = {new}.")
        text = f"({text}) {op} {b}" if lines[:-1] and op == "*" else f"{text} {op} {b}"
        value = new
    lines.append(f"The answer is \\boxed{{{value}}}.")
    return {"problem": f"Calculate {text}.", "solution": "\n".join(lines), "answer": str(value)}


# ----------------------------------------------------------------------------------------------------- code

_FUNCTIONS = [
    # (name stem, description, body, argument generator, reference implementation)
    ("add_{k}", "returns x plus {k}", "return x + {k}", lambda r: r.randint(-20, 50), lambda x, k: x + k),
    (
        "times_{k}",
        "returns x multiplied by {k}",
        "return x * {k}",
        lambda r: r.randint(-9, 20),
        lambda x, k: x * k,
    ),
    ("minus_{k}", "returns x minus {k}", "return x - {k}", lambda r: r.randint(-20, 50), lambda x, k: x - k),
    (
        "is_multiple_of_{k}",
        "returns True if x is divisible by {k}, else False",
        "return x % {k} == 0",
        lambda r: r.randint(0, 60),
        lambda x, k: x % k == 0,
    ),
    (
        "sum_above_{k}",
        "returns the sum of the numbers in a list that are greater than {k}",
        "return sum(n for n in nums if n > {k})",
        lambda r: [r.randint(0, 20) for _ in range(r.randint(1, 5))],
        lambda xs, k: sum(n for n in xs if n > k),
    ),
    (
        "count_{k}",
        "returns how many times {k} appears in a list",
        "return nums.count({k})",
        lambda r: [r.randint(0, 5) for _ in range(r.randint(1, 6))],
        lambda xs, k: xs.count(k),
    ),
    (
        "scale_list_{k}",
        "returns a new list with every number multiplied by {k}",
        "return [n * {k} for n in nums]",
        lambda r: [r.randint(0, 9) for _ in range(r.randint(1, 4))],
        lambda xs, k: [n * k for n in xs],
    ),
    (
        "repeat_{k}",
        "returns the string s repeated {k} times",
        "return s * {k}",
        lambda r: r.choice(["ab", "x", "hi", "cat", "zz", "no"]),
        lambda s, k: s * k,
    ),
    (
        "first_{k}",
        "returns the first {k} characters of the string s",
        "return s[:{k}]",
        lambda r: r.choice(["python", "orange", "banana", "hello", "planet", "tiny"]),
        lambda s, k: s[:k],
    ),
    (
        "clip_{k}",
        "returns x, but at most {k}",
        "return min(x, {k})",
        lambda r: r.randint(0, 40),
        lambda x, k: min(x, k),
    ),
]
_ARG = {"x": "x", "nums": "nums", "s": "s"}


def code_problem(rng: random.Random) -> dict:
    """A one-line Python function with three asserts; the solution is a ```python block."""
    stem, description, body, make_arg, reference = rng.choice(_FUNCTIONS)
    k = rng.randint(2, 9)
    name = stem.format(k=k)
    arg = "nums" if "nums" in body else "s" if "s *" in body or "s[" in body else "x"
    code = f"def {name}({arg}):\n    {body.format(k=k)}"
    tests = []
    for _ in range(3):
        value = make_arg(rng)
        tests.append(f"assert {name}({value!r}) == {reference(value, k)!r}")
    task = f"Write a python function {name} that {description.format(k=k)}."
    return {
        "prompt": task,
        "test_list": tests,
        "test_imports": [],
        "code": code,
        "solution": f"```python\n{code}\n```",
    }


# ----------------------------------------------------------------------------------------------------- chat

_FACTS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Norway": "Oslo",
    "Greece": "Athens",
    "Chile": "Santiago",
    "India": "New Delhi",
}
_ANIMALS = {
    "cat": "meows",
    "dog": "barks",
    "cow": "moos",
    "duck": "quacks",
    "lion": "roars",
    "owl": "hoots",
    "sheep": "bleats",
    "horse": "neighs",
    "frog": "croaks",
    "bee": "buzzes",
}
_ACTIVITIES = [
    "studying",
    "sleeping well",
    "cooking",
    "running",
    "saving money",
    "learning a language",
    "writing",
    "gardening",
]
_TIPS = [
    "start small and be consistent",
    "set a clear goal for each day",
    "take short breaks",
    "keep notes of your progress",
    "ask a friend to join you",
    "plan ahead the night before",
    "remove distractions",
    "reward yourself after a good week",
    "focus on one thing at a time",
    "review what worked at the end of the week",
]


def _chat_turn(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(4)
    if kind == 0:
        country = rng.choice(list(_FACTS))
        return (f"What is the capital of {country}?", f"The capital of {country} is {_FACTS[country]}.")
    if kind == 1:
        animal = rng.choice(list(_ANIMALS))
        article = "an" if animal[0] in "aeiou" else "a"
        return (
            f"What sound does {article} {animal} make?",
            f"{article.title()} {animal} {_ANIMALS[animal]}.",
        )
    if kind == 2:
        activity, n = rng.choice(_ACTIVITIES), rng.randint(2, 4)
        tips = rng.sample(_TIPS, n)
        body = "\n".join(f"{i}. {t[0].upper()}{t[1:]}." for i, t in enumerate(tips, 1))
        return (f"Give me {n} tips for {activity}.", f"Here are {n} tips for {activity}:\n{body}")
    name = rng.choice(NAMES)
    return (f"Hello, my name is {name}.", f"Hello {name}! Nice to meet you. How can I help you today?")


def chat_exchange(rng: random.Random) -> dict:
    """One or two user turns with templated answers."""
    turns, answers = zip(*(_chat_turn(rng) for _ in range(rng.choice([1, 1, 2]))), strict=True)
    return {"turns": list(turns), "answers": list(answers)}


# ---------------------------------------------------------------------------------------------- formatting


def math_messages(problem: dict) -> list[dict]:
    return [
        {"role": "system", "content": ""},
        {"role": "user", "content": f"{problem['problem']}\n{MATH_SUFFIX}"},
    ]


def code_messages(problem: dict) -> list[dict]:
    tests = "\n".join(problem["test_list"])
    user = f"{CODE_PREFIX}{problem['prompt']} Your code should pass these tests:\n\n{tests}"
    return [{"role": "system", "content": ""}, {"role": "user", "content": user}]


def conversations(seed: int, count: int) -> Iterator[list[dict]]:
    """Training conversations (system, user, assistant, ...) in the mix 45% math, 25% code, 30% chat."""
    for i in range(count):
        rng = random.Random(seed + i)
        r = rng.random()
        if r < 0.45:
            p = math_problem(rng)
            yield math_messages(p) + [{"role": "assistant", "content": p["solution"]}]
        elif r < 0.70:
            p = code_problem(rng)
            yield code_messages(p) + [{"role": "assistant", "content": p["solution"]}]
        else:
            ex = chat_exchange(rng)
            msgs = [{"role": "system", "content": ""}]
            for turn, answer in zip(ex["turns"], ex["answers"], strict=True):
                msgs += [{"role": "user", "content": turn}, {"role": "assistant", "content": answer}]
            yield msgs


def real_conversations(data_dir: str | Path) -> dict[str, list[list[dict]]]:
    """Training splits of real data by source: "gsm8k" (GSM8K train), "math" (MATH train), "mbpp" (MBPP
    train, tasks 601-974)."""
    data_dir = Path(data_dir)
    out: dict[str, list[list[dict]]] = {"gsm8k": [], "math": [], "mbpp": []}
    for line in (data_dir / "math" / "gsm8k_train.jsonl").read_text().splitlines():
        r = json.loads(line)
        reasoning, answer = r["answer"].split("####")
        reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip()
        solution = f"{reasoning}\nThe answer is \\boxed{{{answer.strip().replace(',', '')}}}."
        out["gsm8k"].append(
            math_messages({"problem": r["question"]}) + [{"role": "assistant", "content": solution}]
        )
    for path in sorted((data_dir / "math" / "hendrycks_math").glob("*_train.jsonl")):
        for line in path.read_text().splitlines():
            r = json.loads(line)
            out["math"].append(
                math_messages({"problem": r["problem"]}) + [{"role": "assistant", "content": r["solution"]}]
            )
    for line in (data_dir / "code" / "mbpp" / "mbpp.jsonl").read_text().splitlines():
        r = json.loads(line)
        if 601 <= r["task_id"] <= 974:
            p = {"prompt": r["text"], "test_list": r["test_list"]}
            code = r["code"].replace("\r\n", "\n").strip()
            out["mbpp"].append(
                code_messages(p) + [{"role": "assistant", "content": f"```python\n{code}\n```"}]
            )
    return out


def tokenizer_training_text(data_dir: str | Path | None, count: int = 20_000) -> Iterator[str]:
    """Raw text for fitting the BPE: the generated mix plus the real training text."""
    for msgs in conversations(TRAIN_SEED, count):
        yield "\n".join(m["content"] for m in msgs)
    if data_dir is not None:
        for source in real_conversations(data_dir).values():
            for msgs in source:
                yield "\n".join(m["content"] for m in msgs)
        with gzip.open(Path(data_dir) / "instruct" / "hh_rlhf_harmless_base_test.jsonl.gz", "rt") as f:
            for _, line in zip(range(500), f, strict=False):
                yield json.loads(line)["chosen"]


# ---------------------------------------------------------------------------------------------- held out


def _training_user_messages(count: int) -> set[str]:
    return {m["content"] for msgs in conversations(TRAIN_SEED, count) for m in msgs if m["role"] == "user"}


def _heldout(kind: str, count: int, train_count: int) -> list[dict]:
    """Problems from the held-out seeds whose prompt (the user message) no training conversation contains."""
    make, messages = {"math": (math_problem, math_messages), "code": (code_problem, code_messages)}[kind]
    seen, out, i = _training_user_messages(train_count), [], 0
    while len(out) < count:
        p = make(random.Random(HELDOUT_SEED + i))
        i += 1
        user = messages(p)[1]["content"]
        if user not in seen:
            seen.add(user)
            out.append({"id": f"{kind}-{len(out)}", **p})
    return out


# How many training conversations train-tiny draws from `conversations`; held-out problems avoid all of them.
TRAIN_CONVERSATIONS = 40_000


def heldout_math(count: int = 200) -> list[dict]:
    """Evaluation word problems: `problem`, `answer` (an integer as text), `solution`."""
    return _heldout("math", count, TRAIN_CONVERSATIONS)


def heldout_code(count: int = 100) -> list[dict]:
    """Evaluation functions: `prompt`, `test_list`, `test_imports`, `code`."""
    return _heldout("code", count, TRAIN_CONVERSATIONS)


def heldout_chat(count: int = 60) -> list[dict]:
    """Evaluation conversations: `turns`, two user messages each (the second is answered after the model's
    own first answer). Chat is unscored and its templates are few, so these share their wording with
    training; they measure speed on chat-shaped text."""
    out = []
    for i in range(count):
        rng = random.Random(HELDOUT_SEED + i)
        out.append({"id": f"chat-{i}", "turns": [_chat_turn(rng)[0], _chat_turn(rng)[0]]})
    return out
