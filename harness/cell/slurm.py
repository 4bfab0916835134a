"""The SLURM commands the harness uses besides submitit: `sacct` for job states (a hint for
display and for noticing jobs that ended without a record) and cost, `squeue` for queued jobs
sacct does not list yet (held by a dependency), `scancel` to cancel; and srun's report of the task
that failed first, from a job's log.

Records stay the truth: a cell is done only when its `ok` record exists. Everything here returns
None / an empty answer instead of raising when SLURM or its accounting cannot be asked, so a
cluster without `sacct` still runs grids (submitit then relies on its result files).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

SACCT_TIMEOUT_S = 30
# Job states after which a job never runs again (sacct spells CANCELLED as "CANCELLED by <uid>").
FINAL_STATES = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
                "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "TIMEOUT")
_ARRAY_ROW = re.compile(r"^(\d+)_\[([^\]]+)\]$")   # a pending array range, e.g. 12_[3-5,7%2]
_BAD_TASK = re.compile(r"(?m)^srun: error: (\S+): tasks? (\d+)[-,\d]*: (.+)$")

#----------------------------------------------------------------------------


# Whether a job in `state` (as sacct prints it) has ended for good.
def is_final(state: str) -> bool:
    return state.split()[0].rstrip("+") in FINAL_STATES if state else False


# The ids one sacct row stands for: "12_3" -> ["12_3"]; "12_[3-5,7%2]" -> 12_3, 12_4, 12_5, 12_7.
def expand_row_id(row_id: str) -> list[str]:
    match = _ARRAY_ROW.match(row_id)
    if not match:
        return [row_id]
    array, ranges = match.group(1), match.group(2).split("%")[0]
    out = []
    for part in ranges.split(","):
        lo, _, hi = part.partition("-")
        out += [f"{array}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


# {job id: state} for the given job ids (array tasks as "<array>_<index>") from one sacct call;
# None when sacct cannot be asked (not installed, no accounting, controller unreachable).
def sacct_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    out = _sacct(["-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)])
    if out is None:
        return None
    wanted, states = set(ids), {}
    for line in out.splitlines():
        row_id, _, state = line.partition("|")
        for jid in expand_row_id(row_id.strip()):
            if jid in wanted:
                states[jid] = state.strip()
    return states


# {job id: "STATE (reason)"} from one squeue call, for queued jobs (array tasks one per line):
# what sacct does not show yet, e.g. a job held by a dependency ("PENDING (Dependency)", or
# "PENDING (DependencyNeverSatisfied)" when the job it waits for failed). None when squeue
# cannot be asked.
def squeue_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    if shutil.which("squeue") is None:
        return None
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(ids)], capture_output=True,
                              text=True, timeout=SACCT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    states = {}
    for line in done.stdout.splitlines():
        job, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        if job.strip() in ids:
            states[job.strip()] = f"{state} ({reason})" if reason and reason != "None" else state
    return states


def _sacct(args: Sequence[str]) -> str | None:
    if shutil.which("sacct") is None:
        return None
    try:
        done = subprocess.run(["sacct", *args], capture_output=True, text=True,
                              timeout=SACCT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


# Cancel jobs (array tasks "<array>_<index>" or whole arrays) with one scancel call; returns the
# error text, or None when scancel succeeded.
def cancel(job_ids: Sequence[str]) -> str | None:
    if not job_ids:
        return None
    if shutil.which("scancel") is None:
        return "scancel not found: is this a SLURM login node?"
    done = subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit code {done.returncode}")

#----------------------------------------------------------------------------


# The SLURM job this process runs in, from its environment (None outside SLURM).
@dataclass(frozen=True)
class JobInfo:
    job_id: str                  # "<array>_<index>" for array tasks, else SLURM_JOB_ID
    restart_count: int           # SLURM_RESTART_COUNT: requeues so far (unset on the first run)
    partition: str | None
    node: str | None

    def to_json(self) -> dict[str, object]:
        return {"job_id": self.job_id, "restart_count": self.restart_count,
                "partition": self.partition, "node": self.node}


def current_job() -> JobInfo | None:
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return JobInfo(job_id=f"{array}_{task}" if array and task else env["SLURM_JOB_ID"],
                   restart_count=int(env.get("SLURM_RESTART_COUNT") or 0),
                   partition=env.get("SLURM_JOB_PARTITION"), node=env.get("SLURMD_NODENAME"))


# What accounting says a job used so far, summed over its runs (a requeued job has one row per
# run: `sacct --duplicates`): elapsed seconds, allocated GPUs, GPU hours, and each start's state,
# seconds and GPU hours. None without sacct.
def job_usage(job_id: str) -> dict[str, Any] | None:
    out = _sacct(["-X", "-n", "-P", "-D", "-o", "JobID,State,ElapsedRaw,AllocTRES", "-j", job_id])
    if not out:
        return None
    starts = []
    for line in out.splitlines():
        fields = line.split("|")
        if len(fields) != 4 or not fields[2].isdigit():
            continue
        seconds, gpus = int(fields[2]), _gpus(fields[3])
        starts.append({"state": fields[1], "elapsed_s": seconds, "gpus": gpus,
                       "accelerator_hours": round(seconds * gpus / 3600, 6)})
    if not starts:
        return None
    return {"elapsed_s": sum(r["elapsed_s"] for r in starts), "runs": len(starts), "gpus": starts[-1]["gpus"],
            "accelerator_hours": round(sum(r["elapsed_s"] * r["gpus"] for r in starts) / 3600, 6),
            "starts": starts}


# The first task srun reports as failed in a job's log (srun's own lines, e.g. "srun: error: node7:
# task 1: Killed"): (task, what srun said), None when there is none.
def first_bad_task(log_text: str) -> tuple[int, str] | None:
    match = _BAD_TASK.search(log_text)
    return (int(match.group(2)), match.group(3).strip()) if match else None


# GPUs in an AllocTRES string such as "billing=8,cpu=8,gres/gpu=2,mem=64G,node=1".
def _gpus(tres: str) -> int:
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key == "gres/gpu" and value.isdigit():
            return int(value)
    return 0
