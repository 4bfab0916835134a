"""Calibrate the mini text-to-image "shapes" world and time it (benchmarks/README.md, "Shapes").

Runs, through the registry and with the shapes teacher's default parameters, for each seed:
  real_prompt, marginals_prompt, real_same_task     the reference rungs
  teacher_sampler at K in --steps (cfg 1 and 2)      the teacher's MaskGIT sampler
  dimo with hard / gumbel / soft                     one-step Di[M]O students
and prints one JSON line per run (exact-checker scores per task, CLIP-score, stage seconds), then
a markdown table of means and ranges over seeds. The first run trains the teacher into --cache
(its build seconds are in the dimo/teacher lines' `teacher_s`); later runs hit the cache.

    python benchmarks/shapes_mini.py --cache /tmp/shapes-cache --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from harness.contracts import registry
from harness.contracts.entries import EvalInput, RunContext
from harness.grid.spec import resolve_cell
from softdimo.data import shapes as world

COLUMNS = ["shapes_geneval"] + [f"shapes_geneval_{t}" for t in world.TASKS] + ["shapes_geneval_lenient", "shapes_clip"]


# The cells of the calibration: reference rungs, teacher sampler settings, one-step students.
def cells(steps: list[int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"method": m} for m in ("real_prompt", "marginals_prompt", "real_same_task")]
    out += [{"method": "teacher_sampler", "sample.steps": k} for k in steps]
    out += [{"method": "teacher_sampler", "sample.steps": k, "sample.cfg": 2.0} for k in steps if k >= 8]
    out += [{"method": "dimo", "relaxation": r} for r in ("hard", "gumbel", "soft")]
    return out


# Run one cell and score it with its default metrics.
def run_cell(cell: dict[str, Any], seed: int, cache: Path, root: Path) -> dict[str, Any]:
    spec = resolve_cell({"teacher": "shapes", "seed": seed, **cell}, "mini")
    ctx = RunContext(root / spec.run_id, cache, log=lambda s: None)
    start = time.perf_counter()
    result = registry.methods.get(spec.method).run(spec, ctx)
    wall = time.perf_counter() - start
    held = result.samples
    inp = EvalInput(spec, result.teacher, held.all_images(), result.conditions, held.all_tokens())
    values: dict[str, float] = {}
    for metric in spec.param("eval.metrics"):
        values.update({k: v.value for k, v in registry.metrics.get(metric).compute(inp, ctx).items()})
    return {"cell": cell, "seed": seed, "wall_s": round(wall, 1),
            "stages": {k: round(v, 1) for k, v in result.stage_seconds.items()}, **values}


def _label(cell: dict[str, Any]) -> str:
    extra = " ".join(f"{k.split('.')[-1]}={v}" for k, v in cell.items() if k not in ("method", "relaxation"))
    return " ".join(x for x in (cell["method"], cell.get("relaxation", ""), extra) if x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="teacher cache directory")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 8, 16], help="teacher sampler K")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="shapes-bench-"))
    rows: dict[str, list[dict[str, Any]]] = {}
    for cell in cells(args.steps):
        for seed in args.seeds:
            row = run_cell(cell, seed, args.cache, root)
            print(json.dumps(row), flush=True)
            rows.setdefault(_label(cell), []).append(row)
    print("\n| run | " + " | ".join(c.replace("shapes_geneval_", "") for c in COLUMNS) + " | wall s |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for label, runs in rows.items():
        cols = []
        for c in COLUMNS:
            vals = [r[c] for r in runs]
            mean = sum(vals) / len(vals)
            cols.append(f"{mean:.2f}" if c != "shapes_clip" else f"{mean:.1f}")
        wall = sorted(r["wall_s"] for r in runs)[len(runs) // 2]
        print(f"| {label} | " + " | ".join(cols) + f" | {wall:.0f} |")


if __name__ == "__main__":
    main()
