"""A queue of cells shared by the local executor's workers: each worker walks the same ordered
list and runs a cell only if it wins the cell's claim (an exclusive file in the launch's queue
directory), so a worker that finishes early takes the next cell instead of idling while another
is still on a long cell. A claim names its job, so a job that dies is blamed only for its own cells.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from harness.contracts.run_spec import RunSpec
from softdimo.files import atomic_write

#----------------------------------------------------------------------------


# The order in which workers take cells: the cells of different teachers interleaved (workers
# start on different teachers and train them side by side instead of waiting on one teacher-cache
# lock), then every cell whose `work_key` an earlier cell has (e.g. the same trained student) moved
# to the end, so that it starts once that work is done instead of waiting on its lock.
def queue_order(specs: Sequence[RunSpec], work_key: Callable[[RunSpec], str | None]) -> list[RunSpec]:
    by_teacher: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        key = (spec.teacher, tuple(kv for kv in spec.params if kv[0].startswith("teacher.")))
        by_teacher.setdefault(key, []).append(spec)
    groups = list(by_teacher.values())
    interleaved = [g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)]
    first, repeats, seen = [], [], set()
    for spec in interleaved:
        key = work_key(spec)
        (repeats if key is not None and key in seen else first).append(spec)
        seen.add(key)
    return first + repeats


# Claim a cell for job `job_id`; False when another worker claimed it first. The claim appears whole
# (job id included) or not at all.
def claim(queue_dir: str | Path, run_id: str, job_id: str) -> bool:
    try:
        atomic_write(Path(queue_dir) / run_id, job_id, exclusive=True)
    except FileExistsError:
        return False
    return True


# The job that claimed a cell, None while no worker has.
def claimant(queue_dir: str | Path, run_id: str) -> str | None:
    try:
        return (Path(queue_dir) / run_id).read_text()
    except FileNotFoundError:
        return None


# Whether the job that claimed a cell may still run it (a live process on this host; the local
# executor's job ids are process ids). False when none claimed it.
def claimant_alive(queue_dir: str | Path, run_id: str) -> bool:
    job = claimant(queue_dir, run_id)
    return job is not None and pid_alive(job)


# Whether a process id names a live process (one of another user counts as live).
def pid_alive(pid: object) -> bool:
    try:
        os.kill(int(str(pid)), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True
