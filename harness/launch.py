"""Planning and launching a grid: which cells are done, submitting the rest, waiting for records.

A cell is done when its record is `ok` or `diverged`; the scheduler's own state is only a hint.
Submitted cells get a marker (`<run_dir>/.submitted`, the job id) so that running the command
again while their jobs still run does not submit them twice.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from harness import registry, store
from harness.executors import ExecutorEntry, Submission, SubmitRequest, load_resources
from harness.grid import Grid
from harness.spec import RunSpec

MARKER = ".submitted"
SUBMITIT_DIR = ".submitit"
STATES = ("done", "diverged", "failed", "corrupt", "running", "pending")

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
    gdir = Path(results_root) / grid.name
    started = set(os.listdir(gdir)) if gdir.is_dir() else set()
    out = []
    for spec, desc in zip(grid.specs, grid.descriptions()):
        st = status[spec.run_id]
        if st is None:
            running = spec.run_id in started and _running(results_root, grid.name, spec.run_id)
            state = "running" if running else "pending"
        else:
            state = "done" if st == "ok" else st
        out.append(CellState(spec, desc, state))
    return out


# A cell submitted earlier (e.g. with --no-wait) whose job still runs.
def _running(results_root: str | Path, grid: str, run_id: str) -> bool:
    marker = read_marker(results_root, grid, run_id)
    if marker is None or marker.get("executor") not in registry.executors:
        return False
    return registry.executors.get(marker["executor"]).alive(marker)


# The cells to submit: pending ones, plus failed / corrupt ones when retrying failures.
def to_submit(cells: Sequence[CellState], rerun_failed: bool) -> list[RunSpec]:
    retry = ("failed", "corrupt") if rerun_failed else ()
    return [c.spec for c in cells if c.state == "pending" or c.state in retry]


# The submission marker of a run (executor, job id, host, time), None if there is none.
def read_marker(results_root: str | Path, grid: str, run_id: str) -> dict[str, Any] | None:
    path = store.run_dir(results_root, grid, run_id) / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_marker(results_root: Path, grid: str, run_id: str, executor: str, job_id: str,
                  folder: Path) -> None:
    d = store.run_dir(results_root, grid, run_id)
    d.mkdir(parents=True, exist_ok=True)
    (d / MARKER).write_text(json.dumps({
        "executor": executor, "job_id": job_id, "host": socket.gethostname(), "folder": str(folder),
        "submitted": dt.datetime.now().astimezone().isoformat(timespec="seconds")}))

#----------------------------------------------------------------------------


# Submitted jobs of one launch.
@dataclass
class Launch:
    grid: str
    results_root: Path
    executor: ExecutorEntry
    submissions: list[Submission]
    folder: Path

    @property
    def run_ids(self) -> list[str]:
        return [r for s in self.submissions for r in s.run_ids]


# Submit cells through a registered executor, one submission per resource profile.
def submit(grid: Grid, specs: Sequence[RunSpec], results_root: str | Path, executor: str,
           max_parallel: int) -> Launch:
    entry = registry.executors.get(executor)
    root = Path(results_root).resolve()
    folder = root / grid.name / SUBMITIT_DIR / "%j"
    groups: dict[str | None, list[RunSpec]] = {}
    for spec in specs:                       # one profile per grid today; grouped all the same
        groups.setdefault(grid.resources, []).append(spec)
    resources = {name: load_resources(name) for name in groups}   # all checked before submitting
    submissions: list[Submission] = []
    for profile, group in groups.items():
        submissions += entry.submit(SubmitRequest(group, grid.name, root, folder,
                                                  resources[profile], max(1, max_parallel)))
    if not entry.in_process:
        for sub in submissions:
            for rid in sub.run_ids:
                _write_marker(root, grid.name, rid, entry.name, str(sub.job.job_id), folder)
    return Launch(grid.name, root, entry, submissions, folder.parent)


# Wait until every submitted cell has a record; calls `progress(statuses)` as records appear.
# A job that ends without writing a cell's record gets a failed record naming the job's log.
def wait(launch: Launch, progress: Callable[[dict[str, str | None]], None] = lambda s: None,
         poll_s: float = 1.0) -> dict[str, str | None]:
    ids = launch.run_ids
    pending = list(launch.submissions)
    statuses = store.statuses(launch.results_root, launch.grid, ids)
    progress(statuses)
    while pending:
        if launch.executor.in_process:
            sub = pending.pop(0)
            _settle(launch, sub, launch.executor.run_in_process(sub.job))
        else:
            time.sleep(poll_s)
            for sub in [s for s in pending if s.job.done()]:
                pending.remove(sub)
                _settle(launch, sub, _job_exception(sub.job))
        statuses = store.statuses(launch.results_root, launch.grid, ids)
        progress(statuses)
    for rid in ids:
        (store.run_dir(launch.results_root, launch.grid, rid) / MARKER).unlink(missing_ok=True)
    return statuses


def _job_exception(job: Any) -> BaseException | None:
    try:
        return job.exception()
    except Exception as e:                 # e.g. UncompletedJobError: the job left no result
        return e


# After a job ended: every cell of it without a record gets a failed record.
def _settle(launch: Launch, sub: Submission, error: BaseException | None) -> None:
    statuses = store.statuses(launch.results_root, launch.grid, sub.run_ids)
    spec_json = {s.run_id: s.to_json() for s in sub.specs}
    descriptions = {s.run_id: s.description() for s in sub.specs}
    for rid in sub.run_ids:
        if statuses[rid] is not None:
            continue
        record = {"schema_version": store.SCHEMA_VERSION, "run_id": rid, "grid": launch.grid,
                  "description": descriptions[rid], "spec": spec_json[rid], "status": "failed",
                  "error": {"type": "JobEnded", "message": f"job {sub.job.job_id} ended without "
                            f"a record for this cell ({_reason(error)})",
                            "traceback": str(error or ""), "log": _job_log(sub.job)},
                  "metrics": {}, "curves": {}, "samples": {}, "info": {},
                  "provenance": {"executor": launch.executor.name, "job_id": str(sub.job.job_id),
                                 "host": socket.gethostname()},
                  "cost": {"wall_s": 0.0, "peak_mem_mb": 0.0, "accelerator_hours": 0.0,
                           "stages": {}}}
        try:
            store.write_record(store.run_dir(launch.results_root, launch.grid, rid), record)
        except store.RecordExistsError:
            pass


# The line of a job's error worth showing: the exception line of its remote traceback.
def _reason(error: BaseException | None) -> str:
    if error is None:
        return "the job ended without writing this cell's record"
    lines = [ln for ln in str(error).splitlines()
             if ln.strip() and not ln.startswith((" ", "-", "You can", "Job ("))]
    return lines[-1] if lines else type(error).__name__


def _job_log(job: Any) -> str:
    try:
        return str(job.paths.stderr if job.paths.stderr.exists() else job.paths.stdout)
    except Exception:
        return ""

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
