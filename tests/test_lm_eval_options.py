"""The lm-eval model `orthrus` refuses what it cannot do (unknown model_args, batch sizes its method cannot
decode, a device that is not here, bad generation kwargs), honours lm-eval's batch_size through the batched
decode loop with the generations of batch size 1, always keeps the offline task configs on the include path,
and answers as lm-eval's own `hf` model does on the embedded tiny family."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest
import torch
from lm_eval.api.instance import Instance

from harness.lm_eval import adapter
from harness.lm_eval.adapter import (
    OrthrusLM,
    check_model_args,
    merge_model_args,
    model_arg_names,
    task_manager,
)
from harness.methods import BATCHED
from harness.options import OptionError
from harness.paths import default_model

REPO = Path(__file__).resolve().parents[1]
# lm-eval's `hf` model on the embedded tiny family as the orthrus model loads it: float32 on the CPU, Qwen3
# non-thinking chat template (the orthrus model's think=false). It ignores the checkpoint's diffusion view.
HF_ARGS = {"pretrained": str(default_model()), "dtype": "float32", "enable_thinking": False}
# Per task: two documents, short generations (tiny_math answers end on <|im_end|>; gsm8k's raw prompts run to
# the length limit or the "Question:" stop string), and the methods compared with hf (the existing tests hold
# orthrus to ar on gsm8k).
TASKS = {
    "tiny_math": dict(limit=2, apply_chat_template=True),
    "gsm8k": dict(limit=2, num_fewshot=0, gen_kwargs="max_gen_toks=16"),
}
METHODS = {"tiny_math": ("ar", "orthrus"), "gsm8k": ("ar",)}


@pytest.fixture(scope="module", autouse=True)
def offline(data_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORTHRUS_DATA_DIR", str(data_dir))
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def tasks():
    return task_manager(include_defaults=False)


def evaluate(tasks, task: str, model: str, model_args: dict, **kwargs) -> dict:
    return lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=[task],
        task_manager=tasks,
        log_samples=True,
        device="cpu",
        **{**TASKS[task], **kwargs},
    )


def responses(results: dict, task: str) -> list:
    """Per document and filter: the generation and what the filter made of it."""
    return [(s["doc_id"], s["filter"], s["resps"], s["filtered_resps"]) for s in results["samples"][task]]


def metrics(results: dict, task: str) -> dict:
    return {k: v for k, v in results["results"][task].items() if k != "alias"}


@pytest.fixture(scope="module")
def runs(tasks) -> dict:
    """Each task through lm-eval's hf model and the orthrus model's methods at batch size 1."""
    out = {}
    for task in TASKS:
        out[task, "hf"] = evaluate(tasks, task, "hf", HF_ARGS, batch_size=1)
        for method in METHODS[task]:
            out[task, method] = evaluate(tasks, task, "orthrus", {"method": method})
    return out


@pytest.mark.parametrize("task", TASKS)
def test_greedy_generations_and_metrics_match_lm_evals_hf_model(runs, task):
    reference = runs[task, "hf"]
    assert len({s["doc_id"] for s in reference["samples"][task]}) == TASKS[task]["limit"]
    for method in METHODS[task]:
        assert responses(runs[task, method], task) == responses(reference, task), method
        assert metrics(runs[task, method], task) == metrics(reference, task), method
    if task == "tiny_math":  # the tiny family answers these: the comparison covers real answers and EOS stops
        assert metrics(reference, task)["exact_match,boxed"] > 0


def test_batch_size_from_model_args_or_lm_eval_gives_the_generations_of_batch_size_1(
    runs, tasks, monkeypatch
):
    rows = []
    decode = adapter.OrthrusLM.generate_until

    def spying(self, requests, disable_tqdm=False):  # record the rows each batched decode was given
        original = self.decoder.decode

        def recorded(next_request, params, **kwargs):
            rows.append(kwargs["rows"])
            return original(next_request, params, **kwargs)

        self.decoder.decode = recorded
        return decode(self, requests, disable_tqdm)

    monkeypatch.setattr(adapter.OrthrusLM, "generate_until", spying)
    via_model_args = evaluate(tasks, "tiny_math", "orthrus", {"method": "orthrus", "batch_size": 2})
    via_lm_eval = evaluate(tasks, "tiny_math", "orthrus", {"method": "ar"}, batch_size="2")  # the CLI's str
    assert rows == [2, 2]  # both went through the decode loop, 2 rows at a time
    assert responses(via_model_args, "tiny_math") == responses(runs["tiny_math", "orthrus"], "tiny_math")
    assert responses(via_lm_eval, "tiny_math") == responses(runs["tiny_math", "ar"], "tiny_math")
    assert via_lm_eval["config"]["batch_size"] == "2"


def test_sampled_generations_are_those_of_batch_size_1():
    """Each row samples from its own generator, seeded per document and repeat: batching changes nothing."""
    options = {"until": ["<|im_end|>"], "temperature": 1.0, "do_sample": True, "max_gen_toks": 16}
    contexts = ["Nora has 25 cards.", "Tom has 3 apples and buys 4 more.", "What is 7 * 6?"]
    requests = [
        Instance("generate_until", {}, (context, options), 0, ("tiny_math", doc_id, 1))
        for doc_id, context in enumerate(contexts)
    ]
    requests.append(requests[0])  # a repeat: a distinct draw
    alone = OrthrusLM(method="orthrus", device="cpu", seed=3).generate_until(requests)
    together = OrthrusLM(method="orthrus", device="cpu", seed=3, batch_size=3).generate_until(requests)
    assert together == alone
    assert alone[0] != alone[3]


def test_lm_evals_batch_size_and_device_merge_with_model_args():
    # The command line always passes batch_size 1 (and orthrus-lm-eval the device `auto`): model_args win.
    lm_eval_passes = {"batch_size": 1, "max_batch_size": None, "device": "auto"}
    assert merge_model_args({"batch_size": 8, "device": "cpu"}, lm_eval_passes) == {
        "batch_size": 8,
        "device": "cpu",
    }
    assert merge_model_args({}, {"batch_size": "4", "device": "cpu"}) == {"batch_size": "4", "device": "cpu"}
    assert merge_model_args({"batch_size": 4}, {"batch_size": "4"}) == {"batch_size": 4}
    with pytest.raises(OptionError, match="batch_size given twice: batch_size=8 in model_args and 4"):
        merge_model_args({"batch_size": 8}, {"batch_size": "4"})
    with pytest.raises(OptionError, match="device given twice"):
        merge_model_args({"device": "cpu"}, {"device": "cuda:1"})
    assert check_model_args({"batch_size": "8", "device": "cpu"}) == (8, "cpu")
    # Built the way simple_evaluate builds it: never a TypeError for batch_size given both ways.
    lm = OrthrusLM.create_from_arg_string("method=ar,batch_size=2,device=cpu", lm_eval_passes)
    assert (lm.batch_size, lm.device.type) == (2, "cpu")


@pytest.mark.parametrize(
    "model_args, message",
    [
        (
            {"methd": "ar"},
            "model_args methd: unknown to the orthrus model; it takes pretrained, method, dtype",
        ),
        (
            {"method": "ar-hf", "batch_size": 4},
            f"ar-hf does not decode in batches; the batched methods are {', '.join(BATCHED)}",
        ),  # fmt: skip
        ({"method": "diffusion", "batch_size": 2}, "diffusion does not decode in batches"),
        ({"method": "orthrus:cache=dynamic", "batch_size": 2}, "does not decode in batches"),
        ({"batch_size": "auto"}, "batch_size auto: the orthrus model does not search"),
        ({"batch_size": "auto:4"}, "batch_size auto:4"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"max_batch_size": 64}, "max_batch_size 64: it bounds lm-eval's batch_size=auto search"),
        ({"method": "nope"}, "unknown method 'nope'"),
        ({"dtype": "float8"}, "unknown dtype 'float8'"),
        ({"max_gen_toks": 0}, "max_gen_toks must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"think": "yes"}, "think must be true or false"),
        ({"device": "mps"}, "--device mps: not a device; use cpu, cuda or cuda:N"),
    ],
)
def test_refused_model_args(model_args, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        OrthrusLM(**model_args)


def test_unknown_model_args_list_every_known_one():
    with pytest.raises(OptionError) as refused:
        OrthrusLM.create_from_arg_string(
            "methd=ar", {"batch_size": 1, "max_batch_size": None, "device": "cpu"}
        )
    assert str(refused.value).endswith(", ".join(model_arg_names()))
    # What lm-eval passes every model is known; so is what its --trust_remote_code adds.
    assert {"batch_size", "max_batch_size", "device", "trust_remote_code"} <= set(model_arg_names())


def test_a_device_that_is_not_here_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(OptionError, match=f"--device {device}: no CUDA device is available here"):
            OrthrusLM(method="ar", device=device)
    assert check_model_args({"device": "auto"}) == (1, "cpu")  # nothing asked for: cuda when available
    assert check_model_args({}) == (1, "cpu")


@pytest.mark.parametrize(
    "gen_kwargs, message",
    [
        ({"do_sample": True, "temperature": -1.0}, "temperature must be >= 0"),
        ({"do_sample": True, "temperature": 1.0, "top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"do_sample": True, "temperature": 1.0, "top_k": 2.5}, "top_k must be an integer >= 0"),
        ({"do_sample": True, "temperature": 1.0, "top_k": "many"}, "gen_kwargs top_k must be a number"),
        ({"max_gen_toks": 0}, "gen_kwargs max_gen_toks must be an integer >= 1, got 0"),
        ({"max_gen_toks": 4096}, "max_gen_toks 4096 leaves no room for a prompt"),
        ({"repetition_penalty": 1.2}, "gen_kwargs repetition_penalty: not supported by the orthrus model"),
    ],
)
def test_refused_generation_kwargs(gen_kwargs, message):
    lm = OrthrusLM(method="ar", device="cpu")
    request = Instance("generate_until", {}, ("Question: 1 + 1?", {"until": [], **gen_kwargs}), 0)
    with pytest.raises(OptionError, match=message):
        lm.generate_until([request])


def test_greedy_only_method_refuses_sampling():
    lm = OrthrusLM(method="diffusion", device="cpu")
    options = {"until": [], "do_sample": True, "temperature": 1.0, "max_gen_toks": 4}
    with pytest.raises(OptionError, match="diffusion decodes greedily only"):
        lm.generate_until([Instance("generate_until", {}, ("Question: 1 + 1?", options), 0)])


def test_the_offline_tasks_stay_on_a_users_include_path(tmp_path):
    user_tasks = tmp_path / "mine"
    user_tasks.mkdir()
    (user_tasks / "my_task.yaml").write_text(
        "task: my_task\ndataset_path: nowhere\noutput_type: generate_until\ntest_split: test\n"
        'doc_to_text: "{{x}}"\ndoc_to_target: "{{y}}"\n'
    )
    assert adapter.include_paths(str(user_tasks)) == [str(adapter.TASKS_DIR), str(user_tasks)]
    assert adapter.include_paths(None) == [str(adapter.TASKS_DIR)]
    index = task_manager(include_defaults=False, include_path=str(user_tasks)).task_index
    assert {"gsm8k", "minerva_math500", "tiny_math", "my_task"} <= set(index)
    assert Path(index["gsm8k"].yaml_path).parent == adapter.TASKS_DIR


def test_the_command_line_refuses_before_indexing_tasks(monkeypatch, capsys):
    """orthrus-lm-eval checks the orthrus model's arguments first, and prints a refusal without a traceback."""
    for argv, message in (
        (
            ["--model_args", "methd=ar"],
            "model_args methd: unknown to the orthrus model; it takes pretrained,",
        ),
        (
            ["--model_args", "method=ar-hf", "--batch_size", "4"],
            "batch_size 4: ar-hf does not decode in batches",
        ),
        (["--batch_size", "auto"], "batch_size auto: the orthrus model does not search"),
        (["--model_args", "batch_size=8", "--batch_size", "4"], "batch_size given twice"),
    ):
        monkeypatch.setattr("lm_eval.tasks.TaskManager", None)  # refused before lm-eval indexes its tasks
        with pytest.raises(SystemExit) as stopped:
            adapter.main(["--model", "orthrus", *argv, "--tasks", "gsm8k"])
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert f"orthrus-lm-eval: error: {message}" in err
        assert "Traceback" not in err


def test_without_a_device_the_command_line_asks_for_none(monkeypatch):
    """lm-eval would pass cuda:0 to a model when the user names no device; orthrus-lm-eval passes `auto` (cuda
    when available, else cpu), and keeps a device the user names."""
    from lm_eval._cli import HarnessCLI

    def parsed(*argv: str):
        monkeypatch.setattr(sys, "argv", ["lm_eval", *argv])
        args = HarnessCLI().parse_args()
        adapter._prepare(args)
        return args

    assert parsed("--model", "orthrus", "--tasks", "gsm8k").device == "auto"
    assert parsed("--model", "orthrus", "--model_args", "device=cpu", "--tasks", "gsm8k").device == "auto"
    assert parsed("--model", "orthrus", "--device", "cpu", "--tasks", "gsm8k").device == "cpu"
    assert parsed("--model", "hf", "--tasks", "gsm8k").device is None  # lm-eval's own models: untouched
    assert parsed("ls", "tasks", "--include_path", "/x").include_path == [str(adapter.TASKS_DIR), "/x"]


def test_the_command_line_keeps_the_offline_tasks_with_a_users_include_path(tmp_path, data_dir):
    """A user's --include_path adds to the local configs: gsm8k still reads the data folder (offline), and with
    no --device the model runs where it can (no cuda:0 asked for on the user's behalf)."""
    user_tasks = tmp_path / "mine"
    user_tasks.mkdir()
    argv = [
        sys.executable, "-m", "harness.lm_eval", "--model", "orthrus", "--model_args", "method=ar,max_gen_toks=4,batch_size=2", "--tasks", "gsm8k",
        "--num_fewshot", "0", "--limit", "2", "--include_path", str(user_tasks), "--log_samples",
        "--output_path", str(tmp_path / "out"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sample = json.loads(next((tmp_path / "out").rglob("samples_gsm8k_*.jsonl")).read_text().splitlines()[0])
    with open(data_dir / "math" / "gsm8k_test.jsonl") as f:
        assert sample["doc"]["question"] == json.loads(f.readline())["question"]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert results["config"]["device"] == "auto"
