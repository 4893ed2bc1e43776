"""The lm-eval model `orthrus`: local gsm8k / minerva_math500 tasks run offline from the data folder, the
Orthrus decoder answers exactly as AR under greedy decoding, and likelihoods come from the AR view."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest
import torch
from conftest import VOCAB, random_model
from lm_eval.api.instance import Instance

from harness.lm_eval.adapter import OrthrusLM, task_manager
from harness.lm_eval.tasks.utils import minerva_process_results
from harness.paths import DEFAULT_MODEL
from harness.run.seeds import generation_seed
from orthrus_core.checkpoint import save_model
from orthrus_core.params import SamplingParams
from orthrus_core.training.tiny_tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def offline(monkeypatch, data_dir):
    monkeypatch.setenv("ORTHRUS_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory, data_dir) -> Path:
    """A random two-layer Orthrus model with a small BPE tokenizer fitted on GSM8K questions."""
    directory = tmp_path_factory.mktemp("micro")
    with open(data_dir / "math" / "gsm8k_train.jsonl") as f:
        questions = [json.loads(line)["question"] for line in itertools.islice(f, 300)]
    tokenizer = train_tokenizer(questions, VOCAB, directory)
    save_model(random_model(eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>")), directory)
    return directory


def first_record(path: Path) -> dict:
    with open(path) as f:
        return json.loads(f.readline())


def evaluate(directory: Path, method: str, task: str, **kwargs) -> tuple[dict, OrthrusLM]:
    model = OrthrusLM(pretrained=str(directory), method=method, device="cpu", max_gen_toks=24)
    results = lm_eval.simple_evaluate(
        model=model,
        tasks=[task],
        task_manager=task_manager(include_defaults=False),
        log_samples=True,
        **kwargs,
    )
    return results, model


def test_gsm8k_offline_decoders_answer_as_ar(micro_model, data_dir):
    methods = ("ar", "orthrus", "pld:max_ngram=2")  # any method spec of the registry
    by_method = {m: evaluate(micro_model, m, "gsm8k", limit=2, num_fewshot=1) for m in methods}
    samples = {m: r["samples"]["gsm8k"] for m, (r, _) in by_method.items()}
    first_question = first_record(data_dir / "math" / "gsm8k_test.jsonl")["question"]
    assert samples["ar"][0]["doc"]["question"] == first_question
    for lossless in methods[1:]:
        assert [s["resps"] for s in samples[lossless]] == [s["resps"] for s in samples["ar"]]
    assert "exact_match,strict-match" in by_method["orthrus"][0]["results"]["gsm8k"]
    orthrus_model = by_method["orthrus"][1]
    assert all(g.accepted for g in orthrus_model.generations)  # the Orthrus decoder ran: verify cycles
    assert not any(g.accepted for g in by_method["ar"][1].generations)


def test_minerva_math500_from_the_command_line(micro_model, data_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "harness.lm_eval",
        "--model",
        "orthrus",
        "--model_args",
        f"pretrained={micro_model},method=orthrus,max_gen_toks=16",
        "--tasks",
        "minerva_math500",
        "--limit",
        "1",
        "--log_samples",
        "--output_path",
        str(tmp_path),
    ]
    subprocess.run(command, check=True, env=env, cwd=tmp_path, capture_output=True, timeout=300)
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    assert {"exact_match,none", "math_verify,none"} <= set(results["results"]["minerva_math500"])
    sample = first_record(next(tmp_path.rglob("samples_minerva_math500_*.jsonl")))
    assert sample["doc"]["problem"] == first_record(data_dir / "math" / "math500_test.jsonl")["problem"]
    assert (
        sample["arguments"]["gen_args_0"]["arg_0"].count("Problem:") == 5
    )  # the 4 Minerva shots + the question


def test_minerva_scoring_reads_the_final_answer_line():
    doc = {"answer": "\\frac{1}{2}", "solution": "So the answer is $\\boxed{\\frac{1}{2}}$."}
    right = "We get $x = 0.5$.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct."
    wrong = "We get $x = 2$.\nFinal Answer: The final answer is $2$. I hope it is correct."
    assert minerva_process_results(doc, [right])["exact_match"] == 1
    assert minerva_process_results(doc, [wrong]) == {"exact_match": 0, "math_verify": 0}


def test_loglikelihood_is_the_ar_views(micro_model):
    lm = OrthrusLM(pretrained=str(micro_model), method="orthrus", device="cpu")
    context, continuation = "Question: Tom has 3 apples and buys", " 4 more apples."
    context_ids, continuation_ids = lm._encode_pair(context, continuation)
    # Reference: step-by-step AR decoding through the KV cache, a different path from the one-pass score.
    model = lm.model
    cache = model.new_cache(len(context_ids) + len(continuation_ids))
    logits = model(torch.tensor([context_ids]), 0, cache)[0, -1]
    cache.length = len(context_ids)
    expected, greedy = 0.0, True
    for token in continuation_ids:
        expected += torch.log_softmax(logits.float(), -1)[token].item()
        greedy &= int(logits.argmax()) == token
        logits = model(torch.tensor([[token]]), cache.length, cache)[0, -1]
        cache.length += 1
    requests = [Instance("loglikelihood", {}, (context, continuation), 0)]
    ((logprob, is_greedy),) = lm.loglikelihood(requests)
    assert logprob == pytest.approx(expected, abs=1e-3)
    assert is_greedy == greedy
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (continuation,), 0)])
    ((from_empty, _),) = lm.loglikelihood([Instance("loglikelihood", {}, ("", continuation), 0)])
    assert rolling == pytest.approx(from_empty, abs=1e-4)


def test_gsm8k_on_the_tiny_family():
    by_method = {m: evaluate(DEFAULT_MODEL, m, "gsm8k", limit=2, num_fewshot=0) for m in ("ar", "orthrus")}
    samples = {m: r["samples"]["gsm8k"] for m, (r, _) in by_method.items()}
    assert [s["resps"] for s in samples["orthrus"]] == [s["resps"] for s in samples["ar"]]
    assert all(g.accepted for g in by_method["orthrus"][1].generations)


def test_sampled_generations_are_seeded_per_document_and_repeat(micro_model):
    """Each generation's seed is hashed from the base seed, the task's document and the repeat (as in a run),
    so a document's answers do not depend on where lm-eval put its request, and repeats are distinct draws."""
    lm = OrthrusLM(pretrained=str(micro_model), method="orthrus", device="cpu", seed=7)
    options = {"until": [], "temperature": 1.0, "do_sample": True, "max_gen_toks": 12}

    def request(doc_id, context):
        return Instance("generate_until", {}, (context, options), 0, ("gsm8k", doc_id, 2))

    first, second = request(0, "Question: 1 + 1?"), request(1, "Question: 2 + 2?")
    answers = lm.generate_until([first, first, second])  # lm-eval lists a request once per repeat
    assert lm.generate_until([second, first, first]) == [answers[2], answers[0], answers[1]]
    prompt = lm.tok_encode("Question: 1 + 1?")
    for repeat in (0, 1):
        expected = lm.decoder.generate(
            prompt, 12, SamplingParams(1.0), seed=generation_seed(7, "gsm8k/0", repeat, 0)
        )
        assert lm.tokenizer.decode(expected.tokens, skip_special_tokens=True) == answers[repeat]
