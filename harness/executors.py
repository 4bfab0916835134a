"""Executors: how pending cells become submitit jobs (`debug`, `local`, `slurm`).

Every executor is submitit's: the submitted callables are `harness.job.execute` /
`execute_lane` with the spec as JSON and two paths, never a model. Each job gets
SOFTDIMO_THREADS = cores / jobs running at once.

- `debug`: submitit's DebugExecutor; one job per cell, run in this process, one after the other,
  when the launcher waits on it (so `--no-wait` does not apply to it).
- `local`: submitit's LocalExecutor starts every job at once and has no concurrency cap, so the
  cap is ours: the pending cells are dealt round-robin into at most `--max-parallel` *lanes*, and
  each lane is one job running its cells in order. This needs no driver loop, so it works with
  `--no-wait`; its cost is that a lane does not steal work from another.
- `slurm`: AutoExecutor(cluster="slurm"); one job per cell, submitted as job arrays
  (`executor.batch()`) chunked to the profile's array limit, `--max-parallel` as the array
  parallelism. Completed by the SLURM issue (profiles, checkpointing, accounting).
"""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import yaml

from harness import job as job_module
from harness.spec import RunSpec

PROFILE_DIR_ENV = "SOFTDIMO_PROFILES"

#----------------------------------------------------------------------------


# A named resource profile: what one job may use and how long one cell may take.
@dataclass(frozen=True)
class Resources:
    name: str = "default"
    timeout_min: int = 240                 # per cell; a local lane gets this times its cells
    cpus_per_task: int | None = None       # None: this machine's cores / jobs at once (local)
    gpus_per_node: int | None = None       # None: local: every visible GPU; slurm: 0
    mem_gb: float | None = None            # None: the cluster's default
    array_limit: int = 1000                # largest job array the cluster accepts
    slurm: Mapping[str, Any] = field(default_factory=dict)  # extra `slurm_*` keys, verbatim


# A launch that cannot start (e.g. a resource profile missing or malformed); nothing submitted.
class LaunchError(RuntimeError):
    pass


# The directory resource profiles are read from: $SOFTDIMO_PROFILES, else <project>/slurm/profiles.
def profile_dir() -> Path:
    return Path(os.environ.get(PROFILE_DIR_ENV)
                or Path(__file__).resolve().parents[1] / "slurm" / "profiles")


# A resource profile by name (`<profile dir>/<name>.yaml`); None gives the defaults.
def load_resources(name: str | None) -> Resources:
    if name is None:
        return Resources()
    path = profile_dir() / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in profile_dir().glob("*.yaml"))
        raise LaunchError(f"resource profile {name!r} not found at {path}; available: "
                          f"{', '.join(known) or '(none)'}")
    body = yaml.safe_load(path.read_text()) or {}
    allowed = {f.name for f in fields(Resources)} - {"name"}
    unknown = sorted(set(body) - allowed) if isinstance(body, dict) else ["(not a mapping)"]
    if unknown:
        raise LaunchError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; allowed: "
                          f"{', '.join(sorted(allowed))}")
    return Resources(name=name, **body)

#----------------------------------------------------------------------------


# One submitted job and the cells it will write records for.
@dataclass
class Submission:
    job: Any                               # a submitit.Job
    specs: list[RunSpec]

    @property
    def run_ids(self) -> list[str]:
        return [s.run_id for s in self.specs]


# What an executor gets: the pending cells of one resource group and where things go.
@dataclass(frozen=True)
class SubmitRequest:
    specs: Sequence[RunSpec]
    grid: str
    results_root: Path
    folder: Path                           # submitit folder, results/<grid>/.submitit/%j
    resources: Resources
    max_parallel: int


# A registered executor.
@dataclass(frozen=True)
class ExecutorEntry:
    name: str
    submit: Callable[[SubmitRequest], list[Submission]]
    alive: Callable[[Mapping[str, Any]], bool]  # is the job of a submission marker still running?
    run_in_process: Callable[[Any], BaseException | None] | None = None  # debug: run a job here
    description: str = ""

    @property
    def in_process(self) -> bool:
        return self.run_in_process is not None


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def _env(**values: str) -> Iterator[None]:
    # Set environment variables while submitting (debug and local jobs copy the environment).
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _args(spec: RunSpec, req: SubmitRequest) -> tuple[dict[str, Any], str, str]:
    return spec.to_json(), req.grid, str(req.results_root)


# debug: one in-process job per cell.
def submit_debug(req: SubmitRequest) -> list[Submission]:
    import submitit
    executor = submitit.AutoExecutor(folder=req.folder, cluster="debug")
    executor.update_parameters(timeout_min=req.resources.timeout_min)
    with _env(**{job_module.THREADS_ENV: str(req.resources.cpus_per_task or _cores())}):
        return [Submission(executor.submit(job_module.execute, *_args(s, req)), [s])
                for s in req.specs]


# Run a debug job here, in the job's environment, returning its exception: `job.result()` would
# open pdb on an error, `job.exception()` alone would skip the job environment.
def run_debug_job(job: Any) -> BaseException | None:
    backup = dict(os.environ)
    os.environ.clear()
    os.environ.update(job.environ)
    try:
        return job.exception()
    finally:
        os.environ.clear()
        os.environ.update(backup)


# Deal cells round-robin into at most `n` lanes (lane i holds cells i, i+n, i+2n, ...).
def lanes(specs: Sequence[RunSpec], n: int) -> list[list[RunSpec]]:
    n = max(1, min(n, len(specs)))
    return [list(specs[i::n]) for i in range(n)]


# local: at most `max_parallel` jobs, each running its lane of cells in order.
def submit_local(req: SubmitRequest) -> list[Submission]:
    import submitit
    import torch
    executor = submitit.AutoExecutor(folder=req.folder, cluster="local")
    groups = lanes(req.specs, req.max_parallel)
    threads = req.resources.cpus_per_task or max(1, _cores() // len(groups))
    gpus = req.resources.gpus_per_node
    out = []
    with _env(**{job_module.THREADS_ENV: str(threads)}):
        for lane in groups:
            executor.update_parameters(
                name=f"softdimo-{req.grid}", timeout_min=req.resources.timeout_min * len(lane),
                gpus_per_node=torch.cuda.device_count() if gpus is None else gpus)
            job = executor.submit(job_module.execute_lane, [s.to_json() for s in lane], req.grid,
                                  str(req.results_root))
            out.append(Submission(job, lane))
    return out


# slurm: one array element per cell, arrays chunked to the profile's array limit.
def submit_slurm(req: SubmitRequest) -> list[Submission]:
    import submitit
    r = req.resources
    threads = r.cpus_per_task or 1
    executor = submitit.AutoExecutor(folder=req.folder, cluster="slurm")
    executor.update_parameters(
        name=f"softdimo-{req.grid}", timeout_min=r.timeout_min, cpus_per_task=threads,
        gpus_per_node=r.gpus_per_node or 0, slurm_array_parallelism=req.max_parallel,
        slurm_setup=[f"export {job_module.THREADS_ENV}={threads}"],
        **({"mem_gb": r.mem_gb} if r.mem_gb is not None else {}),
        **{f"slurm_{k}": v for k, v in r.slurm.items()})
    out = []
    for start in range(0, len(req.specs), r.array_limit):
        chunk = req.specs[start:start + r.array_limit]
        with executor.batch():
            jobs = [executor.submit(job_module.execute, *_args(s, req)) for s in chunk]
        out += [Submission(j, [s]) for j, s in zip(jobs, chunk)]
    return out


# A local job is alive while its controller process runs (same host only).
def local_alive(marker: Mapping[str, Any]) -> bool:
    if marker.get("host") != socket.gethostname():
        return True                        # cannot tell from here; assume it still runs
    try:
        os.kill(int(marker["job_id"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True
    return True


# A SLURM job is alive until submitit sees its result file or a final scheduler state (sacct);
# when the scheduler cannot be asked, it is assumed alive (the SLURM issue refines this).
def slurm_alive(marker: Mapping[str, Any]) -> bool:
    from submitit.slurm.slurm import SlurmJob
    try:
        return not SlurmJob(marker["folder"], str(marker["job_id"])).done(force_check=True)
    except KeyError:
        return False


EXECUTORS = (
    ExecutorEntry("debug", submit_debug, alive=lambda marker: False, run_in_process=run_debug_job,
                  description="submitit DebugExecutor: in this process, one cell after another"),
    ExecutorEntry("local", submit_local, alive=local_alive,
                  description="submitit LocalExecutor: subprocesses, at most --max-parallel "
                              "lanes of cells"),
    ExecutorEntry("slurm", submit_slurm, alive=slurm_alive,
                  description="submitit on SLURM: job arrays per resource profile"),
)
