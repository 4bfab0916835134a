"""The results store: one `record.json` per run under `results/<grid>/<run_id>/`.

A record is written atomically (`softdimo.files.atomic_write`: temporary file in the same
directory, fsync, rename) under a per-run lock, so a reader sees either the previous record or the new one, never half of one. An
`ok` or `diverged` record is final and is never overwritten; a `failed` record that is retried is
first kept as `attempts/<n>.json`, and a failed attempt is recorded once (the first of several
processes that report it wins). Corrupt records are reported by name, never dropped silently. A
write that fails (a full disk, a read-only file system) leaves the previous record as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, TypedDict

from softdimo.files import atomic_write

SCHEMA_VERSION = 1
RECORD_FILE = "record.json"
SAMPLES_FILE = "samples.png"                # a run's sample grid, beside its record
CONDITION_SAMPLES_FILE = "condition_samples.npz"  # its first images with their conditions
SELECTION_FILE = "selection.npz"            # best-of-N: the candidate kept per image, with its scores
GRID_INFO_FILE = "grid.json"                # what the report needs of the grid file
ATTEMPTS_DIR = "attempts"
LOCK_FILE = ".record.lock"
STATUSES = ("ok", "failed", "diverged")
FINAL_STATUSES = ("ok", "diverged")        # never overwritten; a run in one of these is done
REQUIRED_KEYS = ("schema_version", "run_id", "grid", "spec", "status")

#----------------------------------------------------------------------------


class _RecordErrorKeys(TypedDict):
    type: str                       # exception class name, e.g. "RuntimeError"; "ProcessStopped", "JobEnded"
    message: str                    # str(exception): the line shown in summaries
    traceback: str                  # full formatted traceback
    log: str                        # path of the run's log file (or the failing process's job log)


# The error of a failed run; over several processes, which process failed first.
class RecordError(_RecordErrorKeys, total=False):
    rank: int                       # the process that failed first (its rank), when known
    world_size: int                 # the processes of the cell
    traceback_tail: str             # the last lines of that process's traceback


# One metric value with the protocol that produced it (see `harness.contracts.protocol`).
class RecordMetric(TypedDict):
    value: float | None             # None when the value was not finite (status "diverged")
    higher_is_better: bool          # direction, for arrows and "best" marks in reports
    protocol: dict[str, Any]        # name, implementation + version, features, reference, n, ...
    protocol_id: str                # "<name>:<sha256 prefix>" of the protocol


# Where the run ran and with which code.
class RecordProvenance(TypedDict, total=False):
    git_commit: str | None          # HEAD of the project checkout, None outside a git checkout
    git_dirty: bool | None          # uncommitted changes to tracked or untracked (not ignored) files
    packages: dict[str, str]        # distribution name -> version, for the libraries that matter
    host: str                       # hostname
    python: str                     # interpreter version
    accelerator: str                # "cpu" or "<n> x <GPU name>"
    world_size: int                 # processes that ran the cell together (docs/distributed.md)
    devices: list[str]              # each process's device, in rank order ("cpu", "cuda:0 <GPU name>")
    collective_timeout_s: float     # world_size > 1: seconds a collective waited before failing
    attempt: str                    # one start of the cell by one job (12 hex digits)
    executor: str                   # submitit cluster name ("debug", "local", "slurm") or "none"
    job_id: str | None              # submitit job id (array jobs: "<array>_<index>")
    submitit_log: str | None        # the submitit job's stdout log, when inside a job
    started: str                    # ISO 8601 time the run started
    finished: str                   # ISO 8601 time the record was written
    slurm: "RecordSlurm"            # SLURM runs only
    submitted_code: dict[str, Any]  # SLURM: git_commit, git_dirty, diff_sha256 at submission
    code_check: str | None          # SLURM: "same", "changed, allowed" (--allow-code-change), "refused"
    init_from: dict[str, Any]       # a continuation: the run it continues (run_id, grid, record, cache_key,
                                    # step, refinement, git_commit)
    after: list[dict[str, Any]]     # a DependencyFailed record: the cells it was to start after


# The SLURM job that wrote the record.
class RecordSlurm(TypedDict):
    job_id: str                     # "<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID>", else SLURM_JOB_ID
    restart_count: int              # requeues before the run that wrote it (SLURM_RESTART_COUNT)
    partition: str | None
    node: str | None
    profile: str | None             # the resource profile (slurm/profiles/<name>.yaml)
    max_num_timeout: int | None     # the requeue cap: time-outs before the job gives up


# One start of a job on a cell (a requeued job starts again).
class RecordRun(TypedDict):
    restart: int                    # SLURM_RESTART_COUNT of that start (0 without SLURM)
    wall_s: float                   # seconds that start ran
    end: str                        # "requeued", or the record's status for the last start
    accelerator_hours: float        # wall_s * accelerators used by all processes / 3600


# What SLURM accounting says the job used, over all its starts (`sacct --duplicates`).
class RecordSacct(TypedDict):
    elapsed_s: int                  # sum of ElapsedRaw, the last start counted until the record
    runs: int                       # starts accounted
    gpus: int                       # GPUs allocated (AllocTRES gres/gpu)
    accelerator_hours: float        # sum over starts of ElapsedRaw * GPUs / 3600
    starts: list[dict[str, Any]]    # per start: state (e.g. REQUEUED), elapsed_s, gpus, accelerator_hours


class _RecordCostKeys(TypedDict):
    wall_s: float                   # seconds from start to record, over every start of the job
    peak_mem_mb: float              # peak resident memory of the job process so far (MiB)
    accelerator_hours: float        # wall_s * accelerators used by all processes / 3600
    stages: dict[str, float]        # seconds per stage of the last start, e.g. distill_s, eval_s


# What the run cost, measured by the job itself and, on SLURM with accounting, by sacct. The
# launcher's JobEnded records have no `runs` or `world_size`; on SLURM they take wall_s and
# accelerator_hours from sacct.
class RecordCost(_RecordCostKeys, total=False):
    runs: list[RecordRun]           # every start of the job on this cell, in order
    world_size: int                 # processes that ran the cell together
    sacct: RecordSacct              # SLURM with accounting only


# A record, schema version 1 (`results/<grid>/<run_id>/record.json`).
class Record(TypedDict, total=False):
    schema_version: int             # SCHEMA_VERSION at the time of writing
    run_id: str                     # RunSpec.run_id: 16 hex digits of the spec's sha256
    grid: str                       # grid name: the directory under the results root
    description: str                # short human-readable label of the cell
    spec: dict[str, Any]            # RunSpec.to_json(): axes, resolved params (run_spec.ADDED_PARAMS
                                    # left out at their default), plugins
    status: Literal["ok", "failed", "diverged"]  # diverged: some metric was not finite
    error: RecordError | None       # set when status is "failed"
    metrics: dict[str, RecordMetric]  # metric name -> value with protocol
    curves: dict[str, list[list[float]]]  # metric name -> [[training step, value], ...]
    samples: dict[str, Any]         # {"grid_png": file name beside the record, "count": images,
                                    #  "per_condition": ..., "selection": best-of-N's file}
    info: dict[str, Any]            # method-specific summary (JSON values only)
    provenance: RecordProvenance
    cost: RecordCost
    reused_from: str                # "<grid>/<run_id>" when copied from another grid's ok record


# A record that cannot be read; the message names the file.
class CorruptRecordError(ValueError):
    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: corrupt record: {reason}")


# Raised when a write would replace a final (`ok` / `diverged`) record.
class RecordExistsError(FileExistsError):
    pass


# A record found by `scan` that could not be used.
@dataclass(frozen=True)
class Problem:
    path: Path
    message: str

#----------------------------------------------------------------------------


# The directory of one run.
def run_dir(results_root: str | Path, grid: str, run_id: str) -> Path:
    return Path(results_root) / grid / run_id


# The record file of one run.
def record_path(results_root: str | Path, grid: str, run_id: str) -> Path:
    return run_dir(results_root, grid, run_id) / RECORD_FILE


# Read and check one record; raises CorruptRecordError naming the file on any problem.
def read_record(path: str | Path) -> Record:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise CorruptRecordError(path, f"not UTF-8 text ({e.reason})") from None
    if not text.strip():
        raise CorruptRecordError(path, "empty file")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise CorruptRecordError(path, f"invalid JSON at line {e.lineno} column {e.colno} "
                                 f"({e.msg}); the file may be truncated") from None
    check_record(record, path)
    return record


# Check the keys a reader relies on; raises CorruptRecordError.
def check_record(record: Any, path: str | Path) -> None:
    if not isinstance(record, dict):
        raise CorruptRecordError(Path(path), f"expected a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise CorruptRecordError(Path(path), f"missing key(s) {', '.join(missing)}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise CorruptRecordError(Path(path), f"schema_version {record['schema_version']!r}; this "
                                 f"harness reads version {SCHEMA_VERSION}")
    if record["status"] not in STATUSES:
        raise CorruptRecordError(Path(path), f"status {record['status']!r} is not one of "
                                 f"{', '.join(STATUSES)}")
    if not isinstance(record["spec"], dict):
        raise CorruptRecordError(Path(path), "spec is not an object")


# Why the launcher cannot write under these directories, or None: each (or, where it does not
# exist yet, its nearest existing parent) must take a small file, which is removed again (a
# read-only file system, missing permissions, a full disk refuse it).
def unwritable(directories: Iterable[str | Path]) -> str | None:
    for directory in map(Path, directories):
        existing = next((d for d in (directory.absolute(), *directory.absolute().parents) if d.is_dir()), None)
        try:
            if existing is None:
                raise NotADirectoryError(f"no existing parent directory of {directory}")
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check-") as f:
                f.write(b"softdimo write check\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            return (f"cannot write under {directory}: {e.strerror or e} ({existing}); results, logs and caches "
                    f"are written there (--results DIR, $SOFTDIMO_CACHE)")
    return None


# Write a record atomically and under the run's lock; never replaces an ok/diverged record, nor a
# failed record of the same attempt (`provenance.attempt`: another process of the cell reported
# the failure first); keeps a replaced failed one (attempts/<n>.json). NaN is refused: a record is
# strict JSON.
def write_record(run_dir: str | Path, record: Record) -> Path:
    run_dir = Path(run_dir)
    target = run_dir / RECORD_FILE
    check_record(record, target)
    data = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
    attempt = (record.get("provenance") or {}).get("attempt")

    def make_room() -> None:
        previous = _previous_status(target)
        if previous in FINAL_STATUSES:
            raise RecordExistsError(f"{target}: a {previous!r} record exists and is never "
                                    f"overwritten; delete the run directory to redo it")
        if previous is not None and attempt and _attempt_of(target) == attempt:
            raise RecordExistsError(f"{target}: attempt {attempt} is recorded already")
        if previous is not None:
            _keep_attempt(run_dir, target)

    return atomic_write(target, data, lock=run_dir / LOCK_FILE, check=make_room)


# Status of the record at `path`, "corrupt" if unreadable, None if absent.
def _previous_status(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        return read_record(path)["status"]
    except CorruptRecordError:
        return "corrupt"


# The attempt of the record at `path` (None when unreadable or without one).
def _attempt_of(path: Path) -> str | None:
    try:
        return (read_record(path).get("provenance") or {}).get("attempt")
    except (CorruptRecordError, OSError):
        return None


# The identity of a record file as written (inode, modification time), None when there is none: a
# record written later (atomically, so as a new file) has another.
def record_stamp(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


# Keep the current record as attempts/<n>.json (a hard link, so the record never goes missing).
def _keep_attempt(run_dir: Path, target: Path) -> None:
    attempts = run_dir / ATTEMPTS_DIR
    attempts.mkdir(exist_ok=True)
    n = 1 + max((int(p.stem) for p in attempts.glob("*.json") if p.stem.isdigit()), default=0)
    try:
        os.link(target, attempts / f"{n}.json")
    except OSError:                             # filesystems without hard links
        atomic_write(attempts / f"{n}.json", target.read_bytes())


#----------------------------------------------------------------------------


# Keep what the report needs of a grid file beside its records (`results/<grid>/grid.json`): its
# description, scale, file, `compare:` section and cells (run ids in matrix order).
def write_grid_info(results_root: str | Path, name: str, info: Mapping[str, Any]) -> Path:
    return atomic_write(Path(results_root) / name / GRID_INFO_FILE, json.dumps(dict(info), indent=1, sort_keys=True))


# The grid information written by `write_grid_info`, {} when there is none.
def grid_info(results_root: str | Path, name: str) -> dict[str, Any]:
    path = Path(results_root) / name / GRID_INFO_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


# The place of each run in its grid's matrix (the grid information's `cells`: run ids in the order
# the grid file names them), over the given grids; a run in several grids keeps its first place.
def cell_order(results_root: str | Path, grids: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in sorted(grids):
        for i, run_id in enumerate(grid_info(results_root, name).get("cells", [])):
            out.setdefault(run_id, i)
    return out


# The status of each run id's record in one grid: "ok" / "failed" / "diverged" / "corrupt" / None.
def statuses(results_root: str | Path, grid: str, run_ids: Iterable[str]) -> dict[str, str | None]:
    gdir = Path(results_root) / grid
    present = set(os.listdir(gdir)) if gdir.is_dir() else set()   # one listing, not a stat per run
    return {rid: _previous_status(gdir / rid / RECORD_FILE) if rid in present else None
            for rid in run_ids}


# `statuses`, counting only records written at or after `since` (epoch seconds): an older record is
# an earlier attempt's (a failed cell submitted again), not the outcome of the current one.
def statuses_since(results_root: str | Path, grid: str, run_ids: Iterable[str], since: float) -> dict[str, str | None]:
    out = statuses(results_root, grid, run_ids)
    for rid, status in out.items():
        if status is not None and _mtime(record_path(results_root, grid, rid)) < since:
            out[rid] = None
    return out


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


# The grid directories under a results root (hidden directories and `report` are not grids).
def grid_names(results_root: str | Path) -> list[str]:
    root = Path(results_root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name != "report")


# Every readable record under a results root, and a Problem for each unreadable one.
def scan(results_root: str | Path, grids: Iterable[str] | None = None
         ) -> tuple[list[Record], list[Problem]]:
    root = Path(results_root)
    names = grid_names(root) if grids is None else list(grids)
    records: list[Record] = []
    problems: list[Problem] = []
    for grid in names:
        gdir = root / grid
        if not gdir.is_dir():
            problems.append(Problem(gdir, f"no results for grid {grid!r} under {root}"))
            continue
        for entry in sorted(os.scandir(gdir), key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            path = os.path.join(entry.path, RECORD_FILE)
            try:
                record = read_record(path)
            except FileNotFoundError:
                continue                        # a run that has not written its record yet
            except (CorruptRecordError, OSError) as e:
                problems.append(Problem(Path(path), getattr(e, "reason", str(e))))
                continue
            if record["run_id"] != entry.name or record["grid"] != grid:
                problems.append(Problem(Path(path), f"record says run {record['run_id']!r} of grid "
                                        f"{record['grid']!r}, but lies in {grid}/{entry.name}"))
                continue
            records.append(record)
    return records, problems


# The failed records kept when their cells were run again (`attempts/<n>.json` of every run of the
# grids, or of every grid), readable ones only, in path order.
def kept_attempts(results_root: str | Path, grids: Iterable[str] | None = None) -> list[Record]:
    root = Path(results_root)
    out = []
    for grid in (grid_names(root) if grids is None else list(grids)):
        for path in sorted((root / grid).glob(f"*/{ATTEMPTS_DIR}/*.json")):
            try:
                out.append(read_record(path))
            except (CorruptRecordError, OSError):
                continue
    return out
# The ok record of a run: in `grid` first, then in any other grid under the results root; None if
# there is none.
def find_ok_record(results_root: str | Path, run_id: str, grid: str) -> Path | None:
    if statuses(results_root, grid, [run_id])[run_id] == "ok":
        return record_path(results_root, grid, run_id)
    return ok_records_elsewhere(results_root, [run_id], grid).get(run_id)


# The `failed` record of a cell that did not run to its end (its job ended without a record, or
# it could not start): its error and where that was decided; no metrics, no cost.
def failure_record(run_id: str, grid: str, description: str, spec_json: Mapping[str, Any],
                   error: RecordError, provenance: Mapping[str, Any]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "run_id": run_id, "grid": grid, "description": description,
            "spec": dict(spec_json), "status": "failed", "error": dict(error), "metrics": {}, "curves": {},
            "samples": {}, "info": {}, "provenance": dict(provenance),
            "cost": {"wall_s": 0.0, "peak_mem_mb": 0.0, "accelerator_hours": 0.0, "stages": {}}}


# For each of `run_ids`, the ok record of the same run in another grid under the same results root
# (the run id hashes the whole resolved spec, so such a record is the same run). Lists each other
# grid's directory once; reads only the candidates.
def ok_records_elsewhere(results_root: str | Path, run_ids: Iterable[str], grid: str) -> dict[str, Path]:
    wanted = set(run_ids)
    found: dict[str, Path] = {}
    for other in grid_names(results_root):
        if other == grid or not wanted:
            continue
        for rid in wanted & set(os.listdir(Path(results_root) / other)):
            path = record_path(results_root, other, rid)
            try:
                if path.is_file() and read_record(path)["status"] == "ok":
                    found[rid] = path
            except CorruptRecordError:
                continue
        wanted -= set(found)
    return found


# Copy another grid's ok record of the same run (and its sample files) into `grid`, marked with
# `reused_from`; the original keeps its provenance and cost. Returns the new record's path.
def reuse_record(source: Path, results_root: str | Path, grid: str) -> Path:
    record = read_record(source)
    record["reused_from"] = f"{record['grid']}/{record['run_id']}"
    record["grid"] = grid
    target = run_dir(results_root, grid, record["run_id"])
    target.mkdir(parents=True, exist_ok=True)
    for key in ("grid_png", "per_condition", "selection"):
        name = (record.get("samples") or {}).get(key)
        if name and (source.parent / name).is_file():
            atomic_write(target / name, lambda tmp: shutil.copyfile(source.parent / name, tmp))
    return write_record(target, record)

