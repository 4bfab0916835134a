"""The refinement ablations at mini scale over their seeds (benchmarks/README.md, "Refinements").

Runs the six digits grids of `ablations/` through the harness (cached cells and shared students
are not re-run), then prints, per grid, the final metrics (mean ± std over seeds), the metric
curves over training steps, the GAN diagnostics at the last step, the paired differences the
paper's claims are about (seed-paired, 95% t-interval) and the test-time scaling table (best-of-N
x TTEO iterations, with its cost per image).

    python benchmarks/refinements.py [--results results] [--max-parallel 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from scipy import stats

from harness import run, store

ABLATIONS = Path(__file__).resolve().parents[1] / "ablations"
GRIDS = ("dimo_gan_only", "soft_vs_gumbel_gan", "gan_mask_range", "reward_finetune", "teacher_input",
         "tteo_best_of_n")
FINAL = ("digits_fd", "digits_acc", "digits_cov_err", "digits_reward", "digits_reward_heldout")
DIAGNOSTICS = ("gan_softness_probe", "grad_ratio", "p_max", "p_entropy")
CURVE_STEPS = (0, 100, 150, 200, 250)
COST = ("generator_evals_per_image", "sample_seconds_per_image")
PLAIN = {"generator_evals_per_image": "1 (plain sample)"}     # a plain one-step cell records no cost


# A cell's name from what varies across the refinement grids.
def cell_name(spec: Mapping[str, Any]) -> str:
    p = spec["params"]
    name = f"{spec['relaxation']}"
    if spec["refinement"] != "none":
        name += f" + {spec['refinement']}"
        if p["distill.dimo_weight"] == 0:
            name += " only (no Di[M]O term)"
        if spec["refinement"] == "gan":
            name += f" w{p['gan.weight']:g} r_GAN~U[{p['gan.mask_min']:g},{p['gan.mask_max']:g}]"
            if p.get("gan.real_input", "one_hot") != "one_hot":
                name += f" real {p['gan.real_input']}"
        if p.get("distill.refine_grad_ratio", 0.0) > 0:
            name += f" ratio {p['distill.refine_grad_ratio']:g}"
    else:
        name += " Di[M]O only"
    if p.get("distill.teacher_input", "sampled") != "sampled":
        name += f" ({p['distill.teacher_input']} teacher input)"
    return name


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def _paired(a: dict[int, float], b: dict[int, float]) -> str:
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if len(diffs) < 2:
        return "n < 2"
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    mean = statistics.fmean(diffs)
    verdict = "beyond seed noise" if abs(mean) > half else "within seed noise"
    return f"{mean:+.4g} ± {half:.2g} (n={len(diffs)}, {verdict})"


# Final metric per (cell name, seed) of one grid's ok records.
def finals(records: list[Mapping[str, Any]]) -> dict[str, dict[str, dict[int, float]]]:
    out: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        for metric, m in r["metrics"].items():
            out[cell_name(r["spec"])][metric][r["spec"]["seed"]] = m["value"]
    return out


def print_finals(table: dict[str, dict[str, dict[int, float]]]) -> None:
    print(f"{'cell':44}" + "".join(f"{m:>22}" for m in FINAL))
    for name, metrics in sorted(table.items()):
        print(f"{name:44}" + "".join(f"{_fmt(list(metrics[m].values())):>22}" for m in FINAL))


# The GAN diagnostics of each GAN cell's last training step (softness probe, GAN / Di[M]O
# logit-gradient ratio, sharpness of p), mean ± std over seeds.
def print_diagnostics(records: list[Mapping[str, Any]]) -> None:
    cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["spec"]["refinement"] == "gan":
            for key in DIAGNOSTICS:
                if key in r["info"].get("final_log", {}):
                    cells[cell_name(r["spec"])][key].append(r["info"]["final_log"][key])
    if cells:
        print("GAN diagnostics at the last step, mean ± std over seeds")
        print(f"{'cell':44}" + "".join(f"{k:>20}" for k in DIAGNOSTICS))
        for name, values in sorted(cells.items()):
            print(f"{name:44}" + "".join(f"{_fmt(values[k]):>20}" for k in DIAGNOSTICS))


def print_curves(records: list[Mapping[str, Any]], metric: str) -> None:
    curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        for step, value in r.get("curves", {}).get(metric, []):
            curves[cell_name(r["spec"])][step].append(value)
    print(f"{metric} during training, mean ± std over seeds")
    print(f"{'cell':44}" + "".join(f"{'step ' + str(s):>18}" for s in CURVE_STEPS))
    for name, points in sorted(curves.items()):
        print(f"{name:44}" + "".join(f"{_fmt(points[s]) if points.get(s) else '-':>18}" for s in CURVE_STEPS))


def print_pairs(table: dict[str, dict[str, dict[int, float]]], pairs: list[tuple[str, str]]) -> None:
    for a, b in pairs:
        if a in table and b in table:
            print(f"paired [{a}] - [{b}]:")
            for m in FINAL:
                print(f"  {m:16} {_paired(table[a][m], table[b][m])}")


def print_test_time(records: list[Mapping[str, Any]]) -> None:
    cells: dict[tuple[int, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        p = r["spec"]["params"]
        for metric, m in r["metrics"].items():
            cells[(p["sample.tteo_steps"], p["sample.best_of_n"])][metric].append(m["value"])
    cols = FINAL + COST
    print(f"{'TTEO k':>7}{'N':>4}" + "".join(f"{m:>27}" for m in cols))
    for (k, n), metrics in sorted(cells.items()):
        print(f"{k:>7}{n:>4}" + "".join(f"{_fmt(metrics[m]) if metrics.get(m) else PLAIN.get(m, '-'):>27}"
                                        for m in cols))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--max-parallel", default="2")
    args = parser.parse_args()
    for grid in GRIDS:
        rc = run.main(["--grid", str(ABLATIONS / f"{grid}.yaml"), "--results", args.results,
                       "--max-parallel", args.max_parallel])
        if rc != 0:
            print(f"harness.run --grid {grid} exited with {rc}", file=sys.stderr)
            return rc
    records, problems = store.scan(args.results, list(GRIDS))
    assert not problems, problems
    by_grid: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        if r["status"] == "ok":
            by_grid[r["grid"]].append(r)
    for grid in GRIDS[:-1]:
        print(f"\n== {grid} (final, mean ± std over seeds)")
        table = finals(by_grid[grid])
        print_finals(table)
        print_curves(by_grid[grid], "digits_fd")
        print_diagnostics(by_grid[grid])
        names = sorted(table)
        base = [n for n in names if n.endswith("Di[M]O only")]
        print_pairs(table, [(a, b) for b in base for a in names if a != b]
                    + [(a, b) for a in names for b in names if a < b and "gan" in a and "gan" in b])
    print("\n== tteo_best_of_n (soft Di[M]O student; mean ± std over seeds)")
    print_test_time(by_grid["tteo_best_of_n"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
