"""Planning and launching a grid: which cells are done, submitting the rest, waiting for records,
showing the state of each cell and cancelling its jobs.

A cell is done when its record is `ok` or `diverged`; the scheduler's own state (`sacct`) is only
a hint. Submitted cells get a marker (`<run_dir>/.submitted`: executor, job id, SLURM array id and
task index, log path) so that running the command again while their jobs still run does not
submit them twice, and so that `--status` / `--cancel` find their jobs.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from harness import cell, store
from harness.cell import workqueue
from harness.contracts.run_spec import RunSpec
from harness.grid import dependencies
from harness.grid import Grid
from harness.grid.profiles import SlurmProfile, load_profile
from harness.launch import executors
from harness.launch.executors import (ExecutorEntry, JobCallables, JobEnd, JobState, LaunchError, SubmitRequest,
                               SubmittedJob)
from harness.methods.environment import cache_dir
from harness.store.provenance import code_version
from softdimo.files import atomic_write

MARKER = ".submitted"
MARKER_CORRUPT = ".submitted.corrupt"     # an unreadable marker, kept aside (read_marker)
SUBMITIT_DIR = ".submitit"
STATES = ("done", "diverged", "failed", "corrupt", "running", "pending")
JOBS = JobCallables(run_cell=cell.execute, run_queue=cell.execute_queue, slurm_cell=cell.SlurmCell,
                    terms=cell.JobTerms)

#----------------------------------------------------------------------------


# One cell of a grid with its current state.
@dataclass(frozen=True)
class CellState:
    spec: RunSpec
    description: str
    state: str                             # one of STATES

    @property
    def run_id(self) -> str:
        return self.spec.run_id


# The state of every cell of a grid, in grid order.
def plan(grid: Grid, results_root: str | Path) -> list[CellState]:
    status = store.statuses(results_root, grid.name, [s.run_id for s in grid.specs])
    alive = {rid for rid, js in job_states(results_root, grid.name,
                                           [r for r, st in status.items() if st is None]).items()
             if js.alive}
    out = []
    for spec, desc in zip(grid.specs, grid.descriptions()):
        st = status[spec.run_id]
        if st is None:
            state = "running" if spec.run_id in alive else "pending"
        else:
            state = "done" if st == "ok" else st
        out.append(CellState(spec, desc, state))
    return out


# The job state of every given cell that has a submission marker (cells submitted earlier, e.g.
# with --no-wait), asking each executor once for all its markers.
def job_states(results_root: str | Path, grid: str, run_ids: Sequence[str]
               ) -> dict[str, JobState]:
    gdir = Path(results_root) / grid
    started = set(os.listdir(gdir)) if gdir.is_dir() else set()
    by_executor: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for rid in run_ids:
        marker = read_marker(results_root, grid, rid) if rid in started else None
        if marker is not None and marker.get("executor") in executors.registered:
            by_executor.setdefault(marker["executor"], []).append((rid, marker))
    out: dict[str, JobState] = {}
    for name, items in by_executor.items():
        states = executors.registered.get(name).states([m for _, m in items])
        out.update((rid, js) for (rid, _), js in zip(items, states))
    return out


# Copy, for each pending cell, an ok record of the same run id from another grid (the same
# resolved spec: the same run); returns the run ids reused.
def reuse_other_grids(grid: Grid, specs: Sequence[RunSpec], results_root: str | Path) -> set[str]:
    here = store.statuses(results_root, grid.name, [s.run_id for s in specs])
    fresh = [rid for rid, st in here.items() if st is None]   # failed / corrupt here: run again
    sources = store.ok_records_elsewhere(results_root, fresh, grid.name)
    for source in sources.values():
        store.reuse_record(source, results_root, grid.name)
    return set(sources)


# The cells to submit: pending ones, plus failed / corrupt ones when retrying failures.
def to_submit(cells: Sequence[CellState], rerun_failed: bool) -> list[RunSpec]:
    retry = ("failed", "corrupt") if rerun_failed else ()
    return [c.spec for c in cells if c.state == "pending" or c.state in retry]


# Plan the launch of `todo` (harness.grid.dependencies): in grid order, each cell after the cells it
# needs, among them cells still running from earlier launches; a cell whose parent run has no ok
# record and is not run here is blocked. `world_size`: processes per cell.
def schedule(grid: Grid, cells: Sequence[CellState], todo: Sequence[RunSpec], results_root: str | Path,
             world_size: int = 1) -> dependencies.Schedule:
    since = time.time()
    active = [c.spec for c in cells if c.state == "running"]
    known = {c.run_id: c.state for c in cells}
    parents = {p for s in todo if (p := dependencies.parent_of(s)) is not None}
    parent_status: dict[str, str | None] = {}
    for pid in parents:
        state = known.get(pid)
        if state == "done" or (state is None and store.find_ok_record(results_root, pid, grid.name)):
            parent_status[pid] = "ok"
        else:
            parent_status[pid] = state if state in ("failed", "corrupt", "diverged") else None
    done = dependencies.entry_done(cache_dir(results_root))
    return dependencies.schedule(todo, active, parent_status, done, world_size, since)


# The submission marker of a run (executor, job id, host, time), None if there is none. A marker
# that cannot be read (half-written by a writer that died, or damaged) is not taken for none
# silently: it is named on stderr and moved aside to `.submitted.corrupt`, so the cell counts as
# not submitted and its next launch writes a whole marker.
def read_marker(results_root: str | Path, grid: str, run_id: str) -> dict[str, Any] | None:
    path = store.run_dir(results_root, grid, run_id) / MARKER
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        marker = json.loads(text)
        problem = "" if isinstance(marker, dict) and {"executor", "job_id"} <= set(marker) else \
            "not an object with executor and job_id"
    except ValueError as e:
        problem = str(e)
    if not problem:
        return marker
    aside = path.with_name(MARKER_CORRUPT)
    try:
        os.replace(path, aside)
    except FileNotFoundError:               # another reader moved it first
        return None
    print(f"warning: {path}: unreadable submission marker ({problem}); moved to {aside.name}: the "
          f"cell counts as not submitted", file=sys.stderr)
    return None


# Write a run's submission marker (atomically: a reader never sees half of one).
def _write_marker(results_root: Path, grid: str, run_id: str, executor: str, job_id: str,
                  folder: Path, extra: dict[str, Any]) -> None:
    atomic_write(store.run_dir(results_root, grid, run_id) / MARKER, json.dumps({
        "executor": executor, "job_id": job_id, "host": socket.gethostname(), "folder": str(folder),
        "submitted": dt.datetime.now().astimezone().isoformat(timespec="seconds"), **extra}))

#----------------------------------------------------------------------------


# Submitted jobs of one launch. `earlier` holds the record files that were there before it (failed
# cells submitted again): until replaced they are not these jobs' outcome. `since` is when it planned
# (the cells' needs count records written after it).
@dataclass
class Launch:
    grid: str
    results_root: Path
    executor: ExecutorEntry
    submissions: list[SubmittedJob]
    folder: Path
    needs: Mapping[str, tuple[dependencies.Need, ...]] = field(default_factory=dict)  # run id -> its needs
    since: float = 0.0                     # when it was planned: records older than that are earlier attempts'
    earlier: dict[str, tuple[int, int]] = field(default_factory=dict)   # run id -> store.record_stamp
    problems: list[str] = field(default_factory=list)   # what the launcher could not record

    # The status of each cell's record written since the launch (None: none yet).
    def statuses(self, run_ids: Sequence[str] | None = None) -> dict[str, str | None]:
        ids = self.run_ids if run_ids is None else list(run_ids)
        out = store.statuses(self.results_root, self.grid, ids)
        for rid in ids:
            if rid in self.earlier and out[rid] is not None and store.record_stamp(
                    store.record_path(self.results_root, self.grid, rid)) == self.earlier[rid]:
                out[rid] = None
        return out

    @property
    def run_ids(self) -> list[str]:
        return list(dict.fromkeys(r for s in self.submissions for r in s.run_ids))


# The resource profile of each group of cells: `override` (--slurm-profile) or the grid's
# `scales.<scale>.resources`; None where neither names one. Raises ProfileError.
def resource_profiles(grid: Grid, override: str | None = None) -> dict[str | None, SlurmProfile | None]:
    name = override or grid.resources
    return {name: load_profile(name) if name else None}


# Submit the scheduled cells through a registered executor, one group (and for SLURM one executor,
# its arrays chunked to the array limit) per resource profile, each cell after what it needs. The
# code version is recorded for the jobs. `procs_per_cell`: processes running each local cell
# together (SLURM: the profile's tasks); `log_with`: accelerate trackers each run logs to live
# (harness.contracts.tracking); `collective_timeout_s`: the collective timeout of a cell's processes (None:
# the profile's, else the default).
def submit(grid: Grid, plan_: dependencies.Schedule, results_root: str | Path, executor: str,
           max_parallel: int | None = None, profile: str | None = None,
           allow_code_change: bool = False, procs_per_cell: int = 1, log_with: Sequence[str] = (),
           collective_timeout_s: int | None = None) -> Launch:
    entry = executors.registered.get(executor)
    root = Path(results_root).resolve()
    folder = root / grid.name / SUBMITIT_DIR / "%j"
    profiles = resource_profiles(grid, profile)     # all loaded and checked before submitting
    groups: dict[str | None, list[RunSpec]] = {}
    for spec in plan_.order:           # one profile per grid and scale today; grouped all the same
        groups.setdefault(profile or grid.resources, []).append(spec)
    running = _running_jobs(root, grid.name, {n.run_id for needs in plan_.needs.values() for n in needs}, entry.name)
    submitting = {s.run_id for s in plan_.order}
    needs = {rid: tuple(n for n in own if n.run_id in submitting or n.run_id in running)
             for rid, own in plan_.needs.items()}  # a need running under another executor: not expressible
    code = code_version()
    earlier = {s.run_id: stamp for s in plan_.order
               if (stamp := store.record_stamp(store.record_path(root, grid.name, s.run_id)))}
    submissions: list[SubmittedJob] = []
    try:
        for name, group in groups.items():
            submissions += entry.submit(SubmitRequest(group, grid.name, root, folder, profiles[name],
                                                      max_parallel, JOBS, code, allow_code_change,
                                                      procs_per_cell, tuple(log_with), needs, running, plan_.since,
                                                      collective_timeout_s))
    except LaunchError as e:
        submissions += e.submitted
        raise
    finally:
        if not entry.in_process:
            marked: set[str] = set()
            for sub in submissions:
                for rid in sub.run_ids:
                    if rid not in marked:          # a queue's cells: once, naming all its workers
                        after = sub.marker.get("after") or [n.to_json() for n in needs.get(rid, ())]
                        _write_marker(root, grid.name, rid, entry.name, str(sub.job.job_id), folder,
                                      {**sub.marker, "after": after, "since": plan_.since})
                        marked.add(rid)
    return Launch(grid.name, root, entry, submissions, folder.parent, needs, plan_.since, earlier)


# The jobs (of `executor`) of the given cells still running from earlier launches, by run id.
def _running_jobs(results_root: Path, grid: str, run_ids: set[str], executor: str) -> dict[str, str]:
    markers = {rid: m for rid in run_ids if (m := read_marker(results_root, grid, rid)) is not None
               and m.get("executor") == executor}
    alive = job_states(results_root, grid, list(markers))
    return {rid: str(m["job_id"]) for rid, m in markers.items() if rid in alive and alive[rid].alive}


# Wait until every submitted cell has a record of this launch (one written since it planned: a
# failed cell run again keeps its old record until the new one replaces it); calls
# `progress(statuses)` as records appear. A job that ends without writing a cell's record gets a
# failed record naming the job's log (and, on SLURM, the task that failed first and sacct's GPU
# hours); a cell whose need failed, its DependencyFailed record.
def wait(launch: Launch, progress: Callable[[dict[str, str | None]], None] = lambda s: None,
         poll_s: float = 1.0) -> dict[str, str | None]:
    ids = launch.run_ids
    pending = list(launch.submissions)
    statuses = launch.statuses()
    progress(statuses)
    asked = -float("inf")                  # when the executor was last asked about its jobs
    while pending:
        if launch.executor.in_process:
            sub = pending.pop(0)
            if not _record_if_blocked(launch, sub):
                error = launch.executor.run_in_process(sub.job)
                _settle(launch, sub, "ended", _reason(error) if error else None, str(error or ""))
        else:
            time.sleep(poll_s)
            if launch.executor.cancel is not None:
                for sub in pending:
                    if _record_if_blocked(launch, sub):
                        launch.executor.cancel([{"job_id": str(sub.job.job_id)}])
            statuses = launch.statuses()
            pending = [s for s in pending if any(statuses[r] is None for r in s.run_ids)]
            if pending and time.monotonic() - asked >= launch.executor.ended_poll_s:
                asked = time.monotonic()
                for sub, how in zip(list(pending), launch.executor.ended(pending)):
                    if how is not None:
                        pending.remove(sub)
                        last = sub.queue is None or all(p.queue != sub.queue for p in pending)
                        _settle(launch, sub, how, *_job_error(sub.job), last_of_queue=last)
        statuses = launch.statuses()
        progress(statuses)
    for rid in ids:
        (store.run_dir(launch.results_root, launch.grid, rid) / MARKER).unlink(missing_ok=True)
    return statuses


# Give the cell of a one-cell job (debug, SLURM) its DependencyFailed record when a cell it needs
# failed; returns whether it did (the job must not run, or is cancelled).
def _record_if_blocked(launch: Launch, sub: SubmittedJob) -> bool:
    needs = launch.needs.get(sub.specs[0].run_id, ()) if len(sub.specs) == 1 else ()
    if not needs or launch.statuses(sub.run_ids)[sub.run_ids[0]] is not None:
        return False
    return dependencies.record_if_blocked(launch.results_root, launch.grid, sub.specs[0], needs, launch.since, {
        "executor": launch.executor.name, "job_id": str(sub.job.job_id)}) is not None


# Cells of earlier SLURM launches that wait for a cell that failed (their jobs pend forever, SLURM's
# DependencyNeverSatisfied): each gets its DependencyFailed record and its job is cancelled, so that
# `--rerun-failed` submits it again after its need. Returns the run ids settled.
def settle_blocked(grid: Grid, results_root: str | Path) -> list[str]:
    gdir = Path(results_root) / grid.name
    started = set(os.listdir(gdir)) if gdir.is_dir() else set()
    settled = []
    for spec in grid.specs:
        marker = read_marker(results_root, grid.name, spec.run_id) if spec.run_id in started else None
        entry = executors.registered.get(marker["executor"]) if marker and marker.get("executor") in executors.registered \
            else None
        if not marker or not marker.get("after") or entry is None or entry.cancel is None:
            continue
        since = float(marker.get("since", 0.0))
        if store.statuses_since(results_root, grid.name, [spec.run_id], since)[spec.run_id] is not None:
            continue                       # it has this submission's record
        needs = dependencies.needs_of(marker["after"])
        if dependencies.record_if_blocked(results_root, grid.name, spec, needs, since,
                                          {"executor": entry.name, "job_id": str(marker["job_id"])}):
            entry.cancel([marker])
            (store.run_dir(results_root, grid.name, spec.run_id) / MARKER).unlink(missing_ok=True)
            settled.append(spec.run_id)
    return settled


# (last line, traceback) of the error a finished job left in submitit's result file; (None, "")
# when it left none (killed, cancelled) or succeeded. Never waits, unlike `job.exception()`.
def _job_error(job: Any) -> tuple[str | None, str]:
    from submitit.core.utils import pickle_load
    try:
        outcome, value = pickle_load(job.paths.result_pickle)
    except Exception:
        return None, ""
    if outcome != "error":
        return None, ""
    return _reason(RuntimeError(str(value))), str(value)


# After a job ended: every cell of it without a record gets a failed record. A queue worker
# answers only for the cells it claimed, unless it was the queue's last worker alive. A record
# that cannot be written (e.g. a full disk) is reported in `launch.problems`.
def _settle(launch: Launch, sub: SubmittedJob, how: str, reason: str | None, trace: str,
            last_of_queue: bool = True) -> None:
    statuses = launch.statuses(sub.run_ids)
    spec_json = {s.run_id: s.to_json() for s in sub.specs}
    descriptions = {s.run_id: s.description() for s in sub.specs}
    end: JobEnd | None = None
    for rid in sub.run_ids:
        if statuses[rid] is not None:
            continue
        unclaimed = sub.queue is not None and workqueue.claimant(sub.queue, rid) != str(sub.job.job_id)
        if unclaimed and not last_of_queue:
            continue                       # another worker of the queue runs it, or will
        end = end or launch.executor.job_end(sub.job)
        why = "; ".join(filter(None, [f"{how}: {reason}" if reason else how, end.detail]))
        message = (f"every worker of its queue ended before running this cell (the last, job "
                   f"{sub.job.job_id}: {why})" if unclaimed else
                   f"job {sub.job.job_id} ended without a record for this cell ({why})")
        usage = None if unclaimed else end.usage
        record = store.failure_record(
            rid, launch.grid, descriptions[rid], spec_json[rid],
            {"type": "JobEnded", "message": message, "traceback": trace, "log": _job_log(sub.job),
             **({"rank": end.rank} if end.rank is not None and not unclaimed else {})},
            {"executor": launch.executor.name, "job_id": str(sub.job.job_id), "host": socket.gethostname()})
        if usage:
            record["cost"].update(wall_s=float(usage["elapsed_s"]), accelerator_hours=usage["accelerator_hours"],
                                  sacct=usage)
        try:
            store.write_record(store.run_dir(launch.results_root, launch.grid, rid), record)
        except store.RecordExistsError:
            pass
        except OSError as e:
            launch.problems.append(f"cell {rid}: job {sub.job.job_id} ended without a record ({why}), and its "
                                   f"failure record could not be written either ({e.strerror or e}"
                                   f"{f': {e.filename}' if e.filename else ''}); the cell has no record and counts "
                                   f"as pending")


# The line of a job's error worth showing: the exception line of its remote traceback.
def _reason(error: BaseException) -> str:
    lines = [ln for ln in str(error).splitlines()
             if ln.strip() and not ln.startswith((" ", "-", "You can", "Job ("))]
    return lines[-1] if lines else type(error).__name__


def _job_log(job: Any) -> str:
    try:
        return str(job.paths.stderr if job.paths.stderr.exists() else job.paths.stdout)
    except Exception:
        return ""

#----------------------------------------------------------------------------


# What `--status` shows for one cell.
@dataclass(frozen=True)
class CellStatus:
    run_id: str
    description: str
    state: str                             # ok, diverged, failed, corrupt, running, pending
    job: str                               # job id (and scheduler state) or ""
    detail: str = ""                       # error line of a failed cell
    log: str = ""                          # log of a failed cell, or of a job that ended early
    job_log: str = ""                      # the submitit job's own log of a failed cell
    after: str = ""                        # a submitted cell: the cells (jobs) it starts after, their states


# The state of every cell: records first (the truth), then the jobs of submitted cells (one
# scheduler query per executor; for SLURM one sacct call, a hint).
def status(grid: Grid, results_root: str | Path) -> list[CellStatus]:
    ids = [s.run_id for s in grid.specs]
    records = store.statuses(results_root, grid.name, ids)
    jobs = job_states(results_root, grid.name,
                      [r for r in ids if records[r] not in store.FINAL_STATUSES])
    out = []
    for spec, desc in zip(grid.specs, grid.descriptions()):
        rid, st, js = spec.run_id, records[spec.run_id], jobs.get(spec.run_id)
        marker = read_marker(results_root, grid.name, rid) if js else None
        job = f"{_running_job(marker, rid)} {js.state}" if marker and js else ""
        if js is not None and js.alive:
            after = _after_text(results_root, grid.name, marker.get("after") or [],
                                float(marker.get("since", 0.0))) if marker else ""
            out.append(CellStatus(rid, desc, "running", job, after=after))
        elif st is not None:
            out.append(_recorded_status(results_root, grid.name, rid, desc, st))
        elif js is not None:               # submitted, ended without a record: will be resubmitted
            out.append(CellStatus(rid, desc, "pending", job, "its job ended without a record",
                                  str(marker.get("log", "")) if marker else ""))
        else:
            out.append(CellStatus(rid, desc, "pending", ""))
    return out


# What a submitted cell starts after, with each need's state: "12_0 (run <id>: ok), ...", and a
# note when one failed (the cell never starts; the next launch records it failed).
def _after_text(results_root: str | Path, grid: str, after: Sequence[Mapping[str, Any]], since: float) -> str:
    if not after:
        return ""
    needs = dependencies.needs_of(after)
    statuses = dependencies.need_statuses(results_root, grid, needs, since)
    parts = [f"{a.get('job_id') or 'run'} (run {n.run_id}: {statuses[n.run_id] or 'no record yet'})"
             for a, n in zip(after, needs)]
    text = ", ".join(parts)
    if (need := dependencies.blocking_need(needs, statuses)) is not None:
        text += (f"; {need.run_id} failed, so this cell never starts: the next `harness.run` records it "
                 f"failed and cancels its job, `--rerun-failed` runs both again")
    return text


# The job of a submitted cell: for a local queue the worker that claimed it (or all its workers
# while none has), else the job it was submitted as.
def _running_job(marker: dict[str, Any], run_id: str) -> str:
    if not marker.get("queue"):
        return str(marker["job_id"])
    return workqueue.claimant(marker["queue"], run_id) or f"queued for {','.join(marker['workers'])}"


def _recorded_status(results_root: str | Path, grid: str, run_id: str, desc: str,
                     st: str) -> CellStatus:
    path = store.record_path(results_root, grid, run_id)
    try:
        record = store.read_record(path)
    except (store.CorruptRecordError, OSError) as e:
        return CellStatus(run_id, desc, "corrupt", "", str(e), str(path))
    provenance = record.get("provenance") or {}
    job = str(provenance.get("job_id") or "")
    error = record.get("error") or {}
    if not error:
        return CellStatus(run_id, desc, st, job)
    detail = f"{error.get('type', '?')}: {error.get('message', '')}"
    log, job_log = str(error.get("log", "")), str(provenance.get("submitit_log") or "")
    return CellStatus(run_id, desc, st, job, detail, log, job_log if job_log != log else "")


# Cancel the jobs of the grid's cells that have no final record; returns (cancelled job ids,
# problems). Their markers are removed, so the cells count as pending again.
def cancel(grid: Grid, results_root: str | Path) -> tuple[list[str], list[str]]:
    ids = [s.run_id for s in grid.specs]
    records = store.statuses(results_root, grid.name, ids)
    jobs = job_states(results_root, grid.name,
                      [r for r in ids if records[r] not in store.FINAL_STATUSES])
    by_executor: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for rid, js in jobs.items():
        marker = read_marker(results_root, grid.name, rid)
        if js.alive and marker is not None:
            by_executor.setdefault(marker["executor"], []).append((rid, marker))
    cancelled, problems = [], []
    for name, items in by_executor.items():
        entry = executors.registered.get(name)
        job_ids = sorted({str(j) for _, m in items for j in m.get("workers") or [m["job_id"]]})
        if entry.cancel is None:
            problems.append(f"{len(items)} cell(s) run under the {name!r} executor "
                            f"(jobs {', '.join(job_ids)}), which cannot be cancelled from here")
            continue
        error = entry.cancel([m for _, m in items])
        if error:
            problems.append(f"cancelling {name} jobs {', '.join(job_ids)} failed: {error}")
            continue
        cancelled += job_ids
        for rid, _ in items:
            (store.run_dir(results_root, grid.name, rid) / MARKER).unlink(missing_ok=True)
    return cancelled, problems

#----------------------------------------------------------------------------


# A one-line plain-text progress bar over a grid.
def progress_line(statuses: dict[str, str | None], total: int, done_before: int,
                  started: float, width: int = 30) -> str:
    ok = sum(1 for s in statuses.values() if s == "ok")
    failed = sum(1 for s in statuses.values() if s in ("failed", "corrupt"))
    diverged = sum(1 for s in statuses.values() if s == "diverged")
    finished = done_before + ok + failed + diverged
    filled = int(width * finished / total) if total else width
    elapsed = int(time.monotonic() - started)
    return (f"[{'#' * filled}{'.' * (width - filled)}] {finished}/{total} cells  ok {ok}  "
            f"failed {failed}  diverged {diverged}  waiting {len(statuses) - ok - failed - diverged}"
            f"  {elapsed // 60}:{elapsed % 60:02d}")


# Print progress lines: redrawn in place on a terminal, one line per change otherwise.
class ProgressPrinter:
    def __init__(self, total: int, done_before: int, stream: Any = None):
        self.total, self.done_before = total, done_before
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.last = ""
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, statuses: dict[str, str | None]) -> None:
        line = progress_line(statuses, self.total, self.done_before, self.started)
        key = line.rsplit("  ", 1)[0]
        if self.tty:
            self.stream.write("\r" + line)
        elif key != self.last:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = key

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
