"""The shipped suites load offline from the data folder with the expected prompts, and render as intended."""

import json
import logging
import socket

import pytest

from harness.suites.suite import list_suites, load_suite

EXPECTED_PROMPTS = {
    "math500": 500,
    "gsm8k": 1319,
    "aime24": 30,
    "aime25": 30,
    "humaneval": 164,
    "mbpp": 257,
    "pseudo2code": 200,
    "pseudo2code-0.5k": 199,
    "livecodebench": 279,
    "mtbench": 80,
    "specbench": 480,
}
LONGCTX_LENGTHS = [1000, 2000, 4000, 8000, 16000, 32000, 40000]
QWEN3_MAX_POSITIONS = 40960
MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to open a network connection while the test runs."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_the_field_suites_are_shipped():
    assert {*EXPECTED_PROMPTS, "longctx"} <= set(list_suites())


@pytest.mark.parametrize("name", list_suites())
def test_every_shipped_suite_file_is_valid(name):
    suite = load_suite(name)
    assert suite.name == name
    assert suite.generation.max_new_tokens > 0
    json.dumps(suite.config)


@pytest.mark.parametrize("name", sorted(EXPECTED_PROMPTS))
def test_suite_loads_offline_with_the_expected_prompts(name, data_dir, no_network):
    suite = load_suite(name, data_dir)
    items = suite.items()
    assert len(items) == EXPECTED_PROMPTS[name]
    assert no_network == []
    assert suite.data_origin.startswith("local: ") and str(data_dir) in suite.data_origin
    assert len({item.id for item in items}) == len(items), "item ids must be unique"
    assert all(item.id.startswith(f"{name}/") for item in items)
    json.dumps(suite.config)
    json.dumps([item.reference for item in items])


def test_data_folder_comes_from_the_environment(data_dir, monkeypatch):
    monkeypatch.setenv("ORTHRUS_DATA_DIR", str(data_dir))
    assert len(load_suite("humaneval").items()) == 164


def test_math_prompts_use_the_boxed_suffix_and_keep_the_gold_answer(data_dir):
    math500 = {item.id: item for item in load_suite("math500", data_dir).items()}
    item = math500["math500/test/precalculus/807.json"]
    assert item.turns[0].startswith("Convert the point $(0,3)$")
    assert item.turns[0].endswith(MATH_SUFFIX)
    assert item.reference == {
        "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
        "subject": "Precalculus",
        "level": 2,
    }
    gsm8k = load_suite("gsm8k", data_dir).items()
    assert gsm8k[17].id == "gsm8k/17"
    assert gsm8k[0].turns[0].endswith(MATH_SUFFIX)
    assert gsm8k[0].reference["answer"].endswith("#### 18")


def test_code_prompts_carry_what_their_tests_need(data_dir):
    humaneval = load_suite("humaneval", data_dir).items()[0]
    assert humaneval.id == "humaneval/HumanEval/0"
    assert humaneval.turns[0].startswith("Write a solution to the following problem")
    assert "def has_close_elements(" in humaneval.turns[0]
    assert humaneval.reference["entry_point"] == "has_close_elements"
    mbpp = load_suite("mbpp", data_dir).items()
    assert [item.id for item in mbpp[:2]] == ["mbpp/11", "mbpp/12"]
    assert mbpp[0].reference["test_list"][0] in mbpp[0].turns[0], "the tests are shown, one per line"
    assert "\n".join(mbpp[0].reference["test_list"]) in mbpp[0].turns[0]


def test_chat_template_uses_an_empty_system_message_and_no_thinking(data_dir, qwen3_tokenizer):
    suite = load_suite("math500", data_dir)
    item = suite.items()[0]
    text = qwen3_tokenizer.decode(suite.render(qwen3_tokenizer, item, []))
    assert text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nConvert the point")
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_second_mtbench_turn_contains_the_models_first_answer(data_dir, qwen3_tokenizer):
    suite = load_suite("mtbench", data_dir)
    item = suite.items()[0]
    assert item.id == "mtbench/81" and len(item.turns) == 2
    assert item.reference == {"category": "writing"}
    first_answer = "Aloha! Here is my travel blog post about Hawaii."
    first = qwen3_tokenizer.decode(suite.render(qwen3_tokenizer, item, []))
    second = qwen3_tokenizer.decode(suite.render(qwen3_tokenizer, item, [first_answer]))
    assert item.turns[1] not in first
    assert f"<|im_start|>assistant\n{first_answer}<|im_end|>" in second
    assert second.index(first_answer) < second.index(item.turns[1])
    with pytest.raises(ValueError, match="no turn 3"):
        suite.render(qwen3_tokenizer, item, [first_answer, "second answer"])
    score = suite.score(item, [first_answer, "Absolutely."], tokenizer=qwen3_tokenizer)
    assert (score.correct, score.status) == (None, "unscored")
    assert score.detail["words"] == [9, 1]
    assert score.detail["tokens"] == [
        len(qwen3_tokenizer.encode(first_answer)),
        len(qwen3_tokenizer.encode("Absolutely.")),
    ]


def test_longctx_prompts_have_exactly_the_requested_token_counts(data_dir, qwen3_tokenizer):
    suite = load_suite("longctx", data_dir)
    items = suite.items(tokenizer=qwen3_tokenizer, max_context=QWEN3_MAX_POSITIONS)
    assert [item.context_tokens for item in items] == LONGCTX_LENGTHS
    for item in items:
        assert len(suite.render(qwen3_tokenizer, item, [])) == item.context_tokens
        assert item.turns[0].startswith("Read the following documents.\n\n")
        assert item.turns[0].endswith(
            "What are the main topics of the documents above? Answer in a few sentences."
        )
    c4_start = json.loads((data_dir / "instruct" / "c4_demo.jsonl").open().readline())["text"][:200]
    assert c4_start in items[0].turns[0], "the filler is real text from the data folder"


def test_longctx_skips_lengths_beyond_the_models_context(data_dir, qwen3_tokenizer, caplog):
    suite = load_suite("longctx", data_dir)
    with caplog.at_level(logging.WARNING, logger="harness.suites"):
        items = suite.items(tokenizer=qwen3_tokenizer, max_context=4096)
    # 4000 prompt tokens + 512 new tokens do not fit 4096 positions either.
    assert [item.context_tokens for item in items] == [1000, 2000]
    skipped = [record.getMessage() for record in caplog.records]
    assert len(skipped) == 5
    assert "skipping the 4000-token prompt" in skipped[0] and "4512 positions" in skipped[0]


def test_longctx_without_a_tokenizer_says_what_it_needs(data_dir):
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        load_suite("longctx", data_dir).items()


def test_subset_override_limits_and_selects_items(data_dir):
    assert [item.id for item in load_suite("gsm8k", data_dir, limit=3).items()] == [
        "gsm8k/0",
        "gsm8k/1",
        "gsm8k/2",
    ]
    chosen = load_suite(
        "math500", data_dir, ids=["test/algebra/1349.json", "math500/test/precalculus/807.json"]
    )
    assert [item.id for item in chosen.items()] == [
        "math500/test/precalculus/807.json",
        "math500/test/algebra/1349.json",
    ]
    assert chosen.config["subset"]["ids"] == ["test/algebra/1349.json", "math500/test/precalculus/807.json"]
    with pytest.raises(ValueError, match="ids not in the dataset: math500/test/nowhere.json"):
        load_suite("math500", data_dir, ids=["test/nowhere.json"]).items()


def test_stop_entries_resolve_to_qwen3_end_tokens(data_dir, qwen3_tokenizer):
    generation = load_suite("math500", data_dir).generation
    assert generation.max_new_tokens == 2048 and generation.temperature == 0.0
    assert generation.stop_token_ids_and_strings(qwen3_tokenizer) == ([151645, 151643], [])


def test_the_new_table1_suites_prompt_as_the_paper_and_their_sources(data_dir):
    aime = load_suite("aime24", data_dir).items()[0]
    assert aime.turns[0].endswith(MATH_SUFFIX) and aime.reference["answer"] == "204"
    pseudo = load_suite("pseudo2code", data_dir).items()[0]
    assert pseudo.turns[0].startswith("[TASK]:") and pseudo.turns[0].endswith("[CODE]:")
    assert "#include <bitset>\nusing namespace std;" in pseudo.turns[0] and pseudo.tags == {
        "problem_id": "815A"
    }
    assert len(pseudo.reference["testcases"]) == 94
    lcb = load_suite("livecodebench", data_dir).items()[0]
    assert lcb.id == "livecodebench/abc365_b" and lcb.reference["tests"]["fname"] == "559.json"


def test_specbench_turns_and_categories(data_dir):
    items = load_suite("specbench", data_dir).items()
    by_turns = {n: sum(len(i.turns) == n for i in items) for n in (1, 2)}
    assert by_turns == {1: 400, 2: 80}  # MT-Bench's two turns, one for the rest
    categories = {i.tags["category"] for i in items}
    assert (
        len(categories) == 13
        and {"translation", "summarization", "qa", "math_reasoning", "rag"} <= categories
    )
