"""Records belong to their run, as a new user meets it: records appended from another run, a run.json deleted,
a shard resumed as another, damage at the end of a finished run, fields of the wrong type, a run with no
records. Each case runs the real command line and asserts the exit code, the message, and the good records
before and after (the file's bytes, where nothing may change)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from command_line import cli

from harness.cli import main
from harness.store import RECORDS, REJECTED, RUN, read_records

# Four units (2 items x 2 methods) at 8 new tokens; the "other" runs differ in method, length or suite.
ARGS = ["--suite", "tiny-math", "--limit", "2", "--warmup", "0"]
THIS = [*ARGS, "--methods", "ar,pld", "--max-new-tokens", "8"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """This run (ar, pld at 8 tokens, verified), another at 1 token (ar, orthrus) and a tiny-code one."""
    base = tmp_path_factory.mktemp("identity")
    made = {
        "this": [*THIS],
        "short": [*ARGS, "--methods", "ar,orthrus", "--max-new-tokens", "1", "--no-verify"],
        "code": ["--suite", "tiny-code", "--limit", "1", "--warmup", "0", "--methods", "ar",
                 "--max-new-tokens", "8", "--no-verify"],
    }  # fmt: skip
    for name, argv in made.items():
        assert main(["run", *argv, "--out", str(base / name)]) == 0
    return {name: base / name for name in made}


@pytest.fixture
def run(runs, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(runs["this"], copy)
    return copy


def lines(directory: Path) -> list[bytes]:
    return (directory / RECORDS).read_bytes().splitlines()


def append(directory: Path, *records: bytes) -> None:
    with open(directory / RECORDS, "ab") as f:
        f.write(b"".join(r + b"\n" for r in records))


def edited(line: bytes, **fields) -> bytes:
    return json.dumps({**json.loads(line), **fields}).encode()


def refused_then_repaired(
    capsys, run: Path, message: str, bad: list[int], every_reader: bool = False
) -> None:
    """verify refuses (and with `every_reader`, resume and report too), naming the line and `message`,
    changing nothing; repair moves exactly the bad lines and keeps the four good records, which verify then
    judges."""
    before = (run / RECORDS).read_bytes()
    readers = [["verify", run, "--no-decoders"]]
    if every_reader:
        readers += [
            ["run", *THIS, "--out", run, "--resume", "--no-verify"],
            ["report", run, "--out", run / "r"],
        ]
    for argv in readers:
        code, printed = cli(capsys, *argv)
        assert code == 2 and f"line {bad[0]}: " in printed and message in printed, printed
        assert "Traceback" not in printed and "The 4 good records" in printed, printed
        assert (run / RECORDS).read_bytes() == before
    moved = before.splitlines()
    code, printed = cli(capsys, "repair", run)
    assert code == 0 and "kept 4 good records" in printed, printed
    assert (run / REJECTED).read_bytes().splitlines() == [moved[n - 1] for n in bad]
    assert len(read_records(run)) == 4
    if every_reader:
        code, printed = cli(capsys, "verify", run, "--no-decoders")
        assert code == 0, printed


# ------------------------------------------------------------------------------- records of another run


def test_another_runs_method_is_refused_and_repaired(runs, run, capsys):
    orthrus = [line for line in lines(runs["short"]) if json.loads(line)["method"] == "orthrus"]
    append(run, *orthrus)
    message = "its method orthrus is not one of the run's (ar, pld)"
    refused_then_repaired(capsys, run, message, [5, 6], every_reader=True)


def test_another_suites_record_is_refused(runs, run, capsys):
    append(run, lines(runs["code"])[0])
    refused_then_repaired(capsys, run, "its suite tiny-code is not one of the run's (tiny-math)", [5])


def test_a_record_made_at_another_length_is_refused_by_its_config_hash_and_without_it(runs, run, capsys):
    ar = next(line for line in lines(runs["short"]) if json.loads(line)["method"] == "ar")
    other = json.loads(ar)["config_hash"]
    assert other and other != json.loads(lines(run)[0])["config_hash"]
    append(run, ar)
    refused_then_repaired(capsys, run, f"it was written under config hash {other}", [5])
    # The same record as an older version wrote it, with no config hash: its length gives it away
    (run / REJECTED).unlink()
    append(run, edited(ar, config_hash=None))
    refused_then_repaired(
        capsys, run, "it stopped at 1 new tokens (length), the run's max_new_tokens for tiny-math is 8", [5]
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"item_id": "tiny-math/math-199"},
            "its item tiny-math/math-199 is not one of the 2 items a whole run",
        ),
        ({"sample": 1}, "its sample 1 is beyond the run's --samples 1"),
        ({"temperature": 0.7}, "its temperature is 0.7, the run's for tiny-math is 0.0"),
        ({"seed": 12345}, "its seed is not the run's (--seed 0)"),
        ({"method_name": "eagle3"}, "its method_name is 'eagle3', the run's ar has 'ar'"),
    ],
)
def test_a_record_that_does_not_fit_the_run_is_named(run, capsys, fields, message):
    first = lines(run)[0]
    append(run, edited(first, config_hash=None, **fields))
    refused_then_repaired(capsys, run, message, [5])


# --------------------------------------------------------------------------------------- typed fields


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"turns": "1"}, 'its turns is "1", not of the schema\'s type (int)'),
        ({"sample": [0]}, "its sample is [0], not of the schema's type (int)"),
        ({"output_ids": None}, "its output_ids is null, not of the schema's type (list[int])"),
        ({"lossless": 1}, "its lossless is 1, not of the schema's type (bool)"),
        ({"tau": "2.0"}, 'its tau is "2.0", not of the schema\'s type (float or null)'),
        ({"new_tokens": 3}, "its new_tokens 3 is not the length of its output_ids"),
    ],
)
def test_a_field_of_the_wrong_type_is_a_bad_line_not_a_traceback(run, capsys, fields, message):
    good = lines(run)
    damaged = edited(good[1], **fields)
    (run / RECORDS).write_bytes(b"".join(line + b"\n" for line in [good[0], damaged, good[2], good[3]]))
    before = (run / RECORDS).read_bytes()
    for argv in (["verify", run, "--no-decoders"], ["report", run, "--out", run / "report"]):
        code, printed = cli(capsys, *argv)
        assert code == 2 and "line 2: not an orthrus-bench record" in printed and message in printed, printed
        assert "Traceback" not in printed and (run / RECORDS).read_bytes() == before
    code, printed = cli(capsys, "repair", run)
    assert code == 0 and "moved 1 line(s) (2)" in printed and "kept 3 good records" in printed, printed
    assert (run / REJECTED).read_bytes() == damaged + b"\n"


# ------------------------------------------------------------------------------------- the tail rule


@pytest.mark.parametrize("tail", [b'{"suite": "tiny-math", "item_', b"\x00garbled"])
def test_a_bad_last_line_of_a_complete_run_is_damage(run, capsys, tail):
    (run / RECORDS).write_bytes((run / RECORDS).read_bytes() + tail)
    before = (run / RECORDS).read_bytes()
    code, printed = cli(capsys, "verify", run, "--no-decoders")
    assert code == 2 and "line 5: damage at the end of a complete run" in printed, printed
    assert (run / RECORDS).read_bytes() == before
    code, printed = cli(capsys, "repair", run)
    assert code == 0 and "moved 1 line(s) (5)" in printed and "kept 4 good records" in printed, printed
    assert (run / REJECTED).read_bytes() == tail + b"\n"


def test_a_last_record_missing_only_its_newline_is_a_good_record(run, capsys):
    good = lines(run)
    (run / RECORDS).write_bytes(b"\n".join(good))  # no newline after the last record
    assert len(read_records(run)) == 4
    code, printed = cli(capsys, "repair", run)
    assert code == 0 and "nothing to repair (4 good records)" in printed, printed
    assert not (run / REJECTED).exists()
    # A resume that runs more work starts it on a line of its own
    (run / RECORDS).write_bytes(b"\n".join(good[:3]))
    run_json = json.loads((run / RUN).read_text())
    (run / RUN).write_text(json.dumps({**run_json, "status": "interrupted"}))
    code, printed = cli(capsys, "run", *THIS, "--out", run, "--resume", "--no-verify")
    assert code == 0, printed
    assert lines(run)[:3] == good[:3] and len(read_records(run)) == 4


# ---------------------------------------------------------------------------------- a directory's identity


def test_records_without_run_json_cannot_be_resumed(run, capsys):
    (run / RUN).unlink()
    before = (run / RECORDS).read_bytes()
    code, printed = cli(
        capsys, "run", *ARGS, "--methods", "ar,pld", "--max-new-tokens", "16", "--out", run, "--resume"
    )
    assert code == 2 and "holds records but no run.json" in printed and "restore" in printed, printed
    assert (run / RECORDS).read_bytes() == before and not (run / RUN).exists()


def test_a_whole_run_is_not_resumed_as_a_shard(run, capsys):
    before = {name: (run / name).read_bytes() for name in (RECORDS, RUN)}
    code, printed = cli(capsys, "run", *THIS, "--shard", "0/2", "--out", run, "--resume")
    assert code == 2 and "holds a whole run, and this resume asks for shard 0/2" in printed, printed
    assert "Resume it without --shard" in printed
    assert {name: (run / name).read_bytes() for name in before} == before


def test_a_shard_is_resumed_only_as_itself_and_a_refused_merge_leaves_nothing(runs, tmp_path, capsys):
    shards = [tmp_path / "shard0", tmp_path / "shard1"]
    for i, shard in enumerate(shards):
        assert main(["run", *THIS, "--shard", f"{i}/2", "--out", str(shard), "--no-verify"]) == 0
    code, printed = cli(capsys, "run", *THIS, "--shard", "1/2", "--out", shards[0], "--resume")
    assert code == 2 and "holds shard 0/2 of a run" in printed and "--shard 0/2" in printed, printed
    code, printed = cli(capsys, "run", *THIS, "--out", shards[0], "--resume")
    assert code == 2 and "Resume it with --shard 0/2" in printed, printed
    # Each shard's records are its own items: shard 1's unit appended to shard 0 is another run's
    append(shards[0], lines(shards[1])[0])
    code, printed = cli(capsys, "merge", *shards, "--out", tmp_path / "merged")
    assert code == 2 and "is not one of the 1 items shard 0/2 of a run selects" in printed, printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard0", "shard1"]  # nothing left behind
    assert cli(capsys, "repair", shards[0])[0] == 0
    code, printed = cli(capsys, "merge", *shards, "--out", tmp_path / "merged")
    assert code == 0, printed
    merged = tmp_path / "merged"  # the merge ends naming it, and how to verify and render it
    assert (
        f"wrote {merged} (records.jsonl, run.json)\nverify it with: orthrus-bench verify {merged}\n"
        in printed
    )
    assert f"render it with: orthrus-bench report {merged} --out reports/merged" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "shard0", "shard1"]
    merged = read_records(tmp_path / "merged")
    assert (
        len(merged) == 4
        and len(json.loads((tmp_path / "merged" / RUN).read_text())["suites"]["tiny-math"]["items"]) == 2
    )
    code, printed = cli(capsys, "merge", *shards, "--out", tmp_path / "merged")
    assert code == 2 and "already holds a run" in printed


def test_verify_of_a_run_with_no_records_exits_2(run, capsys):
    (run / RECORDS).write_bytes(b"")
    (run / "verdicts.json").unlink()
    code, printed = cli(capsys, "verify", run)
    assert code == 2 and "has no records to verify" in printed and "--resume" in printed, printed
    assert not (run / "verdicts.json").exists()


def test_a_refused_directory_is_refused_before_any_model_loads(run, capsys, monkeypatch, tmp_path):
    import harness.run.runner

    def no_loading(*args, **kwargs):
        raise AssertionError("the run loaded its models before refusing its --out")

    monkeypatch.setattr(harness.run.runner, "prepare", no_loading)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    (run / RUN).rename(tmp_path / "run.json.bak")
    for argv, message in (
        ([*THIS, "--out", run, "--resume"], "holds records but no run.json"),
        ([*THIS, "--out", a_file / "run"], f"{a_file} is a file, not a directory"),
    ):
        code, printed = cli(capsys, "run", *argv)
        assert code == 2 and message in printed and "Traceback" not in printed, printed
    (tmp_path / "run.json.bak").rename(run / RUN)
    for argv, message in (
        ([*THIS, "--shard", "1/2", "--out", run, "--resume"], "holds a whole run"),
        (
            [*ARGS, "--methods", "ar", "--max-new-tokens", "8", "--out", run, "--resume"],
            "different configuration",
        ),
    ):
        code, printed = cli(capsys, "run", *argv)
        assert code == 2 and message in printed and "Traceback" not in printed, printed
