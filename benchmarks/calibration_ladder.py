"""The calibration ladder of the mini metrics over 3 seeds (benchmarks/README.md, "Calibration ladder").

Runs `ablations/calibration_ladder.yaml` through the harness (cached cells are not re-run), then
checks, seed by seed, that the structural metric orders
    real < teacher (best K) < class-conditional marginals < unconditional marginals < uniform
and reports whether FD orders them too. Seed i pairs the teacher trained with `teacher.seed = i`
with the reference rungs sampled with `seed = i`; "best K" is the teacher's K with the lowest
covariance error on that seed.

    python benchmarks/calibration_ladder.py [--results results] [--max-parallel 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from harness import run, store

GRID = Path(__file__).resolve().parents[1] / "ablations" / "calibration_ladder.yaml"
RUNGS = ("real", "teacher", "marginals_class", "marginals_uncond", "uniform")
METRICS = ("digits_cov_err", "digits_fd", "digits_acc", "digits_nbr_mi")


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--max-parallel", default="2")
    args = parser.parse_args()
    rc = run.main(["--grid", str(GRID), "--results", args.results, "--max-parallel", args.max_parallel])
    if rc not in (0,):
        print(f"harness.run exited with {rc}", file=sys.stderr)
        return rc
    records, problems = store.scan(args.results, ["calibration_ladder"])
    assert not problems, problems
    by_seed: dict[int, dict[str, dict[str, float]]] = {}
    best_k: dict[int, int] = {}
    for seed in (0, 1, 2):
        rungs: dict[str, dict[str, float]] = {}
        teachers = []
        for r in records:
            spec, values = r["spec"], {k: v["value"] for k, v in r["metrics"].items()}
            if spec["method"] == "teacher_sampler" and spec["params"]["teacher.seed"] == seed:
                teachers.append((values["digits_cov_err"], spec["params"]["sample.steps"], values))
            elif spec["method"] != "teacher_sampler" and spec["seed"] == seed:
                rungs[spec["method"]] = values
        cov, best_k[seed], rungs["teacher"] = min(teachers, key=lambda t: t[0])
        by_seed[seed] = rungs
    print(f"{'rung':18}" + "".join(f"{m:>22}" for m in METRICS))
    for rung in RUNGS:
        print(f"{rung:18}" + "".join(f"{_fmt([by_seed[s][rung][m] for s in by_seed]):>22}" for m in METRICS))
    print(f"teacher's best K per seed: {best_k}")
    ok = True
    for metric in ("digits_cov_err", "digits_fd"):
        holds = []
        for s, rungs in by_seed.items():
            values = [rungs[r][metric] for r in RUNGS]
            holds.append(all(a < b for a, b in zip(values, values[1:])))
        print(f"{metric}: full ladder holds on {sum(holds)}/3 seeds {holds}")
        ok &= metric != "digits_cov_err" or all(holds)
    print("calibration ladder on the structural metric:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
