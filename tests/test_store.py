"""The results store: append-only, resumable after any stop, never accepting a half-written line."""

from __future__ import annotations

import json

import pytest

from harness.store import RECORDS, StoreError, load, open_run, read_records


def unit(item: str, turns: int = 1, method: str = "ar") -> list[dict]:
    return [
        {
            "suite": "s",
            "item_id": item,
            "method": method,
            "sample": 0,
            "turn": t,
            "turns": turns,
            "status": "ok",
            "new_tokens": 3,
            "output_ids": [1, 2, 3],
        }
        for t in range(turns)
    ]


def test_units_round_trip_into_a_dataframe(tmp_path):
    store = open_run(tmp_path, resume=False, config_hash="h")
    store.write_unit(unit("a"))
    store.write_unit(unit("b", turns=2))
    store.write_run({"config_hash": "h"})
    store.close()
    df = load(tmp_path)
    assert list(df.item_id) == ["a", "b", "b"] and list(df.turn) == [0, 0, 1]


def test_an_existing_run_needs_resume_and_the_same_configuration(tmp_path):
    store = open_run(tmp_path, resume=False, config_hash="h")
    store.write_run({"config_hash": "h"})
    store.close()
    with pytest.raises(StoreError, match="--resume"):
        open_run(tmp_path, resume=False, config_hash="h")
    with pytest.raises(StoreError, match="different configuration"):
        open_run(tmp_path, resume=True, config_hash="other")


@pytest.mark.parametrize(
    "tail",
    [
        b'{"suite": "s", "item_id": "c", "met',  # killed inside a line
        json.dumps(unit("c", turns=2)[0]).encode() + b"\n",  # killed between the turns of one unit
        json.dumps(unit("c", turns=2)[0]).encode() + b"\n" + b'{"suite"',
    ],
)
def test_resume_drops_a_partial_unit_and_keeps_every_complete_one(tmp_path, tail):
    store = open_run(tmp_path, resume=False, config_hash="h")
    store.write_unit(unit("a"))
    store.write_unit(unit("b", turns=2))
    store.write_run({"config_hash": "h"})
    store.close()
    with open(tmp_path / RECORDS, "ab") as f:
        f.write(tail)
    assert [r["item_id"] for r in read_records(tmp_path)] == ["a", "b", "b"]  # readers skip the tail

    resumed = open_run(tmp_path, resume=True, config_hash="h")
    assert resumed.done == {("s", "a", "ar", 0), ("s", "b", "ar", 0)}
    resumed.write_unit(unit("c", turns=2))
    resumed.close()
    lines = (tmp_path / RECORDS).read_text().splitlines()
    assert [json.loads(line)["item_id"] for line in lines] == ["a", "b", "b", "c", "c"]
