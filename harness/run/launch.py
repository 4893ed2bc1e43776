"""One run over many processes, started by the launchers users already have: `torchrun`, `accelerate launch`,
`srun` under Slurm. No launcher of our own.

Each process reads its rank from the launcher's environment (`launch_env`), takes its shard of the items
(`balanced_shards`: deterministic, balanced by expected cost), runs on its own GPU (`launched_device`: the
local rank's, or the one GPU the launcher shows it; `check_own_devices`: no two on one GPU), and writes its
own shard directory `OUT/shards/<i>-of-<n>`. Then every rank meets the others in torch.distributed (gloo: a
barrier needs no GPU collective) and rank 0, if every shard finished, merges them into OUT, verifies and
prints the summary. A rank that dies leaves the records the others wrote; the same command with `--resume`
continues every shard where it stopped.
"""

from __future__ import annotations

import heapq
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from .spec import RunError


@dataclass(frozen=True)
class LaunchEnv:
    launcher: str  # "torchrun", "accelerate", "slurm" or "none"
    rank: int
    world_size: int
    local_rank: int

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def local_rank_variable(self) -> str:
        return "SLURM_LOCALID" if self.launcher == "slurm" else "LOCAL_RANK"

    def as_provenance(self, device: str, device_source: str, device_uuid: str | None = None) -> dict:
        """`device_source`: how the process came to decode on `device` (`launched_device`'s answer, or
        "--device" as given); `device_uuid`: that GPU's (harness.run.provenance.cuda_uuid), which names it
        across nodes' and launchers' numberings."""
        return {
            **asdict(self),
            "device": device,
            "device_source": device_source,
            "device_uuid": device_uuid,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }


def launch_env(env: Mapping[str, str] = os.environ) -> LaunchEnv:
    """The process's place in the launch: torch.distributed's variables (RANK, WORLD_SIZE, LOCAL_RANK: set by
    torchrun and accelerate) or else those srun sets for each task of a job step (SLURM_PROCID,
    SLURM_STEP_NUM_TASKS, SLURM_LOCALID). A batch script's own shell has SLURM_NTASKS but is one process: it
    runs alone, as it would anywhere."""

    def number(name: str) -> int:
        try:
            return int(env[name])
        except ValueError:
            raise RunError(f"the launcher set {name}={env[name]!r}, which is not an integer") from None

    if "RANK" in env and "WORLD_SIZE" in env:
        # accelerate launches through torchrun's machinery, so its own variables decide first
        launcher = (
            "accelerate"
            if any(k.startswith("ACCELERATE_") for k in env)
            else "torchrun"
            if "TORCHELASTIC_RUN_ID" in env
            else "torch.distributed"
        )
        local = number("LOCAL_RANK") if "LOCAL_RANK" in env else number("RANK")
        return LaunchEnv(launcher, number("RANK"), number("WORLD_SIZE"), local)
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env and number("SLURM_STEP_NUM_TASKS") > 1:
        tasks = number("SLURM_STEP_NUM_TASKS")
        return LaunchEnv("slurm", number("SLURM_PROCID"), tasks, number("SLURM_LOCALID"))
    return LaunchEnv("none", 0, 1, 0)


ONE_VISIBLE = "the one visible device"


def launched_device(launch: LaunchEnv, visible: int, env: Mapping[str, str] = os.environ) -> tuple[int, str]:
    """The CUDA device (torch's index) a launched process decodes on, and why, given the `visible` device
    count (torch.cuda.device_count()). A launcher that shows each process only its own GPU (`srun
    --gpus-per-task=1`, CUDA_VISIBLE_DEVICES set per process) leaves one device visible, cuda:0, whatever the
    local rank: that one. One that shows every process all of the node's GPUs leaves the local rank's,
    cuda:LOCAL_RANK. Anything else names no device of this process's own: a RunError saying what to set."""
    if visible == 1:
        return 0, ONE_VISIBLE
    if launch.local_rank < visible:
        return launch.local_rank, launch.local_rank_variable
    shown = env.get("CUDA_VISIBLE_DEVICES")
    listed = "CUDA_VISIBLE_DEVICES is not set" if shown is None else f"CUDA_VISIBLE_DEVICES={shown}"
    raise RunError(
        f"{launch.launcher} started this process as rank {launch.rank} with "
        f"{launch.local_rank_variable}={launch.local_rank}, but it sees {visible} CUDA device(s) ({listed}): "
        "no GPU is its own. Show each process exactly one GPU (srun --gpus-per-task=1, or CUDA_VISIBLE_DEVICES "
        f"set per process) or all of the node's GPUs (at least {launch.local_rank + 1}), or start no more "
        "processes per node than it has GPUs"
    )


def item_cost(prompt_tokens: int, max_new_tokens: int, turns: int = 1) -> float:
    """Expected cost of one item, per turn: its new tokens, each attending over the prompt and the tokens before
    it (prompt x new tokens, plus the decode's own growth)."""
    return turns * max_new_tokens * (prompt_tokens + max_new_tokens)


def balanced_shards(costs: Sequence[float], n: int) -> list[int]:
    """The shard (0..n-1) of each item: longest expected cost first onto the least-loaded shard (LPT; ties to the
    lower shard, then the earlier item), so every process gets the same answer and loads differ by at most the
    largest item."""
    loads = [(0.0, shard) for shard in range(n)]
    assignment = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, shard = heapq.heappop(loads)
        assignment[index] = shard
        heapq.heappush(loads, (load + costs[index], shard))
    return assignment


def shard_dir(out: str | Path, rank: int, world_size: int) -> Path:
    return Path(out) / "shards" / f"{rank}-of-{world_size}"


def connect(env: LaunchEnv, hours: float = 24) -> None:
    """Join the launch's process group (gloo, at the launcher's MASTER_ADDR/MASTER_PORT) before any work, so a
    misconfigured launch fails at once. The group then waits as long as the slowest shard runs (`hours`)."""
    import torch.distributed as dist

    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise RunError(
            f"launched by {env.launcher} as {env.world_size} processes, but MASTER_ADDR and MASTER_PORT are not "
            "set: export the first node's address and a free port (examples/slurm.sbatch does)"
        )
    dist.init_process_group("gloo", rank=env.rank, world_size=env.world_size, timeout=timedelta(hours=hours))


def check_own_devices(env: LaunchEnv, device_uuid: str | None) -> None:
    """Refuse, on every rank alike, a launch in which two processes decode on one GPU (each shown the same
    single device: a CUDA_VISIBLE_DEVICES exported to every task, a node with fewer GPUs than processes),
    which would time each other's work. `device_uuid`: this process's GPU's (None on a CPU, which processes
    may share)."""
    import torch.distributed as dist

    uuids: list = [None] * env.world_size
    dist.all_gather_object(uuids, device_uuid)
    ranks: dict[str, list[int]] = {}
    for rank, uuid in enumerate(uuids):
        if uuid is not None:
            ranks.setdefault(uuid, []).append(rank)
    shared = [f"ranks {', '.join(map(str, r))} on GPU {uuid}" for uuid, r in ranks.items() if len(r) > 1]
    if shared:
        dist.destroy_process_group()
        raise RunError(
            f"{env.launcher} put more than one process on a GPU ({'; '.join(shared)}), so each would time "
            "the others' work: show each process its own GPU (srun --gpus-per-task=1, CUDA_VISIBLE_DEVICES "
            "per process, or all of the node's GPUs), or start no more processes per node than it has GPUs"
        )


def gather_finished(finished: bool) -> list[bool]:
    """Every rank's `finished`, in rank order, once all have arrived; then leave the group."""
    import torch.distributed as dist

    statuses: list = [None] * dist.get_world_size()
    dist.all_gather_object(statuses, finished)
    dist.destroy_process_group()
    return statuses
