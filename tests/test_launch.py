"""Launched runs (harness.run.launch): ranks from the launchers' environments, cost-balanced shards, and a
2-process torchrun on CPU (gloo) that, killed and resumed, equals the one-process run record for record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.cli import main
from harness.records import TELEMETRY_FIELDS
from harness.run.launch import balanced_shards, launch_env
from harness.run.spec import RunError
from harness.store import read_records


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3", "TORCHELASTIC_RUN_ID": "x"}, ("torchrun", 3, 8, 3)),
        ({"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "y", "ACCELERATE_MIXED_PRECISION": "no"}, ("accelerate", 9, 16, 1)),
        ({"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "16", "SLURM_LOCALID": "5"}, ("slurm", 5, 16, 5)),
        ({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1", "SLURM_LOCALID": "0"}, ("none", 0, 1, 0)),  # one task
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "16", "SLURM_LOCALID": "0"}, ("none", 0, 1, 0)),  # the batch shell
        ({}, ("none", 0, 1, 0)),
    ],
)  # fmt: skip
def test_each_launcher_gives_the_rank(env, expected):
    e = launch_env(env)
    assert (e.launcher, e.rank, e.world_size, e.local_rank) == expected
    assert e.distributed == (expected[2] > 1)


def test_a_garbled_launcher_variable_is_named():
    with pytest.raises(RunError, match="WORLD_SIZE='eight'"):
        launch_env({"RANK": "0", "WORLD_SIZE": "eight"})


def test_shards_are_balanced_by_cost_and_deterministic():
    costs = [
        100.0,
        1,
        1,
        1,
        1,
        1,
        1,
        1,
        1,
        99,
    ]  # round robin puts both long items on shard 0 and 1 of 2 ... of 4
    shards = balanced_shards(costs, 4)
    assert shards == balanced_shards(list(costs), 4)
    loads = [sum(c for c, s in zip(costs, shards, strict=True) if s == k) for k in range(4)]
    assert sorted(loads) == [4, 4, 99, 100]  # the two long items alone on their shards
    round_robin = [sum(costs[k::4]) for k in range(4)]
    assert max(loads) < max(round_robin)
    assert sorted(set(shards)) == [0, 1, 2, 3]


TIMING = {"wall_s", "ttft_s", "tokens_per_s", "decode_s", "tpot_s", "emit_offsets_s", *TELEMETRY_FIELDS}
RUN = [
    "run",
    "--suite",
    "tiny-math",
    "--limit",
    "4",
    "--methods",
    "ar,orthrus",
    "--max-new-tokens",
    "16",
    "--warmup",
    "0",
]


def by_unit(records):
    return {
        (r["suite"], r["item_id"], r["method"], r["sample"], r["turn"]): {
            k: v for k, v in r.items() if k not in TIMING
        }
        for r in records
    }


def verdicts(directory):
    return [
        {k: v[k] for k in ("method", "suite", "temperature", "verdict", "reason")}
        for v in json.loads((directory / "verdicts.json").read_text())["verdicts"]
    ]


def torchrun(out, *extra):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "harness.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on the machine's cores
    return subprocess.Popen([*command, *RUN, "--out", str(out), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def test_torchrun_killed_and_resumed_equals_one_process(tmp_path):
    assert main([*RUN, "--out", str(tmp_path / "one")]) == 0
    one = read_records(tmp_path / "one")

    launched = tmp_path / "two"
    first = torchrun(launched)
    victim = launched / "shards" / "1-of-2"
    deadline = time.monotonic() + 120
    while not ((victim / "records.jsonl").exists() and (victim / "records.jsonl").read_text().count("\n")):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0][-3000:]
        time.sleep(0.02)
    pid = json.loads((victim / "run.json").read_text())["launch"]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert first.wait(60) != 0
    left = [len(read_records(launched / "shards" / f"{r}-of-2")) for r in range(2)]
    assert 0 < left[1] < len(one) and not (launched / "records.jsonl").exists()  # rank 1 died mid-shard

    second = torchrun(launched, "--resume")
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output[-3000:]
    assert (
        f"render it with: orthrus-bench report {launched} --out reports/two" in output
    )  # rank 0's last line
    two = read_records(launched)
    assert len(two) == len(one) and by_unit(two) == by_unit(one)  # nothing lost, nothing twice
    assert verdicts(launched) == verdicts(tmp_path / "one")
    run = json.loads((launched / "run.json").read_text())
    assert run["launch"]["launcher"] == "torchrun" and run["launch"]["world_size"] == 2
    assert [r["rank"] for r in run["launch"]["ranks"]] == [0, 1]
    assert all(
        r["device"] == "cpu" and r["device_source"] == "--device" and r["device_uuid"] is None
        for r in run["launch"]["ranks"]
    )


def test_a_launched_run_refuses_what_it_cannot_do_before_joining_the_others(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(RUN) == 2
    assert "a launched run needs --out" in capsys.readouterr().err
    assert main([*RUN, "--out", str(tmp_path / "x"), "--shard", "0/2"]) == 2
    assert "--shard is the launcher's to give" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    plain = {"config": {"suites": ["tiny-math"]}, "config_hash": "abc"}
    (tmp_path / "plain" / "run.json").write_text(json.dumps(plain))
    assert main([*RUN, "--out", str(tmp_path / "plain")]) == 2
    assert "not a merge of its shards" in capsys.readouterr().err
    assert json.loads((tmp_path / "plain" / "run.json").read_text()) == plain  # untouched
