"""Executors: how pending cells become submitit jobs (`debug`, `local`, `slurm`).

Every executor is submitit's: the submitted callables are the launcher's (`JobCallables`:
`harness.cell.execute`, `execute_queue`, `SlurmCell`) with specs as JSON and paths, never a model. Each job gets
SOFTDIMO_THREADS = its CPUs (the profile's `cpus_per_task`, else cores / jobs running at once),
SOFTDIMO_LOG_WITH = the trackers of `--log-with` when given (`harness.contracts.tracking`), and
SOFTDIMO_COLLECTIVE_TIMEOUT_S = the collective timeout of a cell's processes (`--collective-timeout`,
else the profile's `collective_timeout_s`, else 10 minutes). A resource profile
(`harness.grid.profiles`, `slurm/profiles/<name>.yaml`) gives the time limit and resources; without
one, `debug` and `local` use DEFAULT_TIMEOUT_MIN and this machine.

- `debug`: submitit's DebugExecutor; one job per cell, run in this process, one after the other,
  when the launcher waits on it (so `--no-wait` does not apply to it).
- `local`: submitit's LocalExecutor starts every job at once and has no concurrency cap, so the
  cap is ours: at most `--max-parallel` *worker* jobs share one ordered queue of the pending cells
  (`harness.cell.workqueue`), each taking the next unclaimed cell when it is free, so workers stay
  busy until the queue is empty. This needs no driver loop, so it works with `--no-wait`. With
  `--procs-per-cell N` a worker is a job of N tasks that run each cell together
  (`harness.contracts.distributed`): N CPU processes (gloo) without a GPU, else one per GPU.
- `slurm`: one submitit SLURM executor per profile; one array task per cell (`SlurmCell`:
  checkpointable, code-version checked; srun ends every task when one exits badly), arrays chunked to the profile's `max_array_size`
  (submitit does not split them), the profile's `timeout_min` always explicit, and
  `--max-parallel` (else the profile's `array_parallelism`) tasks at once. A cell runs over the
  profile's `nodes` x `tasks_per_node` processes. Job states come from
  one `sacct` call for all jobs (while waiting, at most every SACCT_POLL_S). Without accounting
  they come from submitit's result files, so a job killed before writing one counts as running
  until `--cancel` (or deleting its cells' `.submitted` markers).
"""
from __future__ import annotations

import os
import socket
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from harness.cell import slurm, workqueue
from harness.contracts import registry
from harness.contracts.distributed import COLLECTIVE_TIMEOUT_ENV, DEFAULT_COLLECTIVE_TIMEOUT_S
from harness.contracts.run_spec import RunSpec
from harness.contracts.tracking import LOG_WITH_ENV
from harness.grid.dependencies import Need, shared_work
from harness.grid.profiles import SlurmProfile, to_submitit_executor_kwargs, to_submitit_parameters
from harness.methods.environment import THREADS_ENV
from harness.methods.numerics import MINI_THREADS, pinned_environment
from harness.store.provenance import CodeVersion

DEFAULT_TIMEOUT_MIN = 240                  # per cell, for debug / local without a profile
SACCT_POLL_S = 10.0                        # while waiting, at most one sacct call this often
QUEUES_DIR = "queues"                      # local: <submitit folder>/queues/<launch>/<run_id> claims

#----------------------------------------------------------------------------


# A launch that cannot start (e.g. no resource profile for SLURM, sbatch refusing a job);
# `submitted` holds what went out before the failure.
class LaunchError(RuntimeError):
    def __init__(self, message: str, submitted: Sequence["SubmittedJob"] = ()):
        super().__init__(message)
        self.submitted = list(submitted)


# One submitted job and the cells it will write records for.
@dataclass
class SubmittedJob:
    job: Any                               # a submitit.Job
    specs: list[RunSpec]
    marker: dict[str, Any] = field(default_factory=dict)  # extra marker fields (array id, log)
    queue: Path | None = None              # local workers: the claim directory this job shares
                                           # with the launch's other workers; None: it runs all its cells

    @property
    def run_ids(self) -> list[str]:
        return [s.run_id for s in self.specs]


# What jobs run, as the launcher hands them to an executor: one cell (`run_cell(spec_json, grid,
# results_root)`), a worker's share of a queue (`run_queue(spec_jsons, grid, results_root, queue_dir)`),
# and a SLURM array task (`slurm_cell(spec_json, grid, results_root, terms)`, `terms(**fields)`).
@dataclass(frozen=True)
class JobCallables:
    run_cell: Callable[..., Any]
    run_queue: Callable[..., Any]
    slurm_cell: Callable[..., Any]
    terms: Callable[..., Any]


# What an executor gets: the pending cells of one resource group, what their jobs run, and where
# things go.
@dataclass(frozen=True)
class SubmitRequest:
    specs: Sequence[RunSpec]
    grid: str
    results_root: Path
    folder: Path                           # submitit folder, results/<grid>/.submitit/%j
    profile: SlurmProfile | None           # resource profile of this group (None: defaults)
    max_parallel: int | None               # jobs at once; None: local: cores, slurm: the profile's
    jobs: JobCallables
    code: CodeVersion = CodeVersion(None, None)  # code at submission
    allow_code_change: bool = False        # let SLURM jobs run on other code than submitted
    procs_per_cell: int = 1                # local: processes running each cell together
    log_with: tuple[str, ...] = ()         # accelerate trackers logging each run live (harness.contracts.tracking)
    needs: Mapping[str, Sequence[Need]] = field(default_factory=dict)  # run id -> cells it starts after
    running_jobs: Mapping[str, str] = field(default_factory=dict)  # run id -> job of a cell still running
                                                                   # from an earlier launch (a need)
    since: float = 0.0                     # when the launch planned: older records are earlier attempts'
    collective_timeout_s: int | None = None  # --collective-timeout; None: the profile's, else the default

    # Seconds a collective of a cell's processes waits before it fails.
    @property
    def collective_timeout(self) -> int:
        if self.collective_timeout_s is not None:
            return self.collective_timeout_s
        return self.profile.collective_timeout_s if self.profile else DEFAULT_COLLECTIVE_TIMEOUT_S


# What the scheduler says about a job submitted earlier: may it still run, and its state.
@dataclass(frozen=True)
class JobState:
    alive: bool
    state: str                             # e.g. "RUNNING", "PENDING", "CANCELLED by 0", "ended"


# What the scheduler tells about a job that ended without writing a cell's record: the task that
# failed first (when it says) and what accounting charged (`slurm.job_usage`, when it can).
@dataclass(frozen=True)
class JobEnd:
    rank: int | None = None                # the task (= rank) reported failed first
    detail: str = ""                       # how, e.g. "srun: task 1: Killed"
    usage: dict[str, Any] | None = None    # sacct's elapsed seconds and GPU hours


# A registered executor.
@dataclass(frozen=True)
class ExecutorEntry:
    name: str
    submit: Callable[[SubmitRequest], list[SubmittedJob]]
    states: Callable[[Sequence[Mapping[str, Any]]], list[JobState]]  # of submission markers
    ended: Callable[[Sequence[SubmittedJob]], list[str | None]] = lambda subs: [
        "ended" if s.job.done() else None for s in subs]   # how each job ended; None: running
    run_in_process: Callable[[Any], BaseException | None] | None = None  # debug: run a job here
    cancel: Callable[[Sequence[Mapping[str, Any]]], str | None] | None = None  # error or None
    job_end: Callable[[Any], JobEnd] = lambda job: JobEnd()   # of a job that ended without a record
    description: str = ""
    ended_poll_s: float = 0.0              # least seconds between two `ended` calls while waiting

    @property
    def in_process(self) -> bool:
        return self.run_in_process is not None


# The executors a launch may name (`--executor`): the built-ins below register themselves here, a
# plugin module adds its own.
registered: registry.Registry[ExecutorEntry] = registry.Registry("executor")


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


# The environment a debug or local job starts with: its threads and, when asked, its trackers.
def _job_env(req: SubmitRequest, threads: int) -> dict[str, str]:
    return {THREADS_ENV: str(threads), COLLECTIVE_TIMEOUT_ENV: str(req.collective_timeout),
            **({LOG_WITH_ENV: ",".join(req.log_with)} if req.log_with else {})}


# Torch threads of a job on this machine: its share of the cores, at most the profile's CPUs.
def _threads(req: SubmitRequest, share: int) -> int:
    return min(req.profile.cpus_per_task, share) if req.profile else share


# The scale of a submission's cells (a grid has one).
def _scale(req: SubmitRequest) -> str:
    return req.specs[0].scale if req.specs else "mini"


def _timeout_min(req: SubmitRequest) -> int:
    return req.profile.timeout_min if req.profile else DEFAULT_TIMEOUT_MIN


# debug: one in-process job per cell.
def submit_debug(req: SubmitRequest) -> list[SubmittedJob]:
    import submitit
    if req.procs_per_cell > 1:
        raise LaunchError(f"--procs-per-cell {req.procs_per_cell}: the debug executor runs cells in this "
                          f"one process; use --executor local")
    executor = submitit.AutoExecutor(folder=req.folder, cluster="debug")
    executor.update_parameters(timeout_min=_timeout_min(req))
    threads = _threads(req, _cores())
    with _env(**_job_env(req, threads)):
        return [SubmittedJob(executor.submit(req.jobs.run_cell, *_args(s, req)), [s])
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


# The key the local queue orders by (harness.cell.workqueue): the most general entry of the last chain
# of the cell's shared work (dimo: its Di[M]O prefix, else its student), None when it shares none.
def work_key(spec: RunSpec) -> str | None:
    chains = shared_work(spec, 1)
    return chains[-1][-1] if chains and chains[-1] else None


# The needs of the cells as JSON values (for the local queue's jobs): run id -> [need, ...].
def _needs_json(req: SubmitRequest) -> dict[str, list[dict[str, Any]]]:
    return {rid: [n.to_json() for n in needs] for rid, needs in req.needs.items() if needs}


# local: at most `max_parallel` worker jobs sharing one queue of the cells (harness.cell.workqueue):
# each takes the next unclaimed cell when it is free; a worker has `procs_per_cell` tasks.
def submit_local(req: SubmitRequest) -> list[SubmittedJob]:
    import submitit
    import torch
    procs = req.procs_per_cell
    gpus = req.profile.gpus_per_node if req.profile else torch.cuda.device_count()
    if gpus and procs > gpus:
        raise LaunchError(f"--procs-per-cell {procs}: one process per GPU, and this machine has {gpus} GPU(s)")
    executor = submitit.AutoExecutor(folder=req.folder, cluster="local")
    order = workqueue.queue_order(req.specs, work_key)   # workers take a cell once its needs are met
    workers = max(1, min(req.max_parallel or max(1, _cores() // procs), len(order)))
    pins = pinned_environment(_scale(req))
    threads = MINI_THREADS if pins else _threads(req, max(1, _cores() // (workers * procs)))
    queue_dir = Path(req.folder).parent / QUEUES_DIR / uuid.uuid4().hex[:12]
    queue_dir.mkdir(parents=True)
    executor.update_parameters(name=f"softdimo-{req.grid}", gpus_per_node=gpus, tasks_per_node=procs,
                               timeout_min=_timeout_min(req) * len(order))
    with _env(**_job_env(req, threads), **pins):
        jobs = [executor.submit(req.jobs.run_queue, [s.to_json() for s in order], req.grid,
                                str(req.results_root), str(queue_dir), _needs_json(req), req.since)
                for _ in range(workers)]
    marker = {"workers": [str(j.job_id) for j in jobs], "queue": str(queue_dir)}
    return [SubmittedJob(j, order, marker, queue=queue_dir) for j in jobs]


# slurm: one executor for the profile, one array task per cell, arrays of at most the profile's
# `max_array_size` tasks (one sbatch call each). A cell that needs others (`req.needs`) goes into an
# array with `--dependency=afterok:<their jobs>`: cells are submitted in waves, each wave's cells
# once the jobs of everything they need are known, one array per set of jobs they wait for.
def submit_slurm(req: SubmitRequest) -> list[SubmittedJob]:
    import submitit
    p = req.profile
    if p is None:
        raise LaunchError("--executor slurm needs a resource profile: --slurm-profile NAME or the "
                          "grid's scales.<scale>.resources")
    try:
        executor = submitit.AutoExecutor(folder=req.folder, cluster="slurm",
                                         **to_submitit_executor_kwargs(p))
    except RuntimeError as e:               # no srun / sbatch on this machine
        raise LaunchError(f"cannot submit to SLURM from this machine: {e}") from None
    params = to_submitit_parameters(p)
    pins = pinned_environment(_scale(req))
    threads = MINI_THREADS if pins else p.cpus_per_task
    params["slurm_setup"] = [*params.get("slurm_setup", []), f"export {THREADS_ENV}={threads}",
                             *(f"export {k}={v}" for k, v in pins.items()),
                             *([f"export {LOG_WITH_ENV}={','.join(req.log_with)}"] if req.log_with else []),
                             f"export {COLLECTIVE_TIMEOUT_ENV}={req.collective_timeout}"]
    if req.max_parallel:
        params["slurm_array_parallelism"] = req.max_parallel
    executor.update_parameters(name=f"softdimo-{req.grid}", **params)
    terms = req.jobs.terms(code=asdict(req.code), allow_code_change=req.allow_code_change, profile=p.name,
                           max_num_timeout=p.max_num_timeout, signal_delay_s=p.signal_delay_s)
    out: list[SubmittedJob] = []
    job_of = dict(req.running_jobs)
    left = list(req.specs)
    while left:
        wave = [s for s in left if all(n.run_id in job_of for n in req.needs.get(s.run_id, ()))]
        if not wave:                       # cannot happen for a schedule (needs come first)
            raise LaunchError(f"cells {', '.join(s.run_id for s in left)} need cells that are not submitted", out)
        groups: dict[tuple[str, ...], list[RunSpec]] = {}
        for spec in wave:
            after = tuple(dict.fromkeys(job_of[n.run_id] for n in req.needs.get(spec.run_id, ())))
            groups.setdefault(after, []).append(spec)
        for after, group in groups.items():
            executor.update_parameters(slurm_dependency=f"afterok:{':'.join(after)}" if after else None)
            for start in range(0, len(group), p.max_array_size):
                for sub in _submit_array(executor, req, terms, group[start:start + p.max_array_size], out):
                    job_of[sub.specs[0].run_id] = str(sub.job.job_id)
                    sub.marker["after"] = [{**n.to_json(), "job_id": job_of[n.run_id]}
                                           for n in req.needs.get(sub.specs[0].run_id, ())]
                    out.append(sub)
        left = [s for s in left if s not in wave]
    return out


# One sbatch call: an array of `chunk`'s cells under the executor's current parameters.
def _submit_array(executor: Any, req: SubmitRequest, terms: Any, chunk: Sequence[RunSpec],
                  submitted: list[SubmittedJob]) -> list[SubmittedJob]:
    p = req.profile
    try:
        with executor.batch():
            jobs = [executor.submit(req.jobs.slurm_cell(s.to_json(), req.grid, str(req.results_root), terms))
                    for s in chunk]
    except Exception as e:                  # sbatch refused (partition, account, limits, ...)
        raise LaunchError(f"sbatch refused an array of {len(chunk)} cells (profile "
                          f"{p.name!r}, {p.path}): {e}", submitted) from None
    out = []
    for j, spec in zip(jobs, chunk):
        array, _, task = str(j.job_id).partition("_")
        out.append(SubmittedJob(j, [spec], {"array_id": array, "task": int(task) if task else None,
                                          "log": str(j.paths.stderr), "profile": p.name}))
    return out


# A local cell may still run while a worker of its queue (its job) runs (same host only).
def local_states(markers: Sequence[Mapping[str, Any]]) -> list[JobState]:
    return [JobState(alive, "running" if alive else "ended") for alive in map(_local_alive, markers)]


def _local_alive(marker: Mapping[str, Any]) -> bool:
    if marker.get("host") != socket.gethostname():
        return True                        # cannot tell from here; assume it still runs
    return any(map(workqueue.pid_alive, marker.get("workers") or [marker.get("job_id")]))


# SLURM jobs: one sacct call for all markers, then one squeue call for the jobs sacct does not list
# (a job held by a dependency is not in accounting until it may start); a job neither knows, or
# every job when they cannot be asked, is alive until submitit's result file appears.
def slurm_states(markers: Sequence[Mapping[str, Any]]) -> list[JobState]:
    ids = [str(m["job_id"]) for m in markers if m.get("job_id")]
    states = slurm.sacct_states(ids)
    if states is not None:
        states.update(slurm.squeue_states(i for i in ids if i not in states) or {})
    out = []
    for m in markers:
        if not m.get("job_id") or not m.get("folder"):
            out.append(JobState(False, "unknown"))
            continue
        state = (states or {}).get(str(m["job_id"]))
        if state is None:
            done = _result_file(m["folder"], str(m["job_id"])).exists()
            out.append(JobState(not done, "ended" if done else "submitted"))
        else:
            out.append(JobState(not slurm.is_final(state), state))
    return out


# How each SLURM job of this launch ended (sacct's final state), None while it may still run.
def slurm_ended(subs: Sequence[SubmittedJob]) -> list[str | None]:
    markers = [{"job_id": str(s.job.job_id), "folder": str(s.job.paths.folder)} for s in subs]
    return [None if st.alive else st.state for st in slurm_states(markers)]


# A SLURM job that ended without a record: the task srun saw fail first (from the job's log, which
# holds srun's own lines) and sacct's usage, so its failure record counts the GPU hours.
def slurm_job_end(job: Any) -> JobEnd:
    try:
        text = Path(job.paths.stderr).read_text(errors="replace")
    except OSError:
        text = ""
    bad = slurm.first_bad_task(text)
    return JobEnd(bad[0] if bad else None, f"srun: task {bad[0]}: {bad[1]}" if bad else "",
                  slurm.job_usage(str(job.job_id)))


def slurm_cancel(markers: Sequence[Mapping[str, Any]]) -> str | None:
    return slurm.cancel([str(m["job_id"]) for m in markers])


def _result_file(folder: str, job_id: str) -> Path:
    from submitit.core.utils import JobPaths
    return JobPaths(folder, job_id=job_id, task_id=0).result_pickle


# The built-in executors, registered beside their entry type.
for _entry in (
    ExecutorEntry("debug", submit_debug, states=lambda markers: [JobState(False, "ended")] * len(markers),
                  run_in_process=run_debug_job,
                  description="submitit DebugExecutor: in this process, one cell after another"),
    ExecutorEntry("local", submit_local, states=local_states,
                  description="submitit LocalExecutor: subprocesses, at most --max-parallel "
                              "workers sharing one queue of cells"),
    ExecutorEntry("slurm", submit_slurm, states=slurm_states, ended=slurm_ended,
                  cancel=slurm_cancel, job_end=slurm_job_end, ended_poll_s=SACCT_POLL_S,
                  description="submitit on SLURM: job arrays per resource profile, checkpointed "
                              "and requeued on time limits"),
):
    registered.register(_entry.name, _entry)
