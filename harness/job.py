"""What a submitted job runs: one cell (`execute`), or the cells it claims, in order, from a queue
shared with other jobs (`execute_queue`, the local executor's workers).

The callables take only JSON values (the spec as JSON, the grid name, the results root), so
submitit pickles a few hundred bytes and the job imports the code on disk. A cell always ends
with a record: `ok`, `diverged` (a metric was not finite) or `failed` (any exception, with its
traceback and the path of the run's log). `execute` returns the status instead of raising, so a
worker goes on to its next cell after a failure.

On SLURM a cell is a `SlurmCell`: checkpointable (requeued on USR2 / time limit, resuming from the
cell's `checkpoints/`), recording its job id, requeues and the requeue cap, and refusing to run on
other code than was submitted unless the launch allowed it.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import resource
import socket
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import submitit
import torch

from harness import preemption, registry, slurm, store, workqueue
from harness.entries import EvalInput, MetricValue, RunContext
from harness.spec import RunSpec, optimised_rewards, spec_defaults

THREADS_ENV = "SOFTDIMO_THREADS"
CACHE_ENV = "SOFTDIMO_CACHE"
DEVICE_ENV = "SOFTDIMO_DEVICE"
LOG_FILE = "log.txt"
JOB_RUNS_FILE = "job_runs.jsonl"      # one line per interrupted (requeued) run of a job on a cell
SAMPLES_FILE = "samples.png"
MIN_TILE_PX = 64                      # small images (8x8 digits) are upscaled to at least this
MAX_TILE_PX = 128                     # large images are downscaled to at most this in the grid
PACKAGES = ("softdimo-harness", "torch", "torchvision", "numpy", "scipy", "scikit-learn",
            "submitit", "pyyaml", "pillow", "matplotlib", "safetensors", "torch-fidelity",
            "clean-fid", "open_clip_torch")

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


# What the launcher fixed when it submitted a SLURM cell (JSON values only).
@dataclass(frozen=True)
class Submission:
    code: dict[str, Any]                 # CodeVersion at submission, as JSON
    allow_code_change: bool = False      # --allow-code-change: run even on other code
    profile: str | None = None           # resource profile name
    max_num_timeout: int | None = None   # the requeue cap (submitit's slurm_max_num_timeout)
    signal_delay_s: int = 90             # USR2 this long before the time limit


# A job refused to run because the code changed between submission and start.
class CodeChangedError(RuntimeError):
    pass


# Run one cell and write its record; returns the record's status ("ok", "diverged", "failed").
# `submission` (SLURM cells) adds the code check, the job's requeue state and sacct's cost.
def execute(spec_json: dict[str, Any], grid: str, results_root: str,
            submission: Submission | None = None) -> str:
    spec = RunSpec.from_json(spec_json)
    run_dir = store.run_dir(results_root, grid, spec.run_id)
    existing = store.statuses(results_root, grid, [spec.run_id])[spec.run_id]
    if existing in store.FINAL_STATUSES:
        return existing                     # submitted twice (e.g. two --no-wait launches)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / LOG_FILE
    job = slurm.current_job()
    started, t0 = _now(), time.perf_counter()
    reraise: BaseException | None = None
    code_check: str | None = None
    with open(log_path, "a", encoding="utf-8") as log_file:
        log = _logger(log_file)
        again = f" (SLURM job {job.job_id}, restart {job.restart_count})" if job and job.restart_count else ""
        log(f"run {spec.run_id} of grid {grid!r} started {started}{again}")
        try:
            code_check = _check_code(submission, log)
            record = _run(spec, grid, results_root, run_dir, log)
        except Exception as e:
            tb = traceback.format_exc()
            log(tb)
            record = _base_record(spec, grid, "failed")
            record["error"] = {"type": type(e).__name__, "message": str(e) or repr(e),
                               "traceback": tb, "log": str(log_path)}
            if isinstance(e, CodeChangedError):
                code_check = "refused"
            if isinstance(e, submitit.core.utils.UncompletedJobError):   # the requeue cap
                record["error"]["message"] = _cap_message(e, job, submission)
                reraise = e                 # the job ends in error, as submitit intends
        except BaseException:
            if job is not None:             # SystemExit from submitit: the job was requeued
                _note_interrupted_run(run_dir, job, time.perf_counter() - t0)
                log("run interrupted by SLURM; the job was requeued and resumes from its checkpoint")
            raise
        record["provenance"] = {**_provenance(), "started": started, "finished": _now()}
        if submission is not None:
            record["provenance"]["submitted_code"] = submission.code
            record["provenance"]["code_check"] = code_check
        if job is not None:
            record["provenance"]["slurm"] = {
                **job.to_json(), "profile": submission.profile if submission else None,
                "max_num_timeout": submission.max_num_timeout if submission else None}
        record["cost"] = _cost(time.perf_counter() - t0, record.pop("_stages", {}),
                               record.pop("_gpus", 0), _earlier_runs(run_dir, job), job,
                               record["status"])
        try:
            store.write_record(run_dir, record)
        except store.RecordExistsError as e:  # another job finished the same cell first
            log(str(e))
            return store.statuses(results_root, grid, [spec.run_id])[spec.run_id] or "failed"
        log(f"run {spec.run_id} finished: {record['status']}")
    if reraise is not None:
        raise reraise
    return record["status"]


# One cell as a SLURM array task. Checkpointable: on USR2 / the time limit submitit calls the
# inherited `checkpoint()`, which resubmits this object (JSON values only; the progress itself is
# in the cell's checkpoints/ on disk), then requeues the job, at most `max_num_timeout` times.
class SlurmCell(submitit.helpers.Checkpointable):
    def __init__(self, spec_json: dict[str, Any], grid: str, results_root: str,
                 submission: Submission) -> None:
        self.spec_json, self.grid, self.results_root = spec_json, grid, results_root
        self.submission = submission

    # Run the cell; a signal during distillation saves at the next step boundary, within half
    # of the profile's signal delay.
    def __call__(self) -> str:
        preemption.set_grace(self.submission.signal_delay_s / 2)
        return execute(self.spec_json, self.grid, self.results_root, self.submission)


# "same" / "changed, allowed"; raises CodeChangedError when the job's code is not the submitted.
def _check_code(submission: Submission | None, log: Callable[[str], None]) -> str | None:
    if submission is None:
        return None
    submitted, now = CodeVersion(**submission.code), code_version()
    if submitted.same_code(now):
        return "same"
    message = (f"the code changed between submission and start: submitted {submitted.describe()}, "
               f"this job runs {now.describe()}")
    if submission.allow_code_change:
        log(f"{message}; running anyway (--allow-code-change)")
        return "changed, allowed"
    raise CodeChangedError(f"{message}. The job refuses to run on other code than was submitted: "
                           f"resubmit with --rerun-failed, or pass --allow-code-change")


def _cap_message(error: BaseException, job: slurm.JobInfo | None,
                 submission: Submission | None) -> str:
    restarts = job.restart_count if job else 0
    cap = submission.max_num_timeout if submission else None
    profile = submission.profile if submission else None
    return (f"{error} Requeue cap reached after {restarts} requeue(s) (max_num_timeout={cap}, "
            f"profile {profile!r}). The checkpoint is kept: retry with --rerun-failed after raising "
            f"the profile's timeout_min or max_num_timeout.")


# Remember the wall time of a run that was interrupted to be requeued (for the final cost).
def _note_interrupted_run(run_dir: Path, job: slurm.JobInfo, wall_s: float) -> None:
    entry = {"job_id": job.job_id, "restart": job.restart_count, "wall_s": round(wall_s, 3),
             "end": "requeued", "time": _now()}
    with open(run_dir / JOB_RUNS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


# The interrupted earlier runs of this job on this cell.
def _earlier_runs(run_dir: Path, job: slurm.JobInfo | None) -> list[dict[str, Any]]:
    path = run_dir / JOB_RUNS_FILE
    if job is None or not path.exists():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in runs if r.get("job_id") == job.job_id]


# Work through a queue shared with other jobs (harness.workqueue): run, in order, every cell this
# job wins the claim of in `queue_dir`; returns the statuses of the cells it ran.
def execute_queue(spec_jsons: list[dict[str, Any]], grid: str, results_root: str, queue_dir: str) -> list[str]:
    job_id = _job_environment()[1] or str(os.getpid())
    return [execute(s, grid, results_root) for s in spec_jsons
            if workqueue.claim(queue_dir, RunSpec.from_json(s).run_id, job_id)]


def _run(spec: RunSpec, grid: str, results_root: str, run_dir: Path,
         log: Callable[[str], None]) -> dict[str, Any]:
    import harness.builtin  # noqa: F401  (registers the built-in entries)
    for module in spec.plugins:
        registry.load_plugin(module)
    ctx = RunContext(run_dir=run_dir, cache_dir=cache_dir(results_root), device=_device(),
                     threads=threads(), log=log)
    torch.set_num_threads(ctx.threads)
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    log(f"device {ctx.device}, {ctx.threads} thread(s), cache {ctx.cache_dir}")

    result = registry.methods.get(spec.method).run(spec, ctx)
    t_eval = time.perf_counter()
    metrics = dict(result.extra_metrics)
    names = dict(spec.params).get("eval.metrics", ())
    optimised, rewards = set(), optimised_rewards(spec)
    for name in names:
        entry = registry.metrics.get(name)
        values = entry.compute(EvalInput(spec, result.teacher, result.images, result.conditions, result.tokens), ctx)
        for key, value in values.items():
            if key in metrics:
                raise ValueError(f"metric value {key!r} produced twice (by {name!r} and earlier)")
            metrics[key] = value
            if entry.reward is not None and entry.reward in rewards:
                optimised.add(key)
    stages = {**result.stage_seconds, "eval_s": time.perf_counter() - t_eval}

    finite = all(math.isfinite(v.value) for v in metrics.values())
    record = _base_record(spec, grid, "ok" if finite else "diverged")
    record["metrics"] = {k: {**_metric_json(v), **({"optimised": True} if k in optimised else {})}
                         for k, v in metrics.items()}
    record["curves"] = {k: [[float(s), float(v)] for s, v in c] for k, c in result.curves.items()}
    record["info"] = _jsonable(result.info)
    n_grid = dict(spec.params).get("eval.grid_images", 0)
    if n_grid and len(result.images):
        save_image_grid(result.images[:n_grid], run_dir / SAMPLES_FILE)
        record["samples"] = {"grid_png": SAMPLES_FILE, "count": min(n_grid, len(result.images))}
    if not finite:
        bad = sorted(k for k, v in metrics.items() if not math.isfinite(v.value))
        log(f"diverged: metric(s) {', '.join(bad)} not finite")
    record["_stages"] = stages
    record["_gpus"] = max(1, torch.cuda.device_count()) if ctx.device.type == "cuda" else 0
    return record


def _base_record(spec: RunSpec, grid: str, status: str) -> dict[str, Any]:
    try:
        description = spec.description(spec_defaults(spec))
    except Exception:                       # names not registered: fall back to the axes
        description = spec.description()
    return {"schema_version": store.SCHEMA_VERSION, "run_id": spec.run_id, "grid": grid,
            "description": description, "spec": spec.to_json(), "status": status, "error": None,
            "metrics": {}, "curves": {}, "samples": {}, "info": {}}


def _metric_json(v: MetricValue) -> dict[str, Any]:
    out = v.to_json()
    out["value"] = float(v.value) if math.isfinite(v.value) else None
    return out


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


# The shared cache: $SOFTDIMO_CACHE, else <results root>/.cache.
def cache_dir(results_root: str | Path) -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(results_root) / ".cache")


# Torch threads for this job: $SOFTDIMO_THREADS (set by the launcher per job), else 1.
def threads() -> int:
    try:
        return max(1, int(os.environ.get(THREADS_ENV, "1")))
    except ValueError:
        return 1


def _device() -> torch.device:
    name = os.environ.get(DEVICE_ENV)
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _logger(log_file: Any) -> Callable[[str], None]:
    def log(message: str) -> None:
        line = f"[{dt.datetime.now().strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()
    return log


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds")

#----------------------------------------------------------------------------


# Save images [N, C, H, W] in [0, 1] as one PNG grid; small images are upscaled (nearest).
def save_image_grid(images: torch.Tensor, path: Path) -> None:
    from PIL import Image
    x = images.detach().float().cpu().nan_to_num(0.0).clamp(0, 1)
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"sample grid needs 1 or 3 channels, got {c}")
    side = max(h, w)
    if side < MIN_TILE_PX:
        x = torch.nn.functional.interpolate(x, scale_factor=-(-MIN_TILE_PX // side), mode="nearest")
    elif side > MAX_TILE_PX:
        x = torch.nn.functional.interpolate(x, scale_factor=MAX_TILE_PX / side, mode="area")
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pad = 2
    canvas = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        canvas[:, top:top + h, left:left + w] = x[i]
    pixels = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels[..., 0] if c == 1 else pixels, "L" if c == 1 else "RGB").save(path)

#----------------------------------------------------------------------------


# Where the run ran: code version, packages, machine, submitit job.
def _provenance() -> dict[str, Any]:
    commit, dirty = _git_state()
    env = _job_environment()
    return {"git_commit": commit, "git_dirty": dirty, "packages": _packages(),
            "host": socket.gethostname(), "python": platform.python_version(),
            "accelerator": _accelerator(), "executor": env[0], "job_id": env[1],
            "submitit_log": env[2]}


# Commit and dirty flag of the project checkout holding this code (None, None outside git).
def _git_state() -> tuple[str | None, bool | None]:
    version = code_version()
    return version.git_commit, version.git_dirty


# The code version of the project checkout holding this code (cached per process).
@functools.lru_cache(maxsize=1)
def code_version() -> CodeVersion:
    root = Path(__file__).resolve().parents[1]

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


@functools.lru_cache(maxsize=1)
def _packages() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _accelerator() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"


# (executor name, job id, log path) of the submitit job running this code, if any.
def _job_environment() -> tuple[str, str | None, str | None]:
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


# Cost of a cell: job-measured wall time and accelerator hours over every run of its job
# (interrupted runs included), per-stage seconds of the last run, and SLURM accounting's view.
def _cost(wall_s: float, stages: dict[str, float], gpus: int, earlier: list[dict[str, Any]],
          job: slurm.JobInfo | None, status: str) -> dict[str, Any]:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runs = [{k: r[k] for k in ("restart", "wall_s", "end")} for r in earlier]
    runs.append({"restart": job.restart_count if job else 0, "wall_s": round(wall_s, 3), "end": status})
    total_s = sum(r["wall_s"] for r in runs)
    cost: dict[str, Any] = {
        "wall_s": round(total_s, 3), "peak_mem_mb": round(peak_kb / 1024, 1),
        "accelerator_hours": round(total_s * gpus / 3600, 6),
        "stages": {k: round(float(v), 3) for k, v in stages.items()}, "runs": runs}
    usage = slurm.job_usage(job.job_id) if job is not None else None
    if usage is not None:
        cost["sacct"] = usage
    return cost
