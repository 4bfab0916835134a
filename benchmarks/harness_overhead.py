"""Overhead of the harness itself (no method runs): grid expansion + planning, and the report.

    python benchmarks/harness_overhead.py [--cells 10000] [--rows 100000]

1. Expansion + planning of a 10,000-cell grid: parse and validate the YAML, resolve every cell
   (`resolve_cell`), de-duplicate, describe each cell, read the state of every cell from a results
   root that already holds 1,000 ok records, and order the pending cells into the local
   executor's work queue. Target < 2 s.
2. A report over 100,000 metric rows: 20,000 synthetic records (4,000 configurations x 5 seeds)
   x 5 metrics written as record files, then `build_report` (scan, flat table, tables in
   md/tex/csv, plots). Target < 5 s.
The cells use the `toy_lab` plugin of the tests (a one-step method reading the same stages as
Di[M]O: teacher, distill, relax, sample, eval). Figures are recorded in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "plugins")]

from harness import launch, store  # noqa: E402
from harness.report import build as report  # noqa: E402
from harness.cell import workqueue  # noqa: E402
from harness.contracts.protocol import protocol_id  # noqa: E402
from harness.grid import load_grid  # noqa: E402
from harness.launch import executors  # noqa: E402

METRICS = ("toy_mean", "toy_fidelity", "toy_std", "m4", "m5")


# A grid of `cells` cells of the toy one-step method.
def grid_text(cells: int) -> str:
    # relaxation (2) x seed (n) x distill.beta (10) x distill.r_init (10)
    seeds = max(1, cells // 200)
    return (f"name: bench\nplugins: [toy_lab]\nmatrix:\n  teacher: [toy]\n  method: [toy_student]\n"
            f"  relaxation: [toy_hard, toy_soft]\n  seed: {list(range(seeds))}\n"
            f"  distill.beta: {[round(0.1 * i, 1) for i in range(10)]}\n"
            f"  distill.r_init: {[round(0.05 * i, 2) for i in range(10)]}\n"
            f"params: {{eval.samples: 100, distill.steps: 10}}\n")


# A synthetic ok record with random metric values.
def ok_record(spec_json: dict, run_id: str, rng: random.Random, metrics=METRICS) -> dict:
    return {"schema_version": store.SCHEMA_VERSION, "run_id": run_id, "grid": "bench",
            "description": "", "spec": spec_json, "status": "ok", "error": None,
            "metrics": {m: {"value": rng.random(), "higher_is_better": False,
                            "protocol": {"name": m, "samples": 100},
                            "protocol_id": protocol_id({"name": m, "samples": 100})}
                        for m in metrics},
            "curves": {}, "samples": {}, "info": {}}


# Write a record file directly (no fsync: this benchmarks reading, not writing).
def write_plain(root: Path, rec: dict) -> None:
    d = store.run_dir(root, rec["grid"], rec["run_id"])
    d.mkdir(parents=True, exist_ok=True)
    (d / store.RECORD_FILE).write_text(json.dumps(rec))


class _Clock:
    # Wall and CPU seconds of a block (CPU shows what the harness costs on a shared machine).
    def __enter__(self) -> "_Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


# Benchmark 1: expansion + planning.
def bench_planning(cells: int, tmp: Path) -> dict[str, float]:
    path = tmp / "bench.yaml"
    path.write_text(grid_text(cells))
    root = tmp / "plan_results"
    with _Clock() as expand:
        grid = load_grid(path)
    rng = random.Random(0)
    for spec in grid.specs[:1000]:                     # 1,000 cells already done
        write_plain(root, ok_record(spec.to_json(), spec.run_id, rng))
    with _Clock() as planning:
        cells_state = launch.plan(grid, root)
        todo = launch.to_submit(cells_state, rerun_failed=False)
        queue = workqueue.queue_order(todo, executors.work_key)
    assert len(grid.specs) == cells and len(todo) == cells - 1000 and len(queue) == len(todo)
    return {"cells": len(grid.specs), "expand": expand, "plan": planning}


# Benchmark 2: the report over `rows` metric rows.
def bench_report(rows: int, tmp: Path) -> dict[str, float]:
    root = tmp / "report_results"
    rng = random.Random(1)
    n_records = rows // len(METRICS)
    relax = ("toy_hard", "toy_soft")
    for i in range(n_records):            # configurations of 5 seeds each
        spec = {"scale": "mini", "teacher": "toy", "method": "toy_student",
                "relaxation": relax[(i // 5) % 2], "refinement": "none", "seed": i % 5,
                "params": {"distill.beta": float(i // 10)}, "plugins": []}
        write_plain(root, ok_record(spec, f"{i:016x}", rng))
    with _Clock() as tables_only:
        rep = report.build_report(root, None, tmp / "report_out", with_plots=False)
    with _Clock() as with_plots:
        rep_plots = report.build_report(root, None, tmp / "report_out_plots", with_plots=True)
    n_rows = int((rep.frame["kind"] == "run").sum())
    assert n_rows == rows and len(rep_plots.files) > len(rep.files)
    return {"metric_rows": n_rows, "tables": tables_only, "plots": with_plots,
            "figures": sum(p.suffix == ".png" for p in rep_plots.files)}


# Run both benchmarks and print their figures.
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=10_000)
    p.add_argument("--rows", type=int, default=100_000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        plan = bench_planning(args.cells, Path(d))
        e, p_ = plan["expand"], plan["plan"]
        print(f"expansion + planning of {plan['cells']:,} cells: {e.wall + p_.wall:.2f} s wall, "
              f"{e.cpu + p_.cpu:.2f} s CPU (expand {e.wall:.2f} s, plan {p_.wall:.2f} s; "
              f"target < 2 s)")
        rep = bench_report(args.rows, Path(d))
        t, p = rep["tables"], rep["plots"]
        print(f"report over {rep['metric_rows']:,} metric rows (scan, flat table, md/tex/csv "
              f"tables): {t.wall:.2f} s wall, {t.cpu:.2f} s CPU (target < 5 s)")
        print(f"same report with plots ({rep['figures']} figures, PNG + PDF): {p.wall:.2f} s wall, "
              f"{p.cpu:.2f} s CPU")


if __name__ == "__main__":
    main()
