"""Running one cell as a job: `execute` (one cell, then its record), `execute_queue` (the cells a
local worker claims, in order, from a queue shared with other workers) and `SlurmCell` (one cell
as a SLURM array task). A job's start-up loads the registries (`harness.builtin.plugins`).

The callables take only JSON values (the spec as JSON, the grid name, the results root), so
submitit pickles a few hundred bytes and the job imports the code on disk. A cell always ends
with a record: `ok`, `diverged` (a metric was not finite) or `failed` (any exception, with its
traceback and the path of the run's log). `execute` returns the status instead of raising, so a
worker goes on to its next cell after a failure.

On SLURM a cell is a `SlurmCell`: checkpointable (requeued on USR2 / time limit, resuming from the
cell's `checkpoints/`), recording its job id, requeues and the requeue cap, and refusing to run on
other code than was submitted unless the launch allowed it.

In a job of several tasks every task runs these callables and the cell runs over all of them
(`harness.contracts.distributed`): rank 0 decides what to run, logs to the run's log and to the trackers of
`--log-with`, and writes the record; every process does its share of the method's work and of the
evaluation (`harness.methods.scoring`: it extracts the features of the samples it made). A failure
of a cell over several processes ends the job (the others would wait on it).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import resource
import socket
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import submitit
import torch

from harness import store
from harness.builtin import plugins
from harness.cell import slurm, workqueue
from harness.contracts import distributed, registry, tracking
from harness.contracts.distributed import Processes
from harness.contracts.entries import MethodResult, MetricValue, RunContext
from harness.contracts.failures import Failure
from harness.contracts.tracking import NO_TRACKERS, RunTrackers
from harness.grid import dependencies
from harness.grid.spec import RunSpec, spec_defaults
from harness.methods import preemption
from harness.methods.environment import device, run_context
from harness.methods.images import save_condition_samples, save_image_grid
from harness.methods.numerics import pin_state
from harness.methods.scoring import score
from harness.methods.selection import save_selection
from harness.store import assets
from harness.store.provenance import CodeVersion, code_version, device_name, job_environment, now, provenance, task_log
from harness.store.stages import batch_digests, samples_digest
from softdimo.files import atomic_write

LOG_FILE = "log.txt"
QUEUE_POLL_S = 1.0                    # a local worker waiting for the cells it needs looks again this often
JOB_RUNS_FILE = "job_runs.jsonl"      # one line per interrupted (requeued) run of a job on a cell

#----------------------------------------------------------------------------


# The terms a SLURM cell was submitted under (JSON values only): the code version, whether other
# code may run it, the resource profile, the requeue cap and the signal delay.
@dataclass(frozen=True)
class JobTerms:
    code: dict[str, Any]                 # CodeVersion at submission, as JSON
    allow_code_change: bool = False      # --allow-code-change: run even on other code
    profile: str | None = None           # resource profile name
    max_num_timeout: int | None = None   # the requeue cap (submitit's slurm_max_num_timeout)
    signal_delay_s: int = 90             # USR2 this long before the time limit


# A job refused to run because the code changed between submission and start.
class CodeChangedError(RuntimeError):
    pass


# Run one cell and write its record; returns the record's status ("ok", "diverged", "failed").
# `terms` (SLURM cells) adds the code check, the job's requeue state and sacct's cost. Over several
# processes, the process that failed first (`Processes.first_failure`) writes the failure record.
def execute(spec_json: dict[str, Any], grid: str, results_root: str,
            terms: JobTerms | None = None) -> str:
    processes = distributed.job_processes()
    spec = RunSpec.from_json(spec_json)
    run_dir = store.run_dir(results_root, grid, spec.run_id)
    existing, attempt = processes.share(
        "record and attempt", [store.statuses(results_root, grid, [spec.run_id])[spec.run_id], uuid.uuid4().hex[:12]]
        if processes.is_main else None)
    if existing in store.FINAL_STATUSES:
        return existing                     # submitted twice (e.g. two --no-wait launches)
    start = _Start(spec, grid, run_dir, processes, attempt, terms, slurm.current_job(), now(), time.perf_counter())
    assets.forget_used_assets()             # provenance lists the assets this cell resolves
    if not processes.is_main:
        return _follow(start, results_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / LOG_FILE
    job = start.job
    reraise: BaseException | None = None
    code_check: str | None = None
    with _LogFile(log_path) as log_file:
        log = _logger(log_file)
        again = f" (SLURM job {job.job_id}, restart {job.restart_count})" if job and job.restart_count else ""
        log(f"run {spec.run_id} of grid {grid!r} started {start.started}{again}")
        try:
            code_check = _check_code(terms, log)
            record = _run(spec, grid, results_root, run_dir, log, processes)
        except Exception as e:
            log(traceback.format_exc())
            failure, records_it = processes.first_failure(e)
            if processes.world_size > 1:
                reraise = e                 # the other processes may wait on this one: end the job
            if isinstance(e, CodeChangedError):
                code_check = "refused"
            if isinstance(e, submitit.core.utils.UncompletedJobError):   # the requeue cap
                failure = dataclasses.replace(failure, message=_cap_message(e, job, terms))
                reraise = e                 # the job ends in error, as submitit intends
            if not records_it:
                log(f"{failure.describe()} (reported by rank {failure.reporter}, which records it); "
                    f"this process stops too")
                raise
            record = _failed_record(start, failure, str(log_path))
        except BaseException:
            if job is not None:             # SystemExit from submitit: the job was requeued
                _note_interrupted_run(run_dir, job, time.perf_counter() - start.t0, _accelerators(processes))
                log("run interrupted by SLURM; the job was requeued and resumes from its checkpoint")
            raise
        try:
            _write(start, record, code_check)
        except store.RecordExistsError as e:  # another job finished the same cell first
            log(str(e))
            return store.statuses(results_root, grid, [spec.run_id])[spec.run_id] or "failed"
        log(f"run {spec.run_id} finished: {record['status']}")
    if reraise is not None:
        raise reraise
    return record["status"]


# One start of a cell on one process: what its record's provenance and cost are made of.
@dataclass(frozen=True)
class _Start:
    spec: RunSpec
    grid: str
    run_dir: Path
    processes: Processes
    attempt: str                         # shared by the cell's processes (provenance.attempt)
    terms: JobTerms | None
    job: slurm.JobInfo | None
    started: str                         # ISO time
    t0: float                            # perf_counter at the start


# Add provenance and cost to a record and write it (RecordWriteError when the file system refuses).
def _write(start: _Start, record: dict[str, Any], code_check: str | None = None) -> None:
    processes, terms, job = start.processes, start.terms, start.job
    record["provenance"] = {**provenance(start.started), "assets": assets.used_assets(),
                            **record.pop("_provenance", {})}
    trackers = record.pop("_trackers", None)
    if trackers is not None:
        record["provenance"]["trackers"] = trackers
    devices = record.pop("_devices", None)
    record["provenance"]["world_size"] = processes.world_size
    record["provenance"]["numerics"] = pin_state(start.spec.scale)
    record["provenance"]["attempt"] = start.attempt
    if processes.world_size > 1:
        record["provenance"]["collective_timeout_s"] = distributed.collective_timeout().total_seconds()
    if devices is not None:
        record["provenance"]["devices"] = devices
    if terms is not None:
        record["provenance"]["submitted_code"] = terms.code
        record["provenance"]["code_check"] = code_check
    if job is not None:
        record["provenance"]["slurm"] = {
            **job.to_json(), "profile": terms.profile if terms else None,
            "max_num_timeout": terms.max_num_timeout if terms else None}
    record["cost"] = _cost(time.perf_counter() - start.t0, record.pop("_stages", {}), _accelerators(processes),
                           _earlier_runs(start.run_dir, job), job, record["status"], processes.world_size)
    try:
        store.write_record(start.run_dir, record)
    except store.RecordExistsError:
        raise
    except OSError as e:
        raise RecordWriteError(f"the {record['status']} record of run {start.spec.run_id} could not be written "
                               f"to {start.run_dir / store.RECORD_FILE}: {e.strerror or e}; nothing of it was "
                               f"recorded (a record already there is unchanged)") from e


# The record of a failure: the first failure of the cell's processes (`failure`), written by this
# process (`own_log`: its log); over several processes it names the rank and its traceback tail.
def _failed_record(start: _Start, failure: Failure, own_log: str) -> dict[str, Any]:
    record = _base_record(start.spec, start.grid, "failed")
    record["error"] = {"type": failure.type, "message": failure.message, "traceback": traceback.format_exc(),
                       "log": own_log}
    if start.processes.world_size > 1:
        record["error"].update(message=failure.describe(), rank=failure.rank, world_size=failure.world_size,
                               traceback_tail=failure.traceback_tail)
        rank_log = task_log(failure.rank)
        if rank_log and rank_log != own_log:
            record["error"]["rank_log"] = rank_log
    return record


# A record could not be written (a full disk, a read-only file system).
class RecordWriteError(OSError):
    pass


# One cell as a SLURM array task. Checkpointable: on USR2 / the time limit submitit calls the
# inherited `checkpoint()`, which resubmits this object (JSON values only; the progress itself is
# in the cell's checkpoints/ on disk), then requeues the job, at most `max_num_timeout` times.
class SlurmCell(submitit.helpers.Checkpointable):
    def __init__(self, spec_json: dict[str, Any], grid: str, results_root: str, terms: JobTerms) -> None:
        self.spec_json, self.grid, self.results_root = spec_json, grid, results_root
        self.terms = terms

    # Run the cell; a signal during distillation saves at the next step boundary, within half
    # of the profile's signal delay. A failed cell ends its job in error (FAILED), so that cells
    # submitted with `--dependency=afterok:` on it never start (harness.grid.dependencies).
    def __call__(self) -> str:
        preemption.set_grace(self.terms.signal_delay_s / 2)
        status = execute(self.spec_json, self.grid, self.results_root, self.terms)
        if status == "failed":
            run_id = RunSpec.from_json(self.spec_json).run_id
            raise CellFailedError(f"cell {run_id} failed; its record: "
                                  f"{store.record_path(self.results_root, self.grid, run_id)}")
        return status


# A SLURM cell that ended with a failed record (its job ends in error).
class CellFailedError(RuntimeError):
    pass


# "same" / "changed, allowed"; raises CodeChangedError when the job's code is not the submitted.
def _check_code(terms: JobTerms | None, log: Callable[[str], None]) -> str | None:
    if terms is None:
        return None
    submitted, running = CodeVersion(**terms.code), code_version()
    if submitted.same_code(running):
        return "same"
    message = (f"the code changed between submission and start: submitted {submitted.describe()}, "
               f"this job runs {running.describe()}")
    if terms.allow_code_change:
        log(f"{message}; running anyway (--allow-code-change)")
        return "changed, allowed"
    raise CodeChangedError(f"{message}. The job refuses to run on other code than was submitted: "
                           f"resubmit with --rerun-failed, or pass --allow-code-change")


def _cap_message(error: BaseException, job: slurm.JobInfo | None, terms: JobTerms | None) -> str:
    restarts = job.restart_count if job else 0
    cap = terms.max_num_timeout if terms else None
    profile = terms.profile if terms else None
    return (f"{error} Requeue cap reached after {restarts} requeue(s) (max_num_timeout={cap}, "
            f"profile {profile!r}). The checkpoint is kept: retry with --rerun-failed after raising "
            f"the profile's timeout_min or max_num_timeout.")


# Remember the wall time and accelerator hours of a run that was interrupted to be requeued (for
# the final cost; sacct's view of every start is in the record's cost.sacct.starts).
def _note_interrupted_run(run_dir: Path, job: slurm.JobInfo, wall_s: float, gpus: int) -> None:
    entry = {"job_id": job.job_id, "restart": job.restart_count, "wall_s": round(wall_s, 3),
             "end": "requeued", "accelerator_hours": round(wall_s * gpus / 3600, 6), "time": now()}
    path = run_dir / JOB_RUNS_FILE
    earlier = path.read_text(encoding="utf-8") if path.exists() else ""
    atomic_write(path, earlier + json.dumps(entry) + "\n")


# The interrupted earlier runs of this job on this cell.
def _earlier_runs(run_dir: Path, job: slurm.JobInfo | None) -> list[dict[str, Any]]:
    path = run_dir / JOB_RUNS_FILE
    if job is None or not path.exists():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in runs if r.get("job_id") == job.job_id]


# Work through a queue shared with other jobs (harness.cell.workqueue): run, in order, the first cell
# whose needs (`after`: run id -> needs as JSON, harness.grid.dependencies) all have their final record
# and whose claim in `queue_dir` this job wins, then look again from the top; a cell whose need
# failed is claimed and given its DependencyFailed record. While every unclaimed cell waits on a
# need that is still running, look again every QUEUE_POLL_S. Returns the statuses of the cells it
# ran. The processes of a job of several tasks work through the queue together: rank 0 decides.
def execute_queue(spec_jsons: list[dict[str, Any]], grid: str, results_root: str, queue_dir: str,
                  after: dict[str, list[dict[str, Any]]] | None = None, since: float = 0.0) -> list[str]:
    processes = distributed.job_processes()
    job_id = job_environment()[1] or str(os.getpid())
    log = _logger(None, prefix=f"[rank {processes.rank}] ")
    specs = [RunSpec.from_json(s) for s in spec_jsons]
    needs = {rid: dependencies.needs_of(entries) for rid, entries in (after or {}).items()}
    ran: list[str] = []
    while True:
        step = processes.share("next cell", _next_in_queue(specs, needs, grid, results_root, queue_dir, job_id, since)
                               if processes.is_main else None, "its claim of the next cell", log)
        if step is None:
            return ran
        if step < 0:
            time.sleep(QUEUE_POLL_S)
            continue
        ran.append(execute(spec_jsons[step], grid, results_root))


# The index of the next cell this job runs (claimed), -1 to wait for a need, None when the queue
# is empty; cells whose need failed get their DependencyFailed record on the way. Only needs'
# records written since the launch planned (`since`) count.
def _next_in_queue(specs: list[RunSpec], needs: dict[str, tuple[dependencies.Need, ...]], grid: str,
                   results_root: str, queue_dir: str, job_id: str, since: float) -> int | None:
    open_ = [i for i, s in enumerate(specs) if workqueue.claimant(queue_dir, s.run_id) is None]
    wanted = {n.run_id for i in open_ for n in needs.get(specs[i].run_id, ())}
    statuses = store.statuses_since(results_root, grid, wanted, since)
    lost = {rid for rid in wanted if statuses[rid] is None and workqueue.claimant(queue_dir, rid) is not None
            and not workqueue.claimant_alive(queue_dir, rid)}       # its worker died before its record
    waiting = False
    for i in open_:
        spec, own = specs[i], needs.get(specs[i].run_id, ())
        if dependencies.blocking_need(own, {**statuses, **{rid: "failed" for rid in lost}}) is not None:
            if workqueue.claim(queue_dir, spec.run_id, job_id):
                dependencies.record_if_blocked(results_root, grid, spec, own, since,
                                               {"executor": "local", "job_id": job_id}, lost)
        elif not dependencies.needs_met(own, statuses):
            waiting = True
        elif workqueue.claim(queue_dir, spec.run_id, job_id):
            return i
    return -1 if waiting else None


# The cell's method on this process, and (on rank 0) the device of every process.
def _method_run(spec: RunSpec, results_root: str, run_dir: Path, log: Callable[[str], None],
                processes: Processes, trackers: RunTrackers = NO_TRACKERS
                ) -> tuple[RunContext, MethodResult, list[str] | None]:
    plugins.load_all(spec.plugins)
    ctx = run_context(run_dir, results_root, log, processes, trackers)
    share = (f", process {processes.rank} of {processes.world_size} (pid {os.getpid()} on {socket.gethostname()})"
             if processes.world_size > 1 else "")
    log(f"device {ctx.device}, {ctx.threads} thread(s), cache {ctx.cache_dir}{share}")
    result = registry.methods.get(spec.method).run(spec, ctx)
    return ctx, result, processes.gather_to_main(device_name(ctx.device))


# A process other than rank 0: its share of the method's work and of the evaluation; rank 0
# writes the record, unless this process failed first (or rank 0 is gone): then it writes the
# failure record, names itself in the run's log and ends the job.
def _follow(start: _Start, results_root: str) -> str:
    processes = start.processes
    log = _logger(None, prefix=f"[rank {processes.rank}] ")
    try:
        ctx, result, _ = _method_run(start.spec, results_root, start.run_dir, log, processes)
        _evaluate(start.spec, ctx, result)
    except Exception as e:
        log(traceback.format_exc())
        failure, records_it = processes.first_failure(e)
        if not records_it:
            log(f"{failure.describe()} (reported by rank {failure.reporter}); this process stops too")
            raise
        own_log = task_log(processes.rank) or ""
        try:
            _write(start, _failed_record(start, failure, own_log))
            with _LogFile(start.run_dir / LOG_FILE) as run_log:
                _logger(run_log, prefix=f"[rank {processes.rank}] ")(
                    f"recorded the failure: {failure.describe()}; log: {own_log}")
        except store.RecordExistsError:
            pass                            # another process recorded this attempt's failure first
        raise
    return "ok"


# Every process: score the samples it holds (harness.methods.scoring), send its images among the first
# `eval.grid_images` and its batches' digests to rank 0. On rank 0: the values, the optimised ones,
# those first images and the samples' stage hash (harness.store.stages).
def _evaluate(spec: RunSpec, ctx: RunContext, result: MethodResult
              ) -> tuple[dict[str, MetricValue], set[str], torch.Tensor | None, str | None]:
    held = result.held(ctx.processes)
    values, optimised = score(spec, result.teacher, ctx, held)
    n_grid = dict(spec.params).get("eval.grid_images", 0)
    firsts = ctx.processes.gather_to_main(held.first_images(n_grid) if n_grid else [])
    parts = sorted((part for own in firsts or [] for part in own), key=lambda part: part[0])
    digests = ctx.processes.gather_to_main(batch_digests(held))
    return (values, optimised, torch.cat([images for _, images in parts]) if parts else None,
            samples_digest([d for own in digests for d in own]) if digests is not None else None)


# Rank 0: the cell's record, with the trackers of $SOFTDIMO_LOG_WITH running while it is made.
def _run(spec: RunSpec, grid: str, results_root: str, run_dir: Path,
         log: Callable[[str], None], processes: Processes) -> dict[str, Any]:
    names = tracking.requested()
    trackers = RunTrackers.start(names, run_dir, grid, {"run_id": spec.run_id, "description": spec.description(),
                                                        **dict(spec.params)}) if names else NO_TRACKERS
    try:
        record = _run_tracked(spec, grid, results_root, run_dir, log, processes, trackers)
    finally:
        trackers.finish()
    if names:
        record["_trackers"] = {"log_with": trackers.names, "folder": str(trackers.folder)}
    return record


# Rank 0: run the method, score its samples, log the values to the trackers, build the record.
def _run_tracked(spec: RunSpec, grid: str, results_root: str, run_dir: Path, log: Callable[[str], None],
                 processes: Processes, trackers: RunTrackers) -> dict[str, Any]:
    ctx, result, devices = _method_run(spec, results_root, run_dir, log, processes, trackers)
    t_eval = time.perf_counter()
    metrics = dict(result.extra_metrics)
    values, optimised, first_images, samples_hash = _evaluate(spec, ctx, result)
    for key, value in values.items():
        if key in metrics:
            raise ValueError(f"metric value {key!r} produced twice (by the method and a metric)")
        metrics[key] = value
    stages = {**result.stage_seconds, "eval_s": time.perf_counter() - t_eval}
    trackers.log("eval", {k: v.value for k, v in metrics.items()}, int(result.info.get("steps", 0)))

    finite = all(math.isfinite(v.value) for v in metrics.values())
    record = _base_record(spec, grid, "ok" if finite else "diverged")
    record["metrics"] = {k: {**v.to_json(), **({"optimised": True} if k in optimised else {})}
                         for k, v in metrics.items()}
    record["curves"] = {k: [[float(s), float(v)] for s, v in c] for k, c in result.curves.items()}
    record["info"] = _jsonable(result.info)
    record["stage_hashes"] = {**result.stage_hashes, **({"samples": samples_hash} if samples_hash else {})}
    if first_images is not None and len(first_images):
        save_image_grid(first_images, run_dir / store.SAMPLES_FILE)
        kept = save_condition_samples(first_images, result.conditions[:len(first_images)],
                                      run_dir / store.CONDITION_SAMPLES_FILE)
        record["samples"] = {"grid_png": store.SAMPLES_FILE, "count": len(first_images),
                             "per_condition": store.CONDITION_SAMPLES_FILE, "per_condition_count": kept}
    if result.selection is not None:
        save_selection(result.selection, run_dir / store.SELECTION_FILE)
        record["samples"]["selection"] = store.SELECTION_FILE
    if not finite:
        bad = sorted(k for k, v in metrics.items() if not math.isfinite(v.value))
        log(f"diverged: metric(s) {', '.join(bad)} not finite")
    record["_stages"] = stages
    record["_devices"] = devices
    record["_provenance"] = result.provenance
    return record


def _base_record(spec: RunSpec, grid: str, status: str) -> dict[str, Any]:
    try:
        description = spec.description(spec_defaults(spec))
    except Exception:                       # names not registered: fall back to the axes
        description = spec.description()
    return {"schema_version": store.SCHEMA_VERSION, "run_id": spec.run_id, "grid": grid,
            "description": description, "spec": spec.to_json(), "status": status, "error": None,
            "metrics": {}, "curves": {}, "samples": {}, "info": {}}


# JSON-safe copy of method info: non-finite floats become None, other objects their repr.
def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return _jsonable(x.item())
    return repr(x)

#----------------------------------------------------------------------------


# The run's log file, opened for appending; when the file system refuses a write (a full disk), the
# file is given up with one line on stdout and the run goes on (its record is what matters).
class _LogFile:
    def __init__(self, path: Path):
        self.path, self.file = path, None

    def __enter__(self) -> "_LogFile":
        try:
            self.file = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            self._give_up(e)
        return self

    def write(self, line: str) -> None:
        if self.file is None:
            return
        try:
            self.file.write(line)
            self.file.flush()
        except OSError as e:
            self._give_up(e)

    def _give_up(self, error: OSError) -> None:
        print(f"cannot write the run's log {self.path} ({error.strerror or error}); logging to stdout only", flush=True)
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
        self.file = None

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass


# Log lines to stdout and, when given, to the run's log file.
def _logger(log_file: _LogFile | None, prefix: str = "") -> Callable[[str], None]:
    def log(message: str) -> None:
        line = f"[{dt.datetime.now().strftime('%H:%M:%S')}] {prefix}{message}"
        print(line, flush=True)
        if log_file is not None:
            log_file.write(line + "\n")
    return log


# Accelerators the cell's processes use: one GPU per process over several processes, every visible
# GPU for one process on CUDA, none on the CPU.
def _accelerators(processes: Processes) -> int:
    if processes.world_size > 1:
        return processes.world_size if distributed.process_device().type == "cuda" else 0
    return max(1, torch.cuda.device_count()) if device().type == "cuda" else 0


# Cost of a cell: job-measured wall time and accelerator hours (of all its processes) over every
# run of its job (interrupted runs included), per-stage seconds of the last run, the number of
# processes, and SLURM accounting's view.
def _cost(wall_s: float, stages: dict[str, float], gpus: int, earlier: list[dict[str, Any]],
          job: slurm.JobInfo | None, status: str, world_size: int) -> dict[str, Any]:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runs = [{"accelerator_hours": 0.0, **{k: r[k] for k in ("restart", "wall_s", "end", "accelerator_hours")
                                          if k in r}} for r in earlier]
    runs.append({"restart": job.restart_count if job else 0, "wall_s": round(wall_s, 3), "end": status,
                 "accelerator_hours": round(wall_s * gpus / 3600, 6)})
    total_s = sum(r["wall_s"] for r in runs)
    cost: dict[str, Any] = {
        "wall_s": round(total_s, 3), "peak_mem_mb": round(peak_kb / 1024, 1),
        "accelerator_hours": round(total_s * gpus / 3600, 6),
        "stages": {k: round(float(v), 3) for k, v in stages.items()}, "runs": runs,
        "world_size": world_size}
    usage = slurm.job_usage(job.job_id) if job is not None else None
    if usage is not None:
        cost["sacct"] = usage
    return cost
