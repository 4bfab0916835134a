"""`python -m harness.report.verify --grid NAME [--grid ...]`: compare each run with the stored numbers of
the same run id (a baseline file of the project's own runs, by default
`baselines/mini_reference.csv`) and say what a difference means.

Each metric of a run is
- `identical`: the same value, bit for bit;
- `float`: a different value from bit-identical samples (the stored run's and this run's sample
  hashes agree), so the difference arose in the metric's own floating-point arithmetic; where
  either side has no sample hash, a relative difference of at most FLOAT_RTOL counts as float;
- `seed noise`: within the 95% prediction bound of the difference between two seeds of the same
  cell, t(0.975, n - 1) x s x sqrt(2), where s is the standard deviation of the stored values of the
  cell's n seeds (the same spec, other seeds): what a run that parted from the stored one early (a
  last-bit difference amplified by training) would differ by;
- `different`: beyond that bound, or no bound (fewer than two stored seeds) for a value that is
  neither identical nor float.
A run's verdict is its worst metric's. Where both carry stage hashes (harness.store.stages), the first
stage whose hash differs (teacher, student, samples) says where the two runs parted. Exit code 0
when no run is `different`, 1 otherwise, 2 for bad input (docs/reproducibility.md).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from scipy import stats

from harness import store
from harness.contracts.run_spec import RunSpec
from harness.store.baselines import Baseline, BaselineError, read_csv
from harness.store.stages import first_difference

VERDICTS = ("identical", "float", "seed noise", "different")      # from best to worst
# Relative difference of a metric recomputed from the same samples on another machine: the metrics
# are statistics of float32 network features (unit roundoff u = 2^-24); a last-bit difference in
# each of up to 16 float32 layers compounds to about 16 u in the features, and a statistic that
# amplifies it at most 16-fold (a well-conditioned one) gives 256 u = 2^-16. A difference from
# other samples is orders larger (seed noise is percent-sized).
FLOAT_RTOL = 2.0 ** -16
DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "baselines" / "mini_reference.csv"

#----------------------------------------------------------------------------


# One metric of a run against its stored value; `bound` is the seed-noise bound (None: no spread).
@dataclass(frozen=True)
class MetricCheck:
    metric: str
    stored: float
    value: float
    verdict: str
    bound: float | None


# A run against its stored numbers: the worst metric verdict and the first stage that differs.
@dataclass(frozen=True)
class RunCheck:
    run_id: str
    description: str
    verdict: str
    first_stage: str | None
    metrics: tuple[MetricCheck, ...]


# Stored baselines of the project's own runs, by run id and metric.
def stored_by_run(baselines: Iterable[Baseline]) -> dict[str, dict[str, Baseline]]:
    out: dict[str, dict[str, Baseline]] = {}
    for b in baselines:
        if b.run_id:
            out.setdefault(b.run_id, {})[b.metric] = b
    return out


# The seed-noise bound t(0.975, n-1) s sqrt(2) of n stored per-seed values (None for n < 2).
def seed_noise_bound(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    return float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) * math.sqrt(2.0)


# The stored values of `metric` for the cell of `spec_json` at every stored seed (its siblings:
# the same spec with another seed, found by their run ids).
def sibling_values(spec_json: Mapping[str, Any], metric: str, stored: Mapping[str, Mapping[str, Baseline]],
                   seeds: Iterable[int]) -> list[float]:
    out = []
    for seed in sorted(set(seeds)):
        rid = RunSpec.from_json({**spec_json, "seed": seed}).run_id
        if metric in stored.get(rid, {}):
            out.append(stored[rid][metric].value)
    return out


# Check one ok record against the stored numbers of its run id (None when none are stored).
def check_run(record: Mapping[str, Any], stored: Mapping[str, Mapping[str, Baseline]]) -> RunCheck | None:
    mine = stored.get(record["run_id"])
    if not mine:
        return None
    seeds = [b.seed for rows in stored.values() for b in rows.values() if b.seed is not None]
    stored_hashes = next(iter(mine.values())).stage_hashes
    hashes = record.get("stage_hashes", {})
    same_samples = "samples" in hashes and hashes.get("samples") == stored_hashes.get("samples")
    checks = []
    for metric, entry in sorted(record["metrics"].items()):
        if metric not in mine or entry.get("value") is None:
            continue
        value, ref = float(entry["value"]), mine[metric].value
        bound = seed_noise_bound(sibling_values(record["spec"], metric, stored, seeds))
        known = "samples" in hashes and "samples" in stored_hashes
        if value == ref:
            verdict = "identical"
        elif same_samples or (not known and abs(value - ref) <= FLOAT_RTOL * abs(ref)):
            verdict = "float"
        elif bound is not None and abs(value - ref) <= bound:
            verdict = "seed noise"
        else:
            verdict = "different"
        checks.append(MetricCheck(metric, ref, value, verdict, bound))
    if not checks:
        return None
    worst = max((c.verdict for c in checks), key=VERDICTS.index)
    return RunCheck(record["run_id"], record.get("description", ""), worst,
                    first_difference(hashes, stored_hashes), tuple(checks))


# Every ok record of the grids with stored numbers, checked.
def verify(records: Iterable[Mapping[str, Any]], baselines: Iterable[Baseline]) -> list[RunCheck]:
    stored = stored_by_run(baselines)
    out = [check_run(r, stored) for r in records if r.get("status") == "ok"]
    return sorted((c for c in out if c is not None), key=lambda c: (c.description, c.run_id))


# The checks as a markdown table (one row per run) and the counts of each verdict.
def render(checks: Sequence[RunCheck]) -> str:
    lines = ["| run | run id | verdict | first stage that differs | metrics (identical / float / seed noise / different) |",
             "|---|---|---|---|---|"]
    for c in checks:
        counts = " / ".join(str(sum(m.verdict == v for m in c.metrics)) for v in VERDICTS)
        lines.append(f"| {c.description} | {c.run_id} | {c.verdict} | {c.first_stage or '-'} | {counts} |")
    for c in checks:
        for m in c.metrics:
            if m.verdict == "different":
                bound = "no seed spread stored" if m.bound is None else f"seed-noise bound {m.bound:.6g}"
                lines.append(f"\n- {c.description} ({c.run_id}) {m.metric}: stored {m.stored!r}, this run "
                             f"{m.value!r} (difference {m.value - m.stored:+.6g}; {bound})")
    total = {v: sum(c.verdict == v for c in checks) for v in VERDICTS}
    lines.append("\n" + ", ".join(f"{n} {v}" for v, n in total.items()) + f" of {len(checks)} run(s)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.report.verify", description=__doc__.splitlines()[0])
    p.add_argument("--grid", required=True, action="append", metavar="NAME", help="grid name; repeatable")
    p.add_argument("--results", default="results", metavar="DIR", help="results root (default: results)")
    p.add_argument("--reference", default=str(DEFAULT_REFERENCE), metavar="CSV",
                   help="baseline file of stored per-seed numbers (default: baselines/mini_reference.csv)")
    args = p.parse_args(argv)
    try:
        baselines = read_csv(args.reference, "reference")
    except (OSError, BaselineError) as e:
        print(f"error: --reference: {e}", file=sys.stderr)
        return 2
    records, problems = store.scan(args.results, args.grid)
    for prob in problems:
        print(f"warning: {prob.path}: {prob.message}", file=sys.stderr)
    checks = verify(records, baselines)
    if not checks:
        print(f"error: no ok run of grid(s) {', '.join(args.grid)} under {args.results} has stored numbers "
              f"in {args.reference}", file=sys.stderr)
        return 2
    print(render(checks))
    return 1 if any(c.verdict == "different" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
