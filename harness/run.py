"""Run an experiment grid: expand it, show the plan, submit the pending cells, wait, summarise.

    python -m harness.run --grid ablations/soft_vs_hard.yaml                # mini scale, local
    python -m harness.run --grid ablations/soft_vs_hard.yaml --dry-run      # the plan only
    python -m harness.run --grid ablations/soft_vs_hard.yaml --scale paper --dry-run   # + accelerator-hours
    python -m harness.run --grid G.yaml --executor slurm --slurm-profile generic_gpu --no-wait
    python -m harness.run --grid G.yaml --status                            # per cell: state, job, log
    python -m harness.run --grid G.yaml --cancel                            # cancel the grid's jobs
    python -m harness.run --grid G.yaml --set distill.steps=100 --set gan.weight=10   # override params
    python -m harness.run --grid G.yaml --scale paper --only teacher=maskbit --dry-run  # some cells
    python -m harness.run --list relaxations                                # what is registered
    python -m harness.run --grid G.yaml --log-with tensorboard              # watch: tensorboard --logdir results/G

Running the same command again skips cells with an `ok` record (and says when nothing is left);
failed cells are retried only with --rerun-failed (resuming from their last checkpoint), and the
outcome shown is the new jobs', never a record written before them. Exit codes: 0 all cells ok,
1 some cell failed, 2 the grid, a resource profile, a missing asset, an unwritable results root or
the command line is wrong (nothing was launched).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence, TextIO

import yaml

from harness import api, launch, store
from harness.api import missing_assets  # noqa: F401  (the assets check, where callers of the command look)
from harness.builtin import plugins
from harness.contracts import registry
from harness.contracts.distributed import DEFAULT_COLLECTIVE_TIMEOUT_S
from harness.grid import dependencies
from harness.grid import Grid, GridError
from harness.grid.profiles import ProfileError, SlurmProfile
from harness.grid.selectors import SelectorError
from harness.grid.spec import SCALES, STAGE_CONFIGS
from harness.launch import cost_plan, executors
from harness.launch import STATES, CellState, ProgressPrinter
from harness.launch.executors import LaunchError
from harness.store import baselines
from softdimo.params import schema

# Every registry, by the name `--list` takes.
REGISTRIES: dict[str, registry.Registry] = {
    "teachers": registry.teachers, "methods": registry.methods, "relaxations": registry.relaxations,
    "refinements": registry.refinements, "metrics": registry.metrics, "executors": executors.registered,
    "baselines": baselines.registered, "rewards": registry.rewards, "protocols": registry.protocols,
}
LIST_CHOICES = tuple(REGISTRIES) + ("params",)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.run", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    g = p.add_argument_group("what to run")
    g.add_argument("--grid", metavar="FILE", help="grid file (YAML)")
    g.add_argument("--scale", choices=SCALES, help="override the grid's scale")
    g.add_argument("--allow-large", action="store_true",
                   help="allow grids of more than 100,000 cells")
    g.add_argument("--only", action="append", default=[], metavar="KEY=VALUE[,...]",
                   help="run (or show, with --dry-run / --status / --cancel) only the cells matching every "
                        "KEY (an axis or a <stage>.<field> parameter); a KEY given twice takes either "
                        "value; repeatable")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="a <stage>.<field> value over the grid's params (repeatable; part of every cell's spec, "
                        "so run ids change with it); VALUE is read as YAML: 10, 1e-4, true, [a, b]")
    g = p.add_argument_group("how to run it")
    g.add_argument("--executor", default="local", metavar="NAME",
                   help="submitit executor: debug, local or slurm (default: local)")
    g.add_argument("--slurm-profile", metavar="NAME",
                   help="resource profile (slurm/profiles/NAME.yaml); overrides the grid's "
                        "scales.<scale>.resources; required by --executor slurm if the grid names none")
    g.add_argument("--max-parallel", type=_positive, default=None, metavar="N",
                   help=f"jobs running at once (default: local: this machine's cores, {_cores()}; "
                        f"slurm: the profile's array_parallelism)")
    g.add_argument("--procs-per-cell", type=_positive, default=None, metavar="N",
                   help="processes running each cell together, data-parallel (docs/distributed.md): "
                        "local: N CPU processes (gloo) without a GPU, else one per GPU (default 1); "
                        "slurm: the profile's nodes x tasks_per_node")
    g.add_argument("--log-with", metavar="TRACKERS",
                   help="log every run live through accelerate's trackers, under <run dir>/tracking/: "
                        "tensorboard (open with: tensorboard --logdir RESULTS/GRID), any other installed "
                        "tracker accelerate knows, a comma-separated list, or all; not part of any run id")
    g.add_argument("--collective-timeout", type=_positive, default=None, metavar="S", dest="collective_timeout",
                   help=f"seconds a collective of a cell's processes waits for the others before the cell fails "
                        f"(default: the profile's collective_timeout_s, else {DEFAULT_COLLECTIVE_TIMEOUT_S}); "
                        f"recorded in provenance.collective_timeout_s")
    g.add_argument("--allow-code-change", action="store_true",
                   help="let SLURM jobs run even if the code changed since submission")
    g.add_argument("--results", default="results", metavar="DIR",
                   help="results root (default: ./results)")
    g.add_argument("--dry-run", action="store_true", help="show the cells and their state, run nothing; at "
                   "paper scale also each cell's estimated accelerator-hours (docs/usage.md, cost plan)")
    g.add_argument("--gpu-kind", metavar="KIND", help="GPU kind of the --dry-run cost plan (h100, h200, a100, ...; "
                   "default: the kind the profile's constraint names, else h100)")
    g.add_argument("--step-costs", action="append", default=[], metavar="FILE",
                   help="extra step-cost rows for the --dry-run cost plan (e.g. benchmarks/gpu_smoke.py's CSV; "
                        "repeatable), over benchmarks/step_costs.csv")
    g.add_argument("--no-wait", action="store_true", help="return once the jobs are submitted")
    g.add_argument("--rerun-failed", action="store_true", help="retry cells whose record is failed")
    g.add_argument("--no-reuse", action="store_true",
                   help="run cells again even when another grid has an ok record of the same run")
    g = p.add_argument_group("jobs already submitted")
    g.add_argument("--status", action="store_true",
                   help="per cell: pending / running (job id) / ok / failed (error, log path)")
    g.add_argument("--cancel", action="store_true", help="cancel the grid's running jobs")
    g = p.add_argument_group("discovery")
    g.add_argument("--list", choices=LIST_CHOICES, metavar="AXIS",
                   help=f"print the registered names of one axis: {', '.join(LIST_CHOICES)}")
    return p


# The --set values as {key: value} (values read as YAML), or OptionError naming the bad one.
def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise api.OptionError(f"--set {item!r}: expected KEY=VALUE, e.g. --set distill.steps=100")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise api.OptionError(f"--set {item!r}: the value is not YAML ({e})") from None
    return out


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Entry point; returns the exit code.
def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        plugins.load_builtins()
    except ImportError as e:
        print(f"error: {e}", file=err)
        return 2
    if args.list:
        for message in (plugins.load_grid_plugins(args.grid) if args.grid else {}).values():
            print(f"warning: {message}", file=err)
        print_list(args.list, out)
        return 0
    if not args.grid:
        print("error: --grid FILE is required (or --list AXIS)", file=err)
        return 2
    try:
        return _grid_command(args, out, err)
    except REFUSALS as e:
        return _refused(e, args.grid, err)


# The exceptions of the api that stop a command before anything is launched (exit code 2).
REFUSALS = (GridError, ProfileError, SelectorError, api.OptionError, api.ResultsRootError, api.AssetError,
            LaunchError, cost_plan.StepCostError)


# Print why the command stopped; returns its exit code, 2.
def _refused(e: Exception, grid_file: str, err: TextIO) -> int:
    if isinstance(e, GridError):
        for line in e.problems:
            print(line, file=err)
        print(f"{len(e.problems)} problem(s) in {grid_file}; nothing was run", file=err)
    elif isinstance(e, api.AssetError):
        for line in e.problems:
            print(f"error: {line}", file=err)
        print(e.summary, file=err)
    else:
        print(f"error: {e}", file=err)
        if isinstance(e, LaunchError) and e.submitted:
            print(f"{len({r for s in e.submitted for r in s.run_ids})} cell(s) were submitted before the "
                  f"error; they keep running (--status, --cancel)", file=err)
    return 2


# A command on a grid: --status, --cancel, --dry-run, or the launch.
def _grid_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    target = api.load(args.grid, args.scale, parse_overrides(args.overrides), args.only, args.executor,
                      args.slurm_profile, args.allow_large)
    results = Path(args.results)
    if args.status:
        return print_status(target.grid, launch.status(target.grid, results), out)
    if args.cancel:
        return cancel_jobs(target.grid, results, out, err)
    options = api.LaunchOptions(args.executor, args.slurm_profile, args.max_parallel, args.procs_per_cell,
                                args.log_with, args.collective_timeout, args.allow_code_change)
    planned = api.plan(target, results, options, args.rerun_failed, not args.no_reuse, args.dry_run)
    if planned.settled:
        print(f"recorded {len(planned.settled)} cell(s) of earlier launches as failed: a cell they start after "
              f"failed, so their jobs could never start (cancelled)", file=out)
    if planned.reused:
        print(f"reused {len(planned.reused)} ok record(s) of the same runs from other grids "
              f"(--no-reuse runs them again)", file=out)
    if args.dry_run:
        return dry_run(planned, args, out, err)
    return launch_cells(planned, args.no_wait, out, err)


# `--dry-run`: the plan, at paper scale its cost plan, and what would stop the launch; returns 0.
def dry_run(planned: api.Plan, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    print_plan(planned.grid, planned.cells, out, planned.schedule)
    print_costs(planned.grid, planned.cells, next(iter(planned.target.profiles.values())), args, out)
    for line in planned.asset_problems:
        print(f"note: the launch would stop: {line}", file=err)
    return api.result_of(planned, dry_run=True).exit_code


# Submit the plan's cells (after naming the blocked ones), then with `no_wait` return once they are
# submitted, else wait and summarise; returns the exit code.
def launch_cells(planned: api.Plan, no_wait: bool, out: TextIO, err: TextIO) -> int:
    grid, results = planned.grid, planned.results_root
    descriptions = dict(zip((s.run_id for s in grid.specs), grid.descriptions()))
    for rid, why in planned.schedule.blocked.items():
        print(f"error: cell {rid} ({descriptions[rid]}) is not submitted: {why}", file=err)
    api.record_grid(planned)
    counts = Counter(c.state for c in planned.cells)
    if not planned.todo:
        print(_nothing_to_do(grid, counts, planned.rerun_failed), file=out)
        _print_failures(grid, results, [c for c in planned.cells if c.state in ("failed", "corrupt")], out)
        return api.result_of(planned).exit_code
    print(f"grid {grid.name!r} ({grid.scale}): {len(planned.cells)} cells, {len(planned.todo)} to run, "
          f"{counts['done'] + counts['diverged']} done, {counts['running']} already running; "
          f"executor {planned.options.executor}", file=out)
    launched = api.submit(planned)
    if no_wait and not launched.executor.in_process:
        jobs = ", ".join(str(s.job.job_id) for s in launched.submissions)
        after = sum(1 for s in planned.todo if planned.schedule.of(s.run_id))
        print(f"submitted {len(planned.todo)} cells in {len(launched.submissions)} job(s): {jobs}"
              f"{f' ({after} start after the cells they need)' if after else ''}\n"
              f"records appear under {results / grid.name}; logs under {launched.folder}; see "
              f"them with --status", file=out)
        return api.result_of(planned, launched).exit_code
    if no_wait:
        print("note: the debug executor runs in this process; --no-wait does not apply", file=out)
    return wait_and_summarise(planned, launched, out, err)


# Wait for the launched cells with a progress line on `err`, then print the summary; returns the
# exit code (130 when interrupted: the jobs keep running).
def wait_and_summarise(planned: api.Plan, launched: launch.Launch, out: TextIO, err: TextIO) -> int:
    counts = Counter(c.state for c in planned.cells)
    done_before = len(planned.cells) - len(planned.todo) - counts["running"]
    printer = ProgressPrinter(len(planned.cells), done_before, err)
    try:
        statuses = api.wait_for(launched, printer)
    except KeyboardInterrupt:
        printer.close()
        print(f"interrupted: jobs already started keep running and write their records under "
              f"{planned.results_root / planned.grid.name}; see them with --status, stop them with --cancel",
              file=err)
        return 130
    printer.close()
    for problem in launched.problems:
        print(f"error: {problem}", file=err)
    summarise(planned.grid, planned.results_root, statuses, out)
    return api.result_of(planned, launched, statuses).exit_code


# Print the grid's cells: id, state, description, and under a cell to run what it would start
# after (the cells it needs, harness.grid.dependencies) or why it cannot run.
def print_plan(grid: Grid, cells: Sequence[CellState], out: TextIO,
               scheduled: dependencies.Schedule | None = None) -> None:
    width = max([len("description")] + [len(c.description) for c in cells])
    print(f"grid {grid.name!r} ({grid.scale}) from {grid.path}: {len(cells)} cells", file=out)
    for note in grid.notes:
        print(f"note: {note}", file=out)
    print(f"{'id':16}  {'state':8}  {'description':{width}}", file=out)
    print(f"{'-' * 16}  {'-' * 8}  {'-' * width}", file=out)
    described = {c.run_id: c.spec.description() for c in cells}
    for c in cells:
        print(f"{c.run_id:16}  {c.state:8}  {c.description}", file=out)
        for need in scheduled.of(c.run_id) if scheduled else ():
            print(f"    after {need.run_id} ({described.get(need.run_id, 'another grid')}), {need.describe()}",
                  file=out)
        if scheduled and c.run_id in scheduled.blocked:
            print(f"    not submitted: {scheduled.blocked[c.run_id]}", file=out)
    counts = Counter(c.state for c in cells)
    print(", ".join(f"{counts[s]} {s}" for s in STATES if counts[s]), file=out)


# The dry run's cost plan at paper scale (harness.launch.cost_plan); raises cost_plan.StepCostError when a
# step-cost file or the GPU kind is wrong.
def print_costs(grid: Grid, cells: Sequence[CellState], profile: SlurmProfile | None, args: argparse.Namespace,
                out: TextIO) -> None:
    if grid.scale != "paper":
        return
    tables = [cost_plan.TABLE, *map(Path, args.step_costs)]
    world_size = profile.world_size if profile is not None else args.procs_per_cell or 1
    table = cost_plan.load_table(tables)
    costs, resources = cost_plan.plan_grid([(c.spec, c.state) for c in cells], profile, world_size, table,
                                           args.gpu_kind)
    cost_plan.print_cost_plan(costs, resources, tables, out)


def _nothing_to_do(grid: Grid, counts: Counter, rerun_failed: bool) -> str:
    total, running = sum(counts.values()), counts["running"]
    which = f"all {total} cells" if not running else f"{total - running} of {total} cells"
    line = (f"nothing to do: {which} of grid {grid.name!r} have records ({counts['done']} ok, "
            f"{counts['diverged']} diverged, {counts['failed'] + counts['corrupt']} failed)")
    if running:
        line += f"; {running} submitted earlier still running"
    if (counts["failed"] or counts["corrupt"]) and not rerun_failed:
        line += "; failed cells are retried only with --rerun-failed"
    return line


# Print the end-of-run summary of the cells this launch ran (`statuses`: of the records they wrote,
# None where none was written).
def summarise(grid: Grid, results: Path, statuses: dict[str, str | None], out: TextIO) -> None:
    now = Counter(statuses.values())
    skipped = len(grid.specs) - len(statuses)
    print(f"summary: {now['ok']} ok, {now['failed'] + now['corrupt'] + now[None]} failed, "
          f"{now['diverged']} diverged, {skipped} skipped (done before)", file=out)
    failed = [CellState(s, d, "failed") for s, d in zip(grid.specs, grid.descriptions())
              if s.run_id in statuses and statuses[s.run_id] in ("failed", "corrupt", None)]
    _print_failures(grid, results, failed, out, {rid for rid, st in statuses.items() if st is None})


# Print each failed cell: its error line (over several processes the rank that failed first and its
# traceback's last lines), its log and job log. `unrecorded` cells have no record of this launch.
def _print_failures(grid: Grid, results: Path, cells: Sequence[CellState], out: TextIO,
                    unrecorded: set[str] = frozenset()) -> None:
    for c in cells:
        path = store.record_path(results, grid.name, c.run_id)
        job_log, tail, rank_log = "", "", ""
        if c.run_id in unrecorded:
            marker = launch.read_marker(results, grid.name, c.run_id) or {}
            line = "no record: its job ended without writing one, and none could be written for it"
            log = str(marker.get("log", "")) or str(path.parent)
        else:
            try:
                record = store.read_record(path)
                error = record.get("error") or {}
                line = f"{error.get('type', '?')}: {error.get('message', '')}"
                log, tail, rank_log = error.get("log", ""), error.get("traceback_tail", ""), error.get("rank_log", "")
                job_log = (record.get("provenance") or {}).get("submitit_log") or ""
            except (store.CorruptRecordError, OSError) as e:
                line, log = str(e), str(path)
        print(f"  failed {c.run_id} {c.description}\n    {line}\n    log: {log}", file=out)
        if rank_log:
            print(f"    log of the process that failed first: {rank_log}", file=out)
        if job_log and job_log not in (log, rank_log):
            print(f"    job log: {job_log}", file=out)
        if tail:
            print("\n".join(f"      | {t}" for t in tail.splitlines()), file=out)


# Print the state of every cell (`--status`); returns 1 if a cell failed, else 0.
def print_status(grid: Grid, rows: Sequence[launch.CellStatus], out: TextIO) -> int:
    width = max([len("description")] + [len(r.description) for r in rows])
    job_width = max([len("job")] + [len(r.job) for r in rows])
    print(f"grid {grid.name!r} ({grid.scale}) from {grid.path}: {len(rows)} cells", file=out)
    print(f"{'id':16}  {'state':8}  {'job':{job_width}}  description", file=out)
    print(f"{'-' * 16}  {'-' * 8}  {'-' * job_width}  {'-' * width}", file=out)
    for r in rows:
        print(f"{r.run_id:16}  {r.state:8}  {r.job:{job_width}}  {r.description}", file=out)
        if r.after:
            print(f"    after {r.after}", file=out)
        if r.detail:
            print(f"    {r.detail.splitlines()[0]}", file=out)
        if r.log:
            print(f"    log: {r.log}", file=out)
        if r.job_log:
            print(f"    job log: {r.job_log}", file=out)
    counts = Counter(r.state for r in rows)
    order = ("ok", "diverged", "failed", "corrupt", "running", "pending")
    print(", ".join(f"{counts[s]} {s}" for s in order if counts[s]), file=out)
    return 1 if counts["failed"] + counts["corrupt"] else 0


# Cancel the grid's jobs (`--cancel`); returns 0, or 1 if some could not be cancelled.
def cancel_jobs(grid: Grid, results: Path, out: TextIO, err: TextIO) -> int:
    cancelled, problems = launch.cancel(grid, results)
    for line in problems:
        print(f"error: {line}", file=err)
    if cancelled:
        print(f"cancelled {len(cancelled)} job(s) of grid {grid.name!r}: {', '.join(cancelled)}; "
              f"their cells are pending again", file=out)
    elif not problems:
        print(f"nothing to cancel: no job of grid {grid.name!r} is running", file=out)
    return 1 if problems else 0

#----------------------------------------------------------------------------


# Print one registry (names and descriptions), or every stage parameter for `params`.
def print_list(axis: str, out: TextIO) -> None:
    if axis == "params":
        _print_params(out)
        return
    items = REGISTRIES[axis].items()
    if not items:
        print(f"(no {axis} registered)", file=out)
    width = max([len(n) for n, _ in items] + [4])
    for name, entry in items:
        print(f"{name:{width}}  {getattr(entry, 'description', '')}", file=out)


def _print_params(out: TextIO) -> None:
    stages: list[tuple[str, str, type]] = [(s, "", cls) for s, cls in STAGE_CONFIGS.items()]
    stages += [("teacher", f" (teacher {n!r})", e.config_cls) for n, e in registry.teachers.items()]
    stages += [(e.stage, f" (refinement {n!r})", e.config_cls)
               for n, e in registry.refinements.items() if e.stage and e.config_cls]
    for stage, note, cls in stages:
        print(f"{stage}.*{note}", file=out)
        for name, p in schema(cls).items():
            default = ",".join(map(str, p.default)) if isinstance(p.default, tuple) else p.default
            print(f"  {stage + '.' + name:28} {p.type.__name__:6} default {default!s:10} "
                  f"{p.allowed():28} {p.help}", file=out)


if __name__ == "__main__":
    sys.exit(main())
