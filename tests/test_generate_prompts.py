"""`generate`'s prompt from a file or stdin (--prompt-file, --prompt-ids-file, `-`), its errors, and the note on
what the embedded tiny family knows."""

from __future__ import annotations

import io
import json

import pytest
from conftest import random_model

from harness.cli import main
from harness.cli.generate import TINY_FAMILY_NOTE
from orthrus_core.checkpoint import save_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_model(random_model(seed=2), tmp_path_factory.mktemp("ckpt") / "m")


def tokens(capsys, *argv, model=None) -> list[int]:
    assert main(["generate", *(["--model", str(model)] if model else []), *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["tokens"]


def stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


COMMON = ["--method", "ar", "--max-new-tokens", "6"]


@pytest.mark.parametrize(
    "content",
    ["5 6 7 8\n", "5,6,7,8", "5, 6,\n7 ,8\n", "[5, 6, 7, 8]\n", "  5\t6\n\n7\r\n8  "],
)
def test_prompt_ids_from_a_file_are_the_ids_given_inline(checkpoint, tmp_path, capsys, content):
    inline = tokens(capsys, "--prompt-ids", "5,6,7,8", *COMMON, model=checkpoint)
    path = tmp_path / "ids.txt"
    path.write_text(content)
    assert tokens(capsys, "--prompt-ids-file", str(path), *COMMON, model=checkpoint) == inline


def test_a_long_prompt_from_stdin(checkpoint, capsys, monkeypatch):
    """32K ids, far past what the command line holds, read from stdin: every one of them reaches the length
    check (the micro model has 4096 positions); 4000 of them, as a JSON list or separated, are generated from."""
    ids = [(7 * i) % 300 + 4 for i in range(32768)]
    stdin(monkeypatch, " ".join(map(str, ids)))
    assert main(["generate", "--model", str(checkpoint), "--prompt-ids-file", "-", *COMMON]) == 2
    assert "the prompt (32768 tokens) plus max_new_tokens 6" in capsys.readouterr().err
    stdin(monkeypatch, "\n".join(map(str, ids[:4000])))
    long = tokens(capsys, "--prompt-ids-file", "-", *COMMON, model=checkpoint)
    stdin(monkeypatch, json.dumps(ids[:4000]))
    assert tokens(capsys, "--prompt-ids-file", "-", *COMMON, model=checkpoint) == long and long


def test_a_prompt_file_is_the_prompt_given_inline(tmp_path, capsys, monkeypatch):
    """The user message from a file or stdin, its trailing newline dropped, through the chat template."""
    question = "What is the capital of France?"
    inline = tokens(capsys, "--prompt", question, *COMMON)
    path = tmp_path / "prompt.txt"
    path.write_text(question + "\n")
    assert tokens(capsys, "--prompt-file", str(path), *COMMON) == inline
    stdin(monkeypatch, question + "\n")
    assert tokens(capsys, "--prompt-file", "-", *COMMON) == inline


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "--prompt-ids-file {path}: empty; give token ids"),
        ("1 2 x3", "--prompt-ids-file {path}: item 3, 'x3', is not an integer token id"),
        ("1,,2", "--prompt-ids-file {path}: item 2 is empty"),
        ("1,2,", "--prompt-ids-file {path}: item 3 is empty"),
        ("1 2.5", "item 2, '2.5', is not an integer token id"),
        ("[1, 2", "--prompt-ids-file {path}: not a valid JSON list"),
        ("[1, true]", "item 2 of the JSON list, true, is not an integer token id"),
        ("[1, 2.0]", "item 2 of the JSON list, 2.0, is not an integer token id"),
        ("[]", "an empty JSON list"),
        ("1 99999", "outside the vocabulary"),
    ],
)
def test_bad_ids_in_a_file_exit_2_naming_the_item(checkpoint, tmp_path, capsys, content, message):
    path = tmp_path / "ids.txt"
    path.write_text(content)
    assert main(["generate", "--model", str(checkpoint), "--prompt-ids-file", str(path)]) == 2
    assert message.format(path=path) in capsys.readouterr().err


def test_a_missing_or_unreadable_file_exits_2(checkpoint, tmp_path, capsys):
    for option in ("--prompt-file", "--prompt-ids-file"):
        missing = tmp_path / "nope.txt"
        assert main(["generate", "--model", str(checkpoint), option, str(missing)]) == 2
        assert f"{option} {missing}: no such file" in capsys.readouterr().err
        assert main(["generate", "--model", str(checkpoint), option, str(tmp_path)]) == 2
        assert f"{option} {tmp_path}: a directory, not a file" in capsys.readouterr().err
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe1 2")
    assert main(["generate", "--model", str(checkpoint), "--prompt-ids-file", str(binary)]) == 2
    assert "not UTF-8 text (byte 0)" in capsys.readouterr().err


def test_a_prompt_file_needs_a_tokenizer(checkpoint, tmp_path, capsys):
    path = tmp_path / "prompt.txt"
    path.write_text("hello")
    assert main(["generate", "--model", str(checkpoint), "--prompt-file", str(path)]) == 2
    assert "has no tokenizer files: pass --prompt-ids or --prompt-ids-file instead of --prompt-file" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--prompt", "hi", "--prompt-file", "p.txt"],
        ["--prompt-ids", "1", "--prompt-ids-file", "ids.txt"],
        ["--prompt-file", "p.txt", "--prompt-ids-file", "ids.txt"],
    ],
)
def test_two_prompt_forms_are_refused(capsys, argv):
    with pytest.raises(SystemExit) as exit_status:
        main(["generate", *argv])
    assert exit_status.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_no_prompt_is_refused_naming_every_form(capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["generate"])
    assert exit_status.value.code == 2
    err = capsys.readouterr().err
    assert all(form in err for form in ("--prompt", "--prompt-ids", "--prompt-file", "--prompt-ids-file"))


def test_the_embedded_default_says_what_it_knows(checkpoint, capsys):
    assert main(["generate", "--prompt", "What is the capital of France?", "--max-new-tokens", "12"]) == 0
    out, err = capsys.readouterr()
    assert "The capital of France is Paris." in out  # the note's example works
    assert err.count(TINY_FAMILY_NOTE) == 1 and TINY_FAMILY_NOTE.count("\n") == 0
    for taught in ("arithmetic word problems", "one-line Python functions", "templated chat"):
        assert taught in TINY_FAMILY_NOTE
    assert main(["generate", "--model", str(checkpoint), "--prompt-ids", "5", "--max-new-tokens", "2"]) == 0
    assert "tiny family" not in capsys.readouterr().err
