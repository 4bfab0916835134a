"""The harness as a library: the commands `python -m harness.run`, `harness.report` and
`harness.cell.evaluate` parse their options, call these functions, print what they return and turn the
exceptions below into their exit codes.

    from harness import api
    result = api.run("ablations/soft_vs_hard.yaml", set={"eval.samples": 500})   # RunResult
    result.frame                                   # the grid's result rows (load_frame's columns)
    frame = api.load_frame("results", grids=["soft_vs_hard"])
    built = api.report("results", reference={"method": "dimo", "relaxation": "hard"})  # report.Report

A grid that is wrong raises `GridError` (its `problems`, one line each), a resource profile
`ProfileError`, an `only` selector `SelectorError`, an option `OptionError`, an unwritable results
root `ResultsRootError`, missing assets `AssetError`, a failed submission `LaunchError`; in every
case nothing was launched (a `LaunchError` says in `submitted` which jobs had started). A cell that
fails is not an exception: it is a status of the result. Messages name each option by its
command-line flag (`--executor`, `--only`, ...), the keyword of the same name here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pandas as pd
import yaml

from harness import launch, store
from harness.builtin import plugins
from harness.cell.evaluate import Evaluation, EvaluationError, record_evaluation
from harness.contracts import registry, tracking
from harness.contracts.entries import EvalRequest
from harness.contracts.run_spec import RunSpec
from harness.grid import dependencies
from harness.grid import Grid, GridError, load_grid
from harness.grid.profiles import ProfileError, SlurmProfile, list_profiles
from harness.grid.selectors import SelectorError, check_selector, parse_selector, select
from harness.launch import executors
from harness.launch import CellState
from harness.launch.executors import LaunchError
from harness.methods.environment import cache_dir
from harness.report.build import Report, UnknownMetricsError, build_report
from harness.store import results

__all__ = ["run", "load", "plan", "record_grid", "submit", "wait_for", "result_of", "status", "cancel",
           "load_frame", "report", "evaluate", "missing_assets", "only_cells",
           "RunResult", "Target", "Plan", "LaunchOptions", "Report", "Evaluation",
           "GridError", "ProfileError", "SelectorError", "OptionError", "ResultsRootError", "AssetError",
           "LaunchError", "UnknownMetricsError", "EvaluationError"]

# Reward-model keys of a cell's parameters whose models are assets.
REWARD_KEYS = ("reward.models", "reinforce.models", "sample.tteo_reward", "sample.select_reward")


# An option of the run is wrong (the executor, a missing resource profile, the processes per
# cell, the global batch over them, the trackers, a `--set` item); nothing was launched.
class OptionError(ValueError):
    pass


# The results root (or its cache) cannot be written; nothing was submitted.
class ResultsRootError(OSError):
    pass


# Assets the cells to run need are missing or corrupt (`problems`, one line each saying how to
# obtain the asset); nothing was submitted.
class AssetError(RuntimeError):
    def __init__(self, problems: Sequence[str], cells: int):
        self.problems = list(problems)
        self.summary = (f"{len(self.problems)} asset(s) missing or corrupt for the {cells} cell(s) to run; "
                        f"nothing was submitted (python -m harness.prepare.assets check)")
        super().__init__("\n".join([*self.problems, self.summary]))

#----------------------------------------------------------------------------
# The steps of a run, in the order `run` (and the command) takes them.


# How the cells are launched: the submitit executor and what it is given (docs/usage.md, the
# options of `python -m harness.run` of the same names).
@dataclass(frozen=True)
class LaunchOptions:
    executor: str = "local"
    slurm_profile: str | None = None
    max_parallel: int | None = None
    procs_per_cell: int | None = None
    log_with: str | None = None              # accelerate trackers, comma-separated, or "all"
    collective_timeout: int | None = None
    allow_code_change: bool = False


# A loaded grid (narrowed to the `only` cells) and the resource profile of its cells.
@dataclass(frozen=True)
class Target:
    grid: Grid
    profiles: dict[str | None, SlurmProfile | None]


# What a launch would do: every cell's state, the cells to run in their order (each after the cells
# it needs), the blocked cells, the assets missing, and what planning settled on the way (cells of
# earlier launches recorded as failed, ok records reused from other grids).
@dataclass(frozen=True)
class Plan:
    target: Target
    results_root: Path
    options: LaunchOptions
    trackers: list[str]
    cells: list[CellState]
    todo: list[RunSpec]
    schedule: dependencies.Schedule
    asset_problems: list[str]
    rerun_failed: bool = False
    settled: list[str] = field(default_factory=list)
    reused: set[str] = field(default_factory=set)

    @property
    def grid(self) -> Grid:
        return self.target.grid


# What a run did: every cell's record status after it (None: no record, e.g. still running), the
# cells this launch submitted and their jobs, the blocked cells, the launcher's problems and the
# command's exit code (0 all ok, 1 some cell failed or is blocked). `frame`: the result rows of the
# grid's cells (`load_frame`'s columns), read when first asked for.
@dataclass
class RunResult:
    plan: Plan
    statuses: dict[str, str | None]
    launched: list[str]
    jobs: list[str]
    problems: list[str]
    exit_code: int

    @property
    def run_ids(self) -> list[str]:
        return [s.run_id for s in self.plan.grid.specs]

    @property
    def blocked(self) -> dict[str, str]:
        return dict(self.plan.schedule.blocked)

    @cached_property
    def frame(self) -> pd.DataFrame:
        if not (self.plan.results_root / self.plan.grid.name).is_dir():
            return results.frame([])
        rows = load_frame(self.plan.results_root, [self.plan.grid.name])
        return rows[rows["run_id"].isin(self.run_ids)].reset_index(drop=True)


# Load and validate a grid file, check the executor and the resource profiles, and narrow the grid
# to the cells the `only` selectors ("KEY=VALUE[,...]", as --only) choose. `set` holds
# `<stage>.<field>` values over the grid's params. Raises GridError, ProfileError, SelectorError,
# OptionError (an unknown executor).
def load(grid: str | Path, scale: str | None = None, set: Mapping[str, Any] | None = None,
         only: Sequence[str] = (), executor: str = "local", slurm_profile: str | None = None,
         allow_large: bool = False) -> Target:
    plugins.load_builtins()
    loaded = load_grid(grid, scale=scale, allow_large=allow_large, plugin_errors=plugins.load_grid_plugins(grid),
                       overrides=set)
    try:
        executors.registered.get(executor)
    except registry.UnknownNameError as e:
        raise OptionError(f"--executor: {e}") from None
    profiles = launch.resource_profiles(loaded, slurm_profile)
    return Target(only_cells(loaded, only), profiles)


# Plan a launch of the target under `results_root`: check the options against the grid, then
# (unless `dry_run`, which writes nothing) check the results root can be written, settle earlier
# launches' blocked cells and reuse other grids' ok records of the same runs (`reuse`). Failed cells
# are run again only with `rerun_failed`. Raises OptionError, ResultsRootError.
def plan(target: Target, results_root: str | Path, options: LaunchOptions = LaunchOptions(),
         rerun_failed: bool = False, reuse: bool = True, dry_run: bool = False) -> Plan:
    grid, root = target.grid, Path(results_root)
    trackers = _check_options(target, options)
    if not dry_run and (problem := store.unwritable([root / grid.name, cache_dir(root)])):
        raise ResultsRootError(f"{problem}; nothing was submitted")
    settled = launch.settle_blocked(grid, root) if not dry_run else []
    cells = launch.plan(grid, root)
    todo = launch.to_submit(cells, rerun_failed)
    reused: set[str] = set()
    if not dry_run and reuse:
        reused = launch.reuse_other_grids(grid, todo, root)
        if reused:
            cells = launch.plan(grid, root)
            todo = [s for s in todo if s.run_id not in reused]
    scheduled = launch.schedule(grid, cells, todo, root, world_size(options, target.profiles))
    todo = list(scheduled.order)
    return Plan(target, root, options, trackers, cells, todo, scheduled, missing_assets(grid, todo), rerun_failed,
                settled, reused)


# Refuse a plan whose cells miss assets (AssetError), else record the grid's info (name, scale,
# cells, comparisons) under the results root for the report.
def record_grid(plan_: Plan) -> None:
    if plan_.asset_problems:
        raise AssetError(plan_.asset_problems, len(plan_.todo))
    grid = plan_.grid
    store.write_grid_info(plan_.results_root, grid.name,
                          {"name": grid.name, "description": grid.description, "scale": grid.scale,
                           "path": str(grid.path), "compare": grid.compare, "cells": [s.run_id for s in grid.specs]})


# Submit the plan's cells to run (harness.launch.submit); raises LaunchError.
def submit(plan_: Plan) -> launch.Launch:
    o = plan_.options
    return launch.submit(plan_.grid, plan_.schedule, plan_.results_root, o.executor, o.max_parallel,
                         o.slurm_profile, o.allow_code_change, o.procs_per_cell or 1, plan_.trackers,
                         o.collective_timeout)


# Wait until every submitted cell has a record of this launch; `progress(statuses)` is called as
# records appear. Returns each submitted cell's status (None: no record could be written).
def wait_for(launched: launch.Launch, progress: Callable[[dict[str, str | None]], None] | None = None
         ) -> dict[str, str | None]:
    return launch.wait(launched, progress or (lambda statuses: None))


# The result of a plan: `launched` None when nothing was submitted, `waited` the statuses
# `wait_for` returned (None when not waited for), `dry_run` when nothing was to be launched.
def result_of(plan_: Plan, launched: launch.Launch | None = None, waited: dict[str, str | None] | None = None,
              dry_run: bool = False) -> RunResult:
    ids = [s.run_id for s in plan_.grid.specs]
    statuses = store.statuses(plan_.results_root, plan_.grid.name, ids)
    blocked = 1 if plan_.schedule.blocked else 0
    if dry_run:
        code = 0
    elif launched is None:
        code = 1 if blocked or any(c.state in ("failed", "corrupt") for c in plan_.cells) else 0
    elif waited is None:
        code = blocked
    else:
        statuses.update(waited)
        code = 1 if blocked or any(s in ("failed", "corrupt", None) for s in waited.values()) else 0
    subs = launched.submissions if launched is not None else []
    return RunResult(plan_, statuses, launched.run_ids if launched is not None else [],
                     [str(s.job.job_id) for s in subs], list(launched.problems) if launched is not None else [],
                     code)


# Run a grid (a grid file, or the same as a dict) under `results_root`: validate it, plan, submit
# the pending cells and (with `wait`) wait for them, calling `progress(statuses)` as records appear.
# `dry_run` plans only. Keywords are `python -m harness.run`'s options (docs/usage.md). Returns the
# RunResult; raises GridError, ProfileError, SelectorError, OptionError, ResultsRootError,
# AssetError, LaunchError before anything runs.
def run(grid: str | Path | Mapping[str, Any], results_root: str | Path = "results", *, scale: str | None = None,
        set: Mapping[str, Any] | None = None, only: Sequence[str] = (), executor: str = "local",
        slurm_profile: str | None = None, max_parallel: int | None = None, procs_per_cell: int | None = None,
        log_with: str | None = None, collective_timeout: int | None = None, allow_code_change: bool = False,
        rerun_failed: bool = False, reuse: bool = True, allow_large: bool = False, dry_run: bool = False,
        wait: bool = True, progress: Callable[[dict[str, str | None]], None] | None = None) -> RunResult:
    options = LaunchOptions(executor, slurm_profile, max_parallel, procs_per_cell, log_with, collective_timeout,
                            allow_code_change)
    with grid_file(grid) as path:
        target = load(path, scale, set, only, executor, slurm_profile, allow_large)
        planned = plan(target, results_root, options, rerun_failed, reuse, dry_run)
        if dry_run:
            return result_of(planned, dry_run=True)
        record_grid(planned)
        if not planned.todo:
            return result_of(planned)
        launched = submit(planned)
        if not wait and not launched.executor.in_process:
            return result_of(planned, launched)
        return result_of(planned, launched, wait_for(launched, progress))


# The state of every cell of a grid (file or dict): ok / diverged / failed / corrupt / running /
# pending, its job, error line and logs (harness.launch.CellStatus).
def status(grid: str | Path | Mapping[str, Any], results_root: str | Path = "results", scale: str | None = None,
           set: Mapping[str, Any] | None = None, only: Sequence[str] = ()) -> list[launch.CellStatus]:
    with grid_file(grid) as path:
        return launch.status(load(path, scale, set, only).grid, results_root)


# Cancel the running jobs of a grid's cells; returns the cancelled job ids and the problems (jobs
# that could not be cancelled).
def cancel(grid: str | Path | Mapping[str, Any], results_root: str | Path = "results", scale: str | None = None,
           set: Mapping[str, Any] | None = None, only: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    with grid_file(grid) as path:
        return launch.cancel(load(path, scale, set, only).grid, results_root)


# A grid file for a path (itself) or a dict (its YAML in a temporary `<name>.yaml`, removed after:
# problems name that file and its lines).
@contextlib.contextmanager
def grid_file(grid: str | Path | Mapping[str, Any]) -> Iterator[Path]:
    if not isinstance(grid, Mapping):
        yield Path(grid)
        return
    with tempfile.TemporaryDirectory(prefix="grid-") as folder:
        path = Path(folder) / f"{grid.get('name', 'grid')}.yaml"
        path.write_text(yaml.safe_dump(dict(grid), sort_keys=False), encoding="utf-8")
        yield path


# The grid narrowed to the cells every `only` selector ("KEY=VALUE[,...]", as --only) selects (all of
# them when none is given); raises SelectorError naming an unknown key, a value no cell has, or an
# empty selection.
def only_cells(grid: Grid, items: Sequence[str]) -> Grid:
    if not items:
        return grid
    selector: dict[str, list[Any]] = {}
    for item in items:
        for key, values in parse_selector(item, "--only").items():
            selector.setdefault(key, []).extend(values)
    where = f"--only {','.join(items)} (grid {grid.name!r}, {grid.scale} scale)"
    check_selector(selector, grid.specs, where)
    chosen = select(grid.specs, selector)
    if not chosen:
        raise SelectorError(f"{where}: each value is some cell's, but no cell has them all")
    note = f"--only {','.join(items)}: {len(chosen)} of the grid's {len(grid.specs)} cells"
    return dataclasses.replace(grid, specs=tuple(chosen), notes=(*grid.notes, note))


# The processes each cell of a launch runs over: on SLURM the profile's nodes x tasks_per_node.
def world_size(options: LaunchOptions, profiles: Mapping[str | None, SlurmProfile | None]) -> int:
    if options.executor == "slurm":
        return max((p.world_size for p in profiles.values() if p is not None), default=1)
    return options.procs_per_cell or 1


# Asset problems (one line each, saying how to obtain the asset) of the cells about to run:
# their teachers' weights, their metrics' networks and reference statistics, their reward models.
def missing_assets(grid: Grid, specs: Sequence[RunSpec]) -> list[str]:
    from harness.store import assets
    needed: list[str] = []
    for spec in specs:
        entry = registry.teachers.get(spec.teacher)
        needed += entry.assets(spec.stage("teacher", entry.config_cls))
        params = dict(spec.params)
        for metric in params.get("eval.metrics", ()):
            needed += registry.metrics.get(metric).assets
        for key in REWARD_KEYS:
            for reward in params.get(key, ()):
                needed += registry.rewards.get(reward).assets
    return [f"{grid.path}: {line}" for line in assets.check_before_launch(needed)]


# The launch options checked against the grid (a SLURM launch needs a profile; the processes per
# cell and the global batch over them; the trackers); returns the trackers. Raises OptionError.
def _check_options(target: Target, options: LaunchOptions) -> list[str]:
    grid, profiles = target.grid, target.profiles
    if options.executor == "slurm" and None in profiles:
        raise OptionError(f"--executor slurm needs a resource profile: pass --slurm-profile NAME or set "
                          f"scales.{grid.scale}.resources in {grid.path}; available: "
                          f"{', '.join(list_profiles()) or '(none)'}")
    if problem := _procs_problem(options, profiles) or _batch_problem(grid, world_size(options, profiles)):
        raise OptionError(problem)
    try:
        return tracking.parse_log_with(options.log_with) if options.log_with is not None else []
    except ValueError as e:
        raise OptionError(str(e)) from None


# Why --procs-per-cell cannot apply to a SLURM launch, or None: there the profile gives the
# processes of a cell.
def _procs_problem(options: LaunchOptions, profiles: Mapping[str | None, SlurmProfile | None]) -> str | None:
    procs = options.procs_per_cell
    if procs is not None and options.executor == "slurm":
        for profile in profiles.values():
            if profile is not None and profile.world_size != procs:
                return (f"--procs-per-cell {procs}: on SLURM a cell runs over its profile's nodes x tasks_per_node "
                        f"= {profile.world_size} processes ({profile.path}); set tasks_per_node there")
    return None


# Why a cell's global batch cannot be split over `world_size` processes, or None.
def _batch_problem(grid: Grid, world_size: int) -> str | None:
    for spec in grid.specs:
        batch = dict(spec.params).get("distill.batch_size")
        if batch is not None and batch % world_size:
            return (f"{grid.path}: cell {spec.run_id} ({spec.description()}): distill.batch_size = {batch} (the "
                    f"global batch) does not split over {world_size} processes per cell; use a multiple of "
                    f"{world_size}")
    return None

#----------------------------------------------------------------------------
# Reading and evaluating.


# The results table of a results root (`harness.store.results.load_frame`; docs/usage.md lists its
# columns), with the plugins the runs used loaded for their labels.
def load_frame(results_root: str | Path = "results", grids: Sequence[str] | None = None, curves: bool = False,
               baselines: bool = False) -> pd.DataFrame:
    plugins.load_builtins()
    return results.load_frame(results_root, grids, curves=curves, baselines=baselines)


# Build the report (tables, comparisons, claims, plots, samples) under `out` (default
# <results>/report); returns what it built (`report.Report`: `index`, `frame`, `files`, `problems`,
# `layouts`). Raises UnknownMetricsError for a metric the report has not, KeyError for a selector
# that matches no rows.
def report(results_root: str | Path = "results", grids: Sequence[str] | None = None, out: str | Path | None = None,
           reference: Mapping[str, Any] | None = None, baseline: Mapping[str, Any] | None = None,
           formats: Sequence[str] = ("md", "tex", "csv"), plots: bool = True, metrics: Sequence[str] | None = None,
           layouts: Sequence[str] = (), per_metric_plots: bool = False) -> Report:
    plugins.load_builtins()
    return build_report(results_root, grids, out or Path(results_root) / "report", formats, plots,
                        reference=reference, baseline=baseline, metrics=metrics, layout_names=layouts,
                        per_metric_plots=per_metric_plots)


# Score a sample set made elsewhere under a named protocol and record it under
# `<results_root>/evaluate/<id>/` (`python -m harness.cell.evaluate`; `options` are EvalRequest's:
# reference, captions, weights, levels, geneval_dir, geneval_python, reference_name, device,
# batch_size, num_workers). Returns the Evaluation (its status is failed or diverged when the
# computation was); raises EvaluationError naming every problem of the request before computing.
def evaluate(samples: str | Path, protocol: str, results_root: str | Path = "results", metrics: Sequence[str] = (),
             label: str = "external", teacher: str = "external", **options: Any) -> Evaluation:
    plugins.load_builtins()
    paths = {k: Path(v) for k, v in options.items() if k in ("reference", "captions", "weights", "geneval_dir")
             and v is not None}
    request = EvalRequest(Path(samples), protocol, Path(results_root), tuple(metrics), **{**options, **paths})
    return record_evaluation(request, label, teacher)
