"""Callables the SLURM tests submit through submitit.

They live in an importable module, not in a test file: cloudpickle pickles importable functions by
reference, and the job (`python -m submitit.core._submit`) must import them by name; the
`slurm_cluster` fixture puts this directory on the jobs' PYTHONPATH.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import submitit


# Add two numbers and report where the job ran (partition, CPUs, ids) as SLURM told it.
def add(a: int, b: int) -> dict[str, Any]:
    return {"sum": a + b,
            "partition": os.environ.get("SLURM_JOB_PARTITION"),
            "cpus_per_task": os.environ.get("SLURM_CPUS_PER_TASK"),
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
            "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID")}


# Square x, or fail the way a diverged cell does (negative x).
def square_or_fail(x: int) -> int:
    if x < 0:
        raise ValueError(f"cell {x} diverged")
    return x * x


# Announce that the job runs (a marker file), then wait up to `limit_s` to be cancelled.
def wait_to_be_cancelled(marker: Path, limit_s: float) -> str:
    marker.write_text(os.environ.get("SLURM_JOB_ID", ""))
    time.sleep(limit_s)
    return "not cancelled"


# The seed digest of the hash chain.
def chain_start() -> str:
    return hashlib.sha256(b"softdimo-slurm-chain").hexdigest()


# One step of the hash chain: digest_{i+1} = sha256(digest_i || i).
def chain_step(digest: str, step: int) -> str:
    return hashlib.sha256(f"{digest}:{step}".encode()).hexdigest()


# The chain's digest after `steps` steps, computed in one go (the uninterrupted reference).
def chain_value(steps: int) -> str:
    digest = chain_start()
    for step in range(steps):
        digest = chain_step(digest, step)
    return digest


# A long computation that checkpoints to disk after every step, so a requeued job resumes where
# it stopped; `submitit.helpers.Checkpointable.checkpoint` resubmits it (paths only, no state).
class ResumableChain(submitit.helpers.Checkpointable):
    def __init__(self, work_dir: Path, steps: int, step_s: float) -> None:
        self.work_dir, self.steps, self.step_s = work_dir, steps, step_s

    @property
    def checkpoint_path(self) -> Path:
        return self.work_dir / "checkpoint.json"

    @property
    def starts_path(self) -> Path:
        return self.work_dir / "starts.jsonl"

    # Resume from the checkpoint (if any), log this start, run the remaining steps.
    def __call__(self) -> dict[str, Any]:
        state = {"step": 0, "digest": chain_start()}
        if self.checkpoint_path.exists():
            state = json.loads(self.checkpoint_path.read_text())
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        with open(self.starts_path, "a") as f:
            f.write(json.dumps({"step": state["step"], "restart": restart}) + "\n")
        while state["step"] < self.steps:
            state = {"step": state["step"] + 1, "digest": chain_step(state["digest"], state["step"])}
            # Written atomically: a signal mid-write leaves the previous checkpoint intact.
            tmp = self.checkpoint_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.checkpoint_path)
            time.sleep(self.step_s)
        return {"digest": state["digest"], "starts": read_starts(self.work_dir)}


# The (step, restart) of every start of a ResumableChain, in order.
def read_starts(work_dir: Path) -> list[tuple[int, int]]:
    path = work_dir / "starts.jsonl"
    if not path.exists():
        return []
    return [(d["step"], d["restart"]) for d in map(json.loads, path.read_text().splitlines())]


# The step the checkpoint of a ResumableChain has reached (0 before the first one).
def checkpointed_step(work_dir: Path) -> int:
    path = work_dir / "checkpoint.json"
    return json.loads(path.read_text())["step"] if path.exists() else 0
