"""The cost plan of a grid before launch (`harness.run --dry-run`): each cell's accelerator-hours
and wall time from a step-cost table, the grid's total, and the cells that cannot finish within
their resource profile's time limit x (requeues + 1).

The step-cost table (`benchmarks/step_costs.csv`, plus any `--step-costs FILE`) has one row per
(teacher, refinement, precision, GPU kind): seconds per distillation step at a per-GPU batch, and
seconds per 1,000 samples for one network forward, one decode and the teacher's default metrics.
A row is `measured` (benchmarks/gpu_smoke.py on that GPU) or an `estimate` with its source
(benchmarks/step_cost_estimates.py: FLOP counts at a stated share of the GPU's peak); for the same
key a measured row wins over an estimate, and a later file over an earlier one.

The model of a cell (its assumptions, also in docs/usage.md): a step's time is proportional to the
per-GPU batch (distill.batch_size / processes); a Di[M]O student (or its shared plain Di[M]O prefix
up to distill.refine_start) that an earlier cell of the grid trains, or that a finished cell
trained, costs nothing again; steps before refine_start cost a plain step, later ones a step with
the refinement; one-step sampling costs a forward and a decode per image (x best_of_n), the
teacher's K-step sampler K forwards (2K with CFG) and a decode, both split over the processes;
evaluation runs on one process. Not modelled: TTEO's gradient steps, start-up (teacher loading)
and what a requeued job repeats.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence, TextIO

from harness.contracts import registry
from harness.grid.profiles import SlurmProfile
from harness.grid.spec import NONE, RunSpec
from softdimo.precision import PRECISIONS

TABLE = Path(__file__).resolve().parents[2] / "benchmarks" / "step_costs.csv"
STATUSES = ("measured", "estimate")
DEFAULT_GPU = "h100"
SAMPLER_PRECISION = "fp32"         # the teacher's own sampler and the metrics always run in float32

#----------------------------------------------------------------------------
# The step-cost table.


# One row of the step-cost table.
@dataclass(frozen=True)
class StepCost:
    teacher: str
    refinement: str          # "none", or the refinement whose extra cost the step includes
    precision: str           # distill.precision the step ran at (fp32 for sampling-only use)
    gpu: str                 # GPU kind, lower case: h100, h200, a100, ...
    batch: int               # images per GPU per step that step_s was taken at
    step_s: float            # seconds per distillation step (theta, phi, psi and psi's update)
    forward_1k_s: float      # seconds per 1,000 images of one network forward (no grad)
    decode_1k_s: float       # seconds per 1,000 images of one decode to pixels
    eval_1k_s: float         # seconds per 1,000 images of the teacher's default metrics
    status: str              # measured | estimate
    source: str              # how the numbers were obtained

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.teacher, self.refinement, self.precision, self.gpu

    # "maskbit/gan/bf16/h100 (estimate)".
    def label(self) -> str:
        return f"{'/'.join(self.key)} ({self.status})"


COLUMNS = tuple(f.name for f in fields(StepCost))
_NUMBERS = {"batch": int, "step_s": float, "forward_1k_s": float, "decode_1k_s": float, "eval_1k_s": float}


# A problem in a step-cost file; the message names the file, the line, the column and what is allowed.
class StepCostError(ValueError):
    pass


# Read step-cost rows from CSV files (extra columns are ignored); later rows replace earlier ones of
# the same key, except that an estimate never replaces a measured row.
def load_table(paths: Iterable[Path]) -> dict[tuple[str, str, str, str], StepCost]:
    table: dict[tuple[str, str, str, str], StepCost] = {}
    for path in paths:
        for row in read_rows(Path(path)):
            old = table.get(row.key)
            if old is None or not (old.status == "measured" and row.status == "estimate"):
                table[row.key] = row
    return table


# The rows of one step-cost CSV file, each checked.
def read_rows(path: Path) -> list[StepCost]:
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise StepCostError(f"{path}: missing column(s) {', '.join(missing)}; a step-cost table has "
                                    f"{', '.join(COLUMNS)}")
            return [_row(path, reader.line_num, raw) for raw in reader]
    except OSError as e:
        raise StepCostError(f"{path}: cannot read the step-cost table ({e.strerror})") from None


def _row(path: Path, line: int, raw: dict[str, str]) -> StepCost:
    values: dict[str, object] = {}
    for name in COLUMNS:
        text = (raw.get(name) or "").strip()
        where = f"{path}:{line}: {name}"
        if name in _NUMBERS:
            try:
                value = _NUMBERS[name](text)
            except ValueError:
                raise StepCostError(f"{where}: expected a number, got {text!r}") from None
            if not math.isfinite(value) or value < 0 or (name == "batch" and value < 1):
                raise StepCostError(f"{where}: expected a finite number >= {1 if name == 'batch' else 0}, "
                                    f"got {text!r}")
            values[name] = value
        else:
            values[name] = text.lower() if name in ("gpu", "status", "precision") else text
    for name, allowed in (("status", STATUSES), ("precision", PRECISIONS)):
        if values[name] not in allowed:
            raise StepCostError(f"{path}:{line}: {name}: expected one of {', '.join(allowed)}, got {values[name]!r}")
    for name in ("teacher", "refinement", "gpu", "source"):
        if not values[name]:
            raise StepCostError(f"{path}:{line}: {name}: empty")
    return StepCost(**values)  # type: ignore[arg-type]


# Write rows as a step-cost CSV (the table's column order; `extra` columns after them).
def write_rows(path: Path, rows: Sequence[StepCost], extra: Sequence[dict[str, object]] = ()) -> None:
    names = list(COLUMNS) + [k for k in (extra[0] if extra else {}) if k not in COLUMNS]
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**{n: getattr(row, n) for n in COLUMNS}, **(extra[i] if extra else {})})


#----------------------------------------------------------------------------
# The plan.


# The estimated cost of one cell.
@dataclass(frozen=True)
class CellCost:
    run_id: str
    description: str                 # the cell's axes
    state: str
    steps: int                       # distillation steps this cell trains itself
    wall_s: float | None             # None: no step-cost row
    accelerator_hours: float | None
    rows: tuple[StepCost, ...]       # the rows used
    missing: str = ""                # why there is no estimate
    over_limit: bool = False


# Where a cell's process count, GPU kind and time limit come from.
@dataclass(frozen=True)
class Resources:
    world_size: int                  # processes per cell, one GPU each
    gpu: str
    gpu_source: str                  # how the GPU kind was chosen
    limit_s: float | None            # timeout x (requeues + 1); None without a SLURM profile
    limit_text: str = ""


# The GPU kind of a launch: --gpu-kind, else the kinds the profile's constraint names that the table
# knows (with several, the one giving the costliest plan is chosen by `plan_grid`), else h100.
def gpu_candidates(profile: SlurmProfile | None, override: str | None, known: set[str]) -> tuple[list[str], str]:
    if override:
        if override.lower() not in known:
            raise StepCostError(f"--gpu-kind {override}: the step-cost table has no row for it; allowed: "
                                f"{', '.join(sorted(known))} (or add rows with --step-costs FILE)")
        return [override.lower()], "--gpu-kind"
    constraint = (profile.constraint or "").lower() if profile is not None else ""
    named = sorted(k for k in known if k in constraint)
    if named:
        return named, f"profile {profile.name}'s constraint {profile.constraint!r}"
    return [DEFAULT_GPU], "assumed: no --gpu-kind, and no profile constraint naming a kind of the table"


# The time a cell may take: the profile's timeout x (max_num_timeout + 1).
def time_limit(profile: SlurmProfile | None) -> tuple[float | None, str]:
    if profile is None:
        return None, "no resource profile: no time limit checked"
    runs = profile.max_num_timeout + 1
    return (profile.timeout_min * 60.0 * runs,
            f"limit {profile.timeout_min / 60:g} h x ({profile.max_num_timeout} requeues + 1) = "
            f"{profile.timeout_min * runs / 60:g} h per cell")


# The cost of every cell, in grid order, with shared students and prefixes paid once.
def plan_costs(cells: Sequence[tuple[RunSpec, str]], table: dict[tuple[str, str, str, str], StepCost],
               resources: Resources) -> list[CellCost]:
    from harness.methods.students import prefix_key, student_key       # torch-heavy; only for a plan
    paid: set[str] = set()
    out = []
    for spec, state in cells:
        description = spec.description()          # the axes: teacher method relaxation refinement seed
        method = registry.methods.get(spec.method)
        params = dict(spec.params)
        distils = "distill" in method.stages
        head, tail = 0, 0                # plain Di[M]O steps, then steps with the refinement
        if distils:
            student, prefix = student_key(spec, resources.world_size), prefix_key(spec, resources.world_size)
            steps, start = params["distill.steps"], params.get("distill.refine_start", 0)
            if student not in paid:
                if prefix is not None:
                    head, tail = (0 if prefix in paid else start), steps - start
                    paid.add(prefix)
                else:
                    head = min(start, steps) if spec.refinement != NONE else steps
                    tail = steps - head
                paid.add(student)
        cost = _cell_cost(spec, params, distils, head, tail, table, resources)
        if isinstance(cost, str):
            out.append(CellCost(spec.run_id, description, state, head + tail, None, None, (), cost))
            continue
        wall, rows = cost
        over = resources.limit_s is not None and wall > resources.limit_s
        out.append(CellCost(spec.run_id, description, state, head + tail, wall,
                            wall * resources.world_size / 3600.0, rows, over_limit=over))
    return out


def _cell_cost(spec: RunSpec, params: dict, distils: bool, head: int, tail: int,
               table: dict[tuple[str, str, str, str], StepCost], res: Resources) -> tuple[float, tuple[StepCost, ...]] | str:
    precision = params.get("distill.precision", SAMPLER_PRECISION) if distils else SAMPLER_PRECISION
    base = table.get((spec.teacher, NONE, precision, res.gpu))
    if base is None:
        return f"no step-cost row for {spec.teacher}/{NONE}/{precision}/{res.gpu}"
    rows = [base]
    w, n = res.world_size, params.get("eval.samples", 0)
    wall = n / 1000.0 * base.eval_1k_s                                   # evaluation: one process
    if distils:
        refined = base
        if spec.refinement != NONE and tail:
            refined = table.get((spec.teacher, spec.refinement, precision, res.gpu))
            if refined is None:
                return f"no step-cost row for {spec.teacher}/{spec.refinement}/{precision}/{res.gpu}"
            rows.append(refined)
        per_gpu = params["distill.batch_size"] / w
        wall += head * base.step_s * per_gpu / base.batch + tail * refined.step_s * per_gpu / refined.batch
        every = params.get("distill.eval_every", 0)
        if every and head + tail:
            points = params["distill.steps"] // every + 1
            curve = params.get("eval.curve_samples", 0) / 1000.0
            wall += points * curve * ((base.forward_1k_s + base.decode_1k_s) / w + base.eval_1k_s)
    if spec.method == "teacher_sampler":
        forwards = params["sample.steps"] * (2 if params["sample.cfg"] != 1.0 else 1)
        wall += n / 1000.0 * (forwards * base.forward_1k_s + base.decode_1k_s) / w
    elif "sample" in registry.methods.get(spec.method).stages:
        wall += n / 1000.0 * params.get("sample.best_of_n", 1) * (base.forward_1k_s + base.decode_1k_s) / w
    return wall, tuple(rows)


# The costs for the GPU kind a launch will get (the costliest of several candidates) and the
# resources they assume.
def plan_grid(cells: Sequence[tuple[RunSpec, str]], profile: SlurmProfile | None, world_size: int,
              table: dict[tuple[str, str, str, str], StepCost], gpu_kind: str | None = None
              ) -> tuple[list[CellCost], Resources]:
    candidates, how = gpu_candidates(profile, gpu_kind, {k[3] for k in table})
    limit, limit_text = time_limit(profile)
    best: tuple[list[CellCost], Resources] | None = None
    for gpu in candidates:
        source = how if len(candidates) == 1 else f"{how}: the costliest of {', '.join(candidates)}"
        res = Resources(world_size, gpu, source, limit, limit_text)
        costs = plan_costs(cells, table, res)
        if best is None or _total(costs) > _total(best[0]):
            best = costs, res
    assert best is not None
    return best


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _total(costs: Sequence[CellCost]) -> float:
    return sum(c.accelerator_hours or 0.0 for c in costs)


#----------------------------------------------------------------------------
# Printing.


# Print the cost plan: one line per cell, the totals, the cells over the limit and the rows used.
def print_cost_plan(costs: Sequence[CellCost], res: Resources, tables: Sequence[Path], out: TextIO) -> None:
    names = ", ".join(_shown(p) for p in tables)
    print(f"\ncost plan: {res.gpu} GPUs ({res.gpu_source}), {res.world_size} per cell; step costs from {names}; "
          f"{res.limit_text}", file=out)
    width = max([len("cell")] + [len(c.description) for c in costs])
    print(f"{'id':16}  {'state':8}  {'cell':{width}}  {'acc-h':>8}  {'wall h':>7}  {'steps':>7}  note", file=out)
    for c in costs:
        head = f"{c.run_id:16}  {c.state:8}  {c.description:{width}}"
        if c.wall_s is None:
            print(f"{head}  {'?':>8}  {'?':>7}  {c.steps:>7}  {c.missing}", file=out)
            continue
        note = "CANNOT FINISH within the limit" if c.over_limit else ""
        print(f"{head}  {c.accelerator_hours:8.1f}  {c.wall_s / 3600:7.1f}  {c.steps:>7}  {note}".rstrip(), file=out)
    known = [c for c in costs if c.accelerator_hours is not None]
    todo = [c for c in known if c.state not in ("done", "diverged")]
    unknown = len(costs) - len(known)
    line = (f"total: {_total(known):.1f} accelerator-hours for {len(known)} cell(s), {_total(todo):.1f} for the "
            f"{len(todo)} not done")
    if unknown:
        line += f"; {unknown} cell(s) without an estimate (no step-cost row)"
    print(line, file=out)
    over = [c for c in costs if c.over_limit]
    if over:
        print(f"{len(over)} cell(s) cannot finish within the limit: {', '.join(c.run_id for c in over)} "
              f"(raise timeout_min or max_num_timeout in the profile, or use more GPUs per cell)", file=out)
    used = {r.key: r for c in costs for r in c.rows}
    for row in sorted(used.values(), key=lambda r: r.key):
        print(f"  {row.label()}: {row.step_s:g} s/step at {row.batch} per GPU, 1k images {row.forward_1k_s:g} s "
              f"forward, {row.decode_1k_s:g} s decode, {row.eval_1k_s:g} s metrics; {row.source}", file=out)
