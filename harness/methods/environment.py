"""The environment variables a job reads (set by the launcher or the user), and the run context
they make: the shared cache, torch threads per job, the device.

| variable | meaning |
|---|---|
| `SOFTDIMO_CACHE` | shared cache of trained mini teachers and students (default `<results>/.cache`; made with mode 0700) |
| `SOFTDIMO_THREADS` | torch threads per job; the launcher sets it to cores / jobs at once |
| `SOFTDIMO_DEVICE` | force a device (`cpu`, `cuda:0`); default: CUDA when available |
| `SOFTDIMO_LOG_WITH` | accelerate trackers logging the run live (`--log-with`; `harness.contracts.tracking`) |
| `SOFTDIMO_COLLECTIVE_TIMEOUT_S` | seconds a collective of a cell's processes waits before failing; the launcher sets it (`harness.contracts.distributed`) |
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from harness.contracts.distributed import SINGLE, Processes, process_device
from harness.contracts.entries import RunContext
from harness.contracts.tracking import NO_TRACKERS, RunTrackers
from harness.store.assets.trust import private_dir

THREADS_ENV = "SOFTDIMO_THREADS"
CACHE_ENV = "SOFTDIMO_CACHE"
DEVICE_ENV = "SOFTDIMO_DEVICE"

#----------------------------------------------------------------------------


# The shared cache: $SOFTDIMO_CACHE, else <results root>/.cache.
def cache_dir(results_root: str | Path) -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(results_root) / ".cache")


# Torch threads for this job: $SOFTDIMO_THREADS (set by the launcher per job), else 1.
def threads() -> int:
    try:
        return max(1, int(os.environ.get(THREADS_ENV, "1")))
    except ValueError:
        return 1


# The job's device: $SOFTDIMO_DEVICE, else CUDA when available, else the CPU.
def device() -> torch.device:
    name = os.environ.get(DEVICE_ENV)
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# The context of one run under `results_root`, with this process's torch threads set and the cache
# made private to the user (`private_dir`); a process of a group runs on the device accelerate gave it.
def run_context(run_dir: Path, results_root: str | Path, log: Callable[[str], None],
                processes: Processes = SINGLE, trackers: RunTrackers = NO_TRACKERS) -> RunContext:
    own_device = device() if processes.world_size == 1 else process_device()
    ctx = RunContext(run_dir=run_dir, cache_dir=cache_dir(results_root), device=own_device, threads=threads(),
                     log=log, processes=processes, trackers=trackers, results_root=Path(results_root))
    torch.set_num_threads(ctx.threads)
    private_dir(ctx.cache_dir)
    return ctx
