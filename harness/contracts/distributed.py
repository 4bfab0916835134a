"""The processes of one cell: a submitit job of N tasks runs every cell over N processes
(docs/distributed.md).

submitit's task environment gives each process its rank, the world size and rank 0's address
(`submitit.helpers.TorchDistributedEnvironment`). The group starts in two steps with two
timeouts: the rendezvous (rank 0's TCPStore, then a store barrier that every task reaches,
within RENDEZVOUS_TIMEOUT: tasks may start minutes apart) and the torch.distributed group on that
store with the collective timeout (`collective_timeout()`, minutes, set per launch), which
accelerate's `PartialState` then finds initialised and completes with the process's device (gloo
on CPU; one GPU per process otherwise, NCCL for CUDA tensors beside gloo for CPU ones). A job of
one task starts no group and changes nothing. The group lives as long as the job, so a local
worker that runs several cells in turn starts it once.

Waits that can legitimately be long (rank 0 waiting for another job's cache lock, computing
whole-set metrics alone, claiming the next cell) never happen inside a collective: the other processes wait for
rank 0's word in the store (`Processes.share`), logging what they wait for, up to
MAIN_WAIT_TIMEOUT_S; if rank 0 dies meanwhile, the store goes with it and they fail at once.
Every process beats in the store (`harness.contracts.failures`), so a failing process can tell which
process failed first.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from harness.contracts import failures
from harness.contracts.failures import Failure
from softdimo.parallel import DataParallel
from softdimo.teachers.cache import cached_dir

COLLECTIVE_TIMEOUT_ENV = "SOFTDIMO_COLLECTIVE_TIMEOUT_S"   # set by the launcher for each job
DEFAULT_COLLECTIVE_TIMEOUT_S = 600          # a collective waiting this long for another process fails
# How long the tasks of a job may take to all arrive (import, CUDA start) before the group fails.
RENDEZVOUS_TIMEOUT = dt.timedelta(minutes=15)
# How long a process waits for rank 0 outside collectives (rank 0 has its own timeouts, e.g. for
# another job's cache lock, and its death ends the wait at once); said again every WAIT_LOG_EVERY_S.
MAIN_WAIT_TIMEOUT_S = 24 * 3600.0
WAIT_LOG_EVERY_S = 300.0
WAIT_QUIET_S = 10.0                                  # shorter waits are not logged
WAIT_POLL_S = 0.2

# Rank 0's rendezvous port lies in [LOWEST_PORT, the kernel's first ephemeral port), or in submitit's
# range [LOWEST_PORT, SUBMITIT_HIGHEST_PORT] where the kernel leaves no room; Linux's default
# ephemeral range where it cannot be read.
LOWEST_PORT = 20000
SUBMITIT_HIGHEST_PORT = 60000
DEFAULT_EPHEMERAL_PORTS = (32768, 60999)

#----------------------------------------------------------------------------


# The group's store as the processes use it beside collectives: rank 0's values for the others,
# numbered in the order every process asks for them.
class _Channel:
    def __init__(self, store: Any):
        self.store, self.count = store, 0

    def next_key(self) -> str:
        self.count += 1
        return f"share/{self.count}"

    # Wait (polling, outside any collective) until rank 0 has set `key`; returns its value.
    def wait(self, key: str, what: str, log: Callable[[str], None]) -> str:
        start, logged = time.monotonic(), None
        while not self.store.check([key]):
            waited = time.monotonic() - start
            if waited > MAIN_WAIT_TIMEOUT_S:
                raise TimeoutError(f"waited {waited / 3600:.1f} h for rank 0 ({what}); giving up")
            if waited > WAIT_QUIET_S and (logged is None or time.monotonic() - logged > WAIT_LOG_EVERY_S):
                log(f"waiting for rank 0 ({what}): {waited / 60:.1f} min so far, outside collectives")
                logged = time.monotonic()
            time.sleep(WAIT_POLL_S)
        return self.store.get(key).decode()


# This process's place among the processes of its cell; the default is the one-process run.
@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    channel: _Channel | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.world_size > 1 and self.channel is None:
            raise ValueError(f"process {self.rank} of {self.world_size} needs the group's store to pass rank 0's "
                             f"word beside collectives: make it with processes_over(store, ...)")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # The data-parallel view of the distillation loop (softdimo.parallel).
    @property
    def data_parallel(self) -> DataParallel:
        return DataParallel(self.rank, self.world_size)

    # Rank 0's `value` (JSON) on every process, passed through the store: the others wait for it
    # outside collectives, however long rank 0 takes, logging what they wait for (`waiting_for`).
    # Every process shares the same `topic`s in the same order; a mismatch is an error, not a wrong value.
    def share(self, topic: str, value: Any = None, waiting_for: str = "",
              log: Callable[[str], None] = lambda s: None) -> Any:
        if self.world_size == 1:
            return value
        key = self.channel.next_key()
        if self.is_main:
            self.channel.store.set(key, json.dumps([topic, value]))
            return value
        shared, value = json.loads(self.channel.wait(key, waiting_for or topic, log))
        if shared != topic:
            raise RuntimeError(f"the processes are out of step: rank 0 shared {shared!r} where rank {self.rank} "
                               f"expected {topic!r}")
        return value

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

    # The first failure of the cell after this process failed with `error` (the exception being
    # handled), and whether this process records it (`harness.contracts.failures`).
    def first_failure(self, error: BaseException) -> tuple[Failure, bool]:
        tb = traceback.format_exc()
        if self.world_size == 1:
            return failures.own_failure(0, 1, error, tb), True
        return failures.first_failure(self.channel.store, self.rank, self.world_size, error, tb)


SINGLE = Processes()


# The processes of a group started by other code (tests, benchmarks: their own
# `init_process_group`), with `store`, a store every process of the group opens (e.g. one
# `torch.distributed.FileStore` path), carrying rank 0's word beside collectives (`share`).
def processes_over(store: Any, rank: int, world_size: int, local_rank: int | None = None) -> Processes:
    return Processes(rank, world_size, rank if local_rank is None else local_rank, _Channel(store))

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


# The collective timeout of this job: $SOFTDIMO_COLLECTIVE_TIMEOUT_S (set by the launcher from
# --collective-timeout or the profile's collective_timeout_s), else DEFAULT_COLLECTIVE_TIMEOUT_S.
def collective_timeout() -> dt.timedelta:
    text = os.environ.get(COLLECTIVE_TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_COLLECTIVE_TIMEOUT_S
    except ValueError:
        raise ValueError(f"${COLLECTIVE_TIMEOUT_ENV} = {text!r}: expected seconds, e.g. 600") from None
    if seconds <= 0:
        raise ValueError(f"${COLLECTIVE_TIMEOUT_ENV} = {text!r}: must be above 0")
    return dt.timedelta(seconds=seconds)


@functools.lru_cache(maxsize=1)
def _start_group() -> Processes:
    import atexit

    import submitit
    from accelerate import PartialState
    from submitit.helpers import TorchDistributedEnvironment

    if "MASTER_PORT" not in os.environ:                  # a launcher's or user's port wins
        os.environ["MASTER_PORT"] = str(rendezvous_port(str(submitit.JobEnvironment().job_id)))
    env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    cpu = not torch.cuda.is_available() or os.environ.get("SOFTDIMO_DEVICE", "").startswith("cpu")  # forced CPU
    timeout = collective_timeout()
    store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, is_master=env.rank == 0,
                          timeout=RENDEZVOUS_TIMEOUT, wait_for_workers=False)
    _arrive(store, env.world_size)
    store.set_timeout(timeout)
    # On GPUs NCCL carries the CUDA tensors and gloo the small CPU ones (flags, logs, objects).
    backend = "gloo" if cpu else "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend, store=dist.PrefixStore("default_pg", store), rank=env.rank,
                            world_size=env.world_size, timeout=timeout)
    PartialState(cpu=cpu, backend=backend)               # the group exists: accelerate adds the device
    atexit.register(failures.Heartbeat(store, env.rank).stop)
    return Processes(env.rank, env.world_size, env.local_rank, _Channel(store))


# The rendezvous barrier: wait in the store until every task of the job has arrived (within
# RENDEZVOUS_TIMEOUT); the last to arrive says so.
def _arrive(store: Any, world_size: int) -> None:
    if store.add("rendezvous/arrived", 1) == world_size:
        store.set("rendezvous/complete", "1")
    store.wait(["rendezvous/complete"], RENDEZVOUS_TIMEOUT)


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


# `cached_dir` for all processes of a cell: rank 0 holds the cache lock and decides while the
# others wait for its word outside collectives (another job may hold the lock for hours); on a miss
# every process runs `build` (together: it may contain collectives), rank 0's files are kept and
# the others build into a scratch directory. Returns (directory, was_cache_hit) on every process.
def shared_cached_dir(processes: Processes, root: Path, key: str, build: Callable[[Path], dict[str, Any]],
                      log: Callable[[str], None] = lambda s: None) -> tuple[Path, bool]:
    if processes.world_size == 1:
        return cached_dir(root, key, build, log)
    entry = f"cache entry {root / key}"
    if processes.is_main:
        def build_together(tmp: Path) -> dict[str, Any]:
            processes.share("cache hit", False)
            return build(tmp)
        directory, hit = cached_dir(root, key, build_together, log)
        processes.share("cache hit" if hit else "cache entry built", True)
        return directory, hit
    if processes.share("cache hit", waiting_for=f"whether {entry} exists; it may wait for another job's lock", log=log):
        return root / key, True
    with tempfile.TemporaryDirectory() as scratch:
        build(Path(scratch))
    processes.share("cache entry built", waiting_for=f"{entry} to be put in place", log=log)
    return root / key, False
