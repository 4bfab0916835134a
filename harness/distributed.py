"""The processes of one cell: a submitit job of N tasks runs every cell over N processes
(docs/distributed.md).

submitit's task environment gives each process its rank, the world size and rank 0's address
(`submitit.helpers.TorchDistributedEnvironment`); accelerate's `PartialState` then starts the
torch.distributed group and picks the process's device (gloo on CPU; one GPU per process
otherwise, NCCL for CUDA tensors beside gloo for CPU ones). A job of one task starts no group and
changes nothing. The group lives as long as the job, so a local worker that runs several cells in
turn starts it once.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from softdimo.parallel import DataParallel
from softdimo.teachers.cache import cached_dir

# How long a process waits in a collective for the others (e.g. while rank 0 waits for another
# job's lock on a shared cache entry) before the group fails.
GROUP_TIMEOUT = dt.timedelta(hours=2)

# Rank 0's rendezvous port lies in [LOWEST_PORT, the kernel's first ephemeral port), or in submitit's
# range [LOWEST_PORT, SUBMITIT_HIGHEST_PORT] where the kernel leaves no room; Linux's default
# ephemeral range where it cannot be read.
LOWEST_PORT = 20000
SUBMITIT_HIGHEST_PORT = 60000
DEFAULT_EPHEMERAL_PORTS = (32768, 60999)

#----------------------------------------------------------------------------


# This process's place among the processes of its cell; the default is the one-process run.
@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # The data-parallel view of the distillation loop (softdimo.parallel).
    @property
    def data_parallel(self) -> DataParallel:
        return DataParallel(self.rank, self.world_size)

    # Rank 0's `obj` on every process.
    def broadcast(self, obj: Any) -> Any:
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # Whether any process says `flag` (the agreed stop at a step boundary).
    def any(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    # Every process's `obj` in rank order on rank 0, None elsewhere.
    def gather_to_main(self, obj: Any) -> list[Any] | None:
        if self.world_size == 1:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


SINGLE = Processes()

#----------------------------------------------------------------------------


# The processes of the submitit job running this code: one (SINGLE) outside a job or in a job of
# one task; otherwise the group is started on first use and kept for the job's lifetime.
def job_processes() -> Processes:
    import submitit
    try:
        tasks = submitit.JobEnvironment().num_tasks
    except RuntimeError:
        return SINGLE
    return SINGLE if tasks == 1 else _start_group()


@functools.lru_cache(maxsize=1)
def _start_group() -> Processes:
    import submitit
    from accelerate import PartialState
    from submitit.helpers import TorchDistributedEnvironment

    if "MASTER_PORT" not in os.environ:                  # a launcher's or user's port wins
        os.environ["MASTER_PORT"] = str(rendezvous_port(str(submitit.JobEnvironment().job_id)))
    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    cpu = not torch.cuda.is_available() or os.environ.get("SOFTDIMO_DEVICE", "").startswith("cpu")  # forced CPU
    # On GPUs NCCL carries the CUDA tensors and gloo the small CPU ones (flags, logs, objects).
    PartialState(cpu=cpu, backend="gloo" if cpu else "cpu:gloo,cuda:nccl", timeout=GROUP_TIMEOUT)
    return Processes(env.rank, env.world_size, env.local_rank)


# Rank 0's port for the job `job_id`, the same on every process (a hash of the id), below the
# kernel's ephemeral range: submitit's own choice (20000-60000) can fall on a port that an outgoing
# connection holds at that moment (even another rank's connect to it), and rank 0 cannot listen.
def rendezvous_port(job_id: str, ephemeral: tuple[int, int] | None = None) -> int:
    first_ephemeral = (ephemeral or ephemeral_port_range())[0]
    top = first_ephemeral - 1 if first_ephemeral - 1 > LOWEST_PORT else SUBMITIT_HIGHEST_PORT
    digest = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big")
    return LOWEST_PORT + digest % (top - LOWEST_PORT + 1)


# The kernel's ephemeral (outgoing) port range; Linux's default where it cannot be read.
def ephemeral_port_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    try:
        low, high = (int(v) for v in path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_PORTS
    return low, high


# The device of this process in a group: its local GPU (accelerate's choice), or the CPU
# (accelerate numbers it by local rank, which torch.load's map_location does not accept).
def process_device() -> torch.device:
    from accelerate import PartialState
    device = PartialState().device
    return torch.device("cpu") if device.type == "cpu" else device


# `cached_dir` for all processes of a cell: rank 0 holds the cache lock and decides; on a miss
# every process runs `build` (together: it may contain collectives), rank 0's files are kept and
# the others build into a scratch directory. Returns (directory, was_cache_hit) on every process.
def shared_cached_dir(processes: Processes, root: Path, key: str, build: Callable[[Path], dict[str, Any]],
                      log: Callable[[str], None] = lambda s: None) -> tuple[Path, bool]:
    if processes.world_size == 1:
        return cached_dir(root, key, build, log)
    if processes.is_main:
        def build_together(tmp: Path) -> dict[str, Any]:
            processes.broadcast(False)
            return build(tmp)
        directory, hit = cached_dir(root, key, build_together, log)
        if hit:
            processes.broadcast(True)
        else:
            processes.barrier()
        return directory, hit
    if processes.broadcast(None):
        return root / key, True
    with tempfile.TemporaryDirectory() as scratch:
        build(Path(scratch))
    processes.barrier()
    return root / key, False
