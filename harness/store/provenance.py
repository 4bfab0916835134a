"""Where a record came from: the code version (git commit, dirty flag, hash of the uncommitted
changes), the installed packages, the machine and accelerator (`harness.store.machine`: CPU, numeric
libraries, threads), and the submitit job running the code. Written into every record by a cell (`harness.cell`) and by an evaluation of outside samples
(`harness.cell.evaluate`); the launcher pins the code version of SLURM jobs with it.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import platform
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.store.machine import machine

PACKAGES = ("softdimo-harness", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "pandas",
            "submitit", "accelerate", "pyyaml", "pillow", "matplotlib", "safetensors", "torch-fidelity",
            "clean-fid", "open_clip_torch", "transformers")

#----------------------------------------------------------------------------


# The code a job runs: git commit, dirty flag and a hash of the uncommitted changes to tracked
# files (`git diff HEAD`; untracked files such as results are not part of it).
@dataclass(frozen=True)
class CodeVersion:
    git_commit: str | None
    git_dirty: bool | None
    diff_sha256: str | None = None       # None when there are no changes to tracked files

    # Same commit and same uncommitted changes (a dirty flag from untracked files alone is not
    # a code change).
    def same_code(self, other: "CodeVersion") -> bool:
        return self.git_commit == other.git_commit and self.diff_sha256 == other.diff_sha256

    def describe(self) -> str:
        if self.git_commit is None:
            return "no git checkout"
        changes = f" with uncommitted changes {self.diff_sha256[:12]}" if self.diff_sha256 else ""
        return f"commit {self.git_commit[:12]}{changes}"


# The code version of the project checkout holding this code (cached per process).
@functools.lru_cache(maxsize=1)
def code_version() -> CodeVersion:
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain").strip())
        diff = git("diff", "HEAD", "--binary") if dirty else ""
    except (OSError, subprocess.SubprocessError):
        return CodeVersion(None, None)
    return CodeVersion(commit, dirty, hashlib.sha256(diff.encode()).hexdigest() if diff else None)


# Installed versions of the packages a result depends on.
@functools.lru_cache(maxsize=1)
def packages() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


# "cpu" or "<count> x <device name>" of this process's accelerators.
def accelerator() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"


# A process's device as records name it: "cpu", or "cuda:<index> <GPU name>".
def device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} {torch.cuda.get_device_name(index)}"


# (executor name, job id, log path) of the submitit job running this code, if any.
def job_environment() -> tuple[str, str | None, str | None]:
    import submitit
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:
        return "none", None, None
    try:
        log = str(env.paths.stdout)
    except KeyError:
        log = None
    return env.cluster, env.job_id, log


# The log (stdout) of task `rank` of the submitit job running this code, None outside a job.
def task_log(rank: int) -> str | None:
    import submitit
    from submitit.core.utils import JobPaths
    try:
        env = submitit.JobEnvironment()
        return str(JobPaths(env.paths.folder, job_id=env.job_id, task_id=rank).stdout)
    except (RuntimeError, KeyError):
        return None


# The current time, ISO 8601 with the local offset.
def now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")


# Where a record was made: code version, packages, machine, the submitit job, start and end.
def provenance(started: str) -> dict[str, Any]:
    version = code_version()
    executor, job_id, log = job_environment()
    return {"git_commit": version.git_commit, "git_dirty": version.git_dirty, "packages": packages(),
            "host": socket.gethostname(), "python": platform.python_version(), "accelerator": accelerator(),
            "machine": machine(),
            "executor": executor, "job_id": job_id, "submitit_log": log, "started": started, "finished": now()}
