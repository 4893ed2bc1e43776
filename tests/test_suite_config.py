"""Suite files are validated on load with errors that name the problem; data sources resolve as documented."""

import textwrap

import datasets
import pytest

from harness.suites.data import DatasetFieldError, DatasetUnavailableError
from harness.suites.suite import SuiteError, load_suite

MINIMAL_MATH_SUITE = """
[dataset]
fields = { problem = "problem", answer = "answer" }
id_field = "unique_id"

[dataset.hub]
id = "HuggingFaceH4/MATH-500"
split = "test"

[dataset.local]
files = ["math/math500_test.jsonl"]

[prompt]
user = "{problem}"

[generation]
max_new_tokens = 16

[scoring]
scorer = "math"
"""


def write_suite(tmp_path, text: str, name: str = "custom"):
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return path


def arithmetic_records(count: int):
    """A record generator of the kind the tiny suites use: prompts with exact answers, no data files."""
    for a in range(count):
        yield {"key": f"add-{a}", "question": f"What is {a} + {a + 1}?", "solution": str(2 * a + 1)}


def test_a_minimal_suite_file_loads(tmp_path, data_dir):
    suite = load_suite(write_suite(tmp_path, MINIMAL_MATH_SUITE), data_dir)
    assert suite.name == "custom"
    assert len(suite.items()) == 500
    assert suite.generation.stop == () and suite.generation.top_p == 1.0


def test_builtin_generator_is_a_data_source(tmp_path):
    suite_file = write_suite(
        tmp_path,
        f"""
        [dataset]
        fields = {{ question = "question", answer = "solution" }}
        id_field = "key"

        [dataset.builtin]
        function = "{__name__}:arithmetic_records"
        args = {{ count = 4 }}

        [prompt]
        user = "{{question}} Put the answer in \\\\boxed{{{{}}}}."

        [generation]
        max_new_tokens = 32

        [scoring]
        scorer = "math"
        """,
        name="tiny-sums",
    )
    suite = load_suite(suite_file, data_dir=None)
    items = suite.items()
    assert [item.id for item in items] == [
        "tiny-sums/add-0",
        "tiny-sums/add-1",
        "tiny-sums/add-2",
        "tiny-sums/add-3",
    ]
    assert items[2].turns == ("What is 2 + 3? Put the answer in \\boxed{}.",)
    assert suite.data_origin == f"builtin: {__name__}:arithmetic_records"
    assert suite.score(items[2], ["It is \\boxed{5}."]).correct is True
    assert suite.score(items[2], ["It is \\boxed{6}."]).correct is False


def test_builtin_generator_that_cannot_be_imported_is_named(tmp_path):
    sources = MINIMAL_MATH_SUITE[
        MINIMAL_MATH_SUITE.index("[dataset.hub]") : MINIMAL_MATH_SUITE.index("[prompt]")
    ]
    text = MINIMAL_MATH_SUITE.replace(sources, '[dataset.builtin]\nfunction = "no_such_module:records"\n\n')
    with pytest.raises(
        DatasetUnavailableError, match="cannot import the record generator no_such_module:records"
    ):
        load_suite(write_suite(tmp_path, text)).items()


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (
            ("[generation]\nmax_new_tokens = 16", "[generation]\nmax_tokens = 16"),
            r"\[generation\] max_new_tokens: missing",
        ),
        (
            ("max_new_tokens = 16", "max_new_tokens = 16\nbeam_width = 4"),
            r"unknown key\(s\) beam_width in \[generation\]",
        ),
        (('scorer = "math"', 'scorer = "bleu"'), r"unknown scorer 'bleu'; known scorers: gsm8k, humaneval"),
        (
            ('scorer = "math"', 'scorer = "math"\ntimeout_s = 3'),
            r"scorer 'math' has no option\(s\) timeout_s",
        ),
        (
            ('scorer = "math"', 'scorer = "mbpp"'),
            r"scorer 'mbpp' needs the field\(s\) test_list, test_imports",
        ),
        (
            (', answer = "answer" }', " }"),
            r"scorer 'math' needs the field\(s\) answer; add them to \[dataset\] fields",
        ),
        (
            ('user = "{problem}"', 'user = "{question}"'),
            r"the template uses \{question\}, which \[dataset\] fields",
        ),
        (('user = "{problem}"', 'user = "{problem"'), r"malformed template"),
        (('user = "{problem}"', 'user = "{}"'), r"positional fields"),
        (("max_new_tokens = 16", 'max_new_tokens = "16"'), r"max_new_tokens: must be an integer"),
        (("max_new_tokens = 16", "max_new_tokens = 0"), r"max_new_tokens: must be at least 1"),
        (
            ("max_new_tokens = 16", "max_new_tokens = 16\ntop_p = 0"),
            r"\[generation\] top_p must be in \(0, 1\]",
        ),
        (
            ("max_new_tokens = 16", "max_new_tokens = 16\ntemperature = -1"),
            r"\[generation\] temperature must be >= 0",
        ),
        (("max_new_tokens = 16", "max_new_tokens = 16\nstop = [1.5]"), r"stop: entries must be"),
        (
            ('files = ["math/math500_test.jsonl"]', 'files = ["../secret.jsonl"]'),
            r"must be a path inside the data folder",
        ),
        (("[prompt]", "[prompts]"), r"the \[prompt\] table is missing"),
        (
            (
                'id = "HuggingFaceH4/MATH-500"',
                'id = "HuggingFaceH4/MATH-500"\nfields = { problem = "problem" }',
            ),
            r"hub.fields: must map the same names",
        ),
    ],
)
def test_malformed_suite_files_are_rejected_with_the_problem_named(tmp_path, mutation, message):
    old, new = mutation
    assert old in MINIMAL_MATH_SUITE
    path = write_suite(tmp_path, MINIMAL_MATH_SUITE.replace(old, new, 1))
    with pytest.raises(SuiteError, match=message) as error:
        load_suite(path)
    assert str(path) in str(error.value), "the error names the file"


def test_invalid_toml_and_unknown_names_are_reported(tmp_path):
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(write_suite(tmp_path, "[dataset\nfields = 1"))
    with pytest.raises(SuiteError, match="no suite named 'math5000'; available: ") as error:
        load_suite("math5000")
    listed = str(error.value).split("available: ")[1].split(", ")
    assert listed == sorted(listed) and {"gsm8k", "humaneval", "specbench"} <= set(listed)
    with pytest.raises(SuiteError, match="does not exist"):
        load_suite(tmp_path / "absent.toml")


def test_code_scorer_options_are_checked(tmp_path):
    text = MINIMAL_MATH_SUITE.replace('answer = "answer" }', 'test_list = "a", test_imports = "b" }')
    with pytest.raises(SuiteError, match="timeout_s must be a positive number"):
        load_suite(write_suite(tmp_path, text.replace('scorer = "math"', 'scorer = "mbpp"\ntimeout_s = -1')))


def test_a_column_missing_from_the_data_is_named(tmp_path, data_dir):
    path = write_suite(tmp_path, MINIMAL_MATH_SUITE.replace('answer = "answer"', 'answer = "final_answer"'))
    with pytest.raises(DatasetFieldError, match=r"no column\(s\) 'final_answer' \(for 'answer'\)"):
        load_suite(path, data_dir).items()


def test_missing_data_names_both_places_looked_at(tmp_path, monkeypatch):
    def unreachable_hub(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'HuggingFaceH4/MATH-500' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable_hub)
    empty_data_dir = tmp_path / "data"
    empty_data_dir.mkdir()
    with pytest.raises(DatasetUnavailableError) as error:
        load_suite(write_suite(tmp_path, MINIMAL_MATH_SUITE), empty_data_dir).items()
    message = str(error.value)
    assert f"{empty_data_dir}/math/math500_test.jsonl not found" in message
    assert "hub dataset HuggingFaceH4/MATH-500 (split test): ConnectionError: Couldn't reach" in message
    assert "ORTHRUS_DATA_DIR" in message

    monkeypatch.delenv("ORTHRUS_DATA_DIR", raising=False)
    with pytest.raises(DatasetUnavailableError, match="no data folder was given"):
        load_suite(write_suite(tmp_path, MINIMAL_MATH_SUITE)).items()


def test_a_local_only_suite_without_data_says_where_to_point(monkeypatch):
    monkeypatch.delenv("ORTHRUS_DATA_DIR", raising=False)
    with pytest.raises(
        DatasetUnavailableError, match="reads only from the data folder.*--data-dir or ORTHRUS_DATA_DIR"
    ):
        load_suite("longctx").items(tokenizer=object())


def test_a_data_folder_that_does_not_exist_is_rejected_on_load(tmp_path):
    with pytest.raises(
        DatasetUnavailableError, match=r"data folder .*nowhere \(from --data-dir\) does not exist"
    ):
        load_suite("math500", tmp_path / "nowhere")
