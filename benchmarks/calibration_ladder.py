"""The calibration ladder of a mini world's metrics over 3 seeds (benchmarks/README.md, "Calibration
ladder" for digits, "Glyphs" for the learned-codebook world).

Runs the world's ladder grid through the harness (cached cells are not re-run), then checks, seed
by seed, that the world's ladder metric orders
    real < teacher (best K) < class-conditional marginals < unconditional marginals < uniform
and reports whether the other metrics order them too. Seed i pairs the teacher trained with
`teacher.seed = i` with the reference rungs sampled with `seed = i`; "best K" is the teacher's K
with the lowest ladder metric on that seed.

    python benchmarks/calibration_ladder.py [--world digits|glyphs] [--results results] [--max-parallel 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import run, store

ABLATIONS = Path(__file__).resolve().parents[1] / "ablations"
RUNGS = ("real", "teacher", "marginals_class", "marginals_uncond", "uniform")


# A world's ladder: its grid, the metric that must order the rungs (lower = better), the metric
# columns printed, and the other lower-is-better metrics whose ordering is reported.
@dataclass(frozen=True)
class Ladder:
    grid: str
    metric: str
    columns: tuple[str, ...]
    also_reported: tuple[str, ...]


LADDERS = {
    "digits": Ladder("calibration_ladder", "digits_cov_err",
                     ("digits_cov_err", "digits_fd", "digits_acc", "digits_nbr_mi"), ("digits_fd",)),
    "glyphs": Ladder("glyphs_ladder", "glyphs_fd",
                     ("glyphs_fd", "glyphs_acc", "glyphs_colour", "glyphs_precision", "glyphs_recall"), ()),
}


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=sorted(LADDERS), default="digits")
    parser.add_argument("--results", default="results")
    parser.add_argument("--max-parallel", default="2")
    args = parser.parse_args()
    ladder = LADDERS[args.world]
    grid = ABLATIONS / f"{ladder.grid}.yaml"
    rc = run.main(["--grid", str(grid), "--results", args.results, "--max-parallel", args.max_parallel])
    if rc not in (0,):
        print(f"harness.run exited with {rc}", file=sys.stderr)
        return rc
    records, problems = store.scan(args.results, [ladder.grid])
    assert not problems, problems
    by_seed: dict[int, dict[str, dict[str, float]]] = {}
    best_k: dict[int, int] = {}
    for seed in (0, 1, 2):
        rungs: dict[str, dict[str, float]] = {}
        teachers = []
        for r in records:
            spec, values = r["spec"], {k: v["value"] for k, v in r["metrics"].items()}
            if spec["method"] == "teacher_sampler" and spec["params"]["teacher.seed"] == seed:
                teachers.append((values[ladder.metric], spec["params"]["sample.steps"], values))
            elif spec["method"] != "teacher_sampler" and spec["seed"] == seed:
                rungs[spec["method"]] = values
        _, best_k[seed], rungs["teacher"] = min(teachers, key=lambda t: t[0])
        by_seed[seed] = rungs
    print(f"{'rung':18}" + "".join(f"{m:>22}" for m in ladder.columns))
    for rung in RUNGS:
        print(f"{rung:18}" + "".join(f"{_fmt([by_seed[s][rung][m] for s in by_seed]):>22}" for m in ladder.columns))
    print(f"teacher's best K per seed: {best_k}")
    ok = True
    for metric in (ladder.metric, *ladder.also_reported):
        holds = []
        for s, rungs in by_seed.items():
            values = [rungs[r][metric] for r in RUNGS]
            holds.append(all(a < b for a, b in zip(values, values[1:])))
        print(f"{metric}: full ladder holds on {sum(holds)}/3 seeds {holds}")
        ok &= metric != ladder.metric or all(holds)
    print(f"calibration ladder on {ladder.metric}:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
