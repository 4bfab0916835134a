"""A small Python API for notebooks and scripts, without the harness's internals:

    from harness import api
    api.run("ablations/soft_vs_hard.yaml", set={"eval.samples": 500})      # run a grid (mini, local)
    frame = api.load_frame("results", grids=["soft_vs_hard"])              # the results table
    api.report("results", reference={"method": "dimo", "relaxation": "hard"})  # tables and plots

Each call is what the command does (`python -m harness.run`, `harness.report`), with the same
validation, messages and exit codes; the registries are filled on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from harness import plugins, report as report_cli, run as run_cli
from harness import results

#----------------------------------------------------------------------------


# Run a grid as `python -m harness.run --grid PATH ...` does; returns its exit code (0 all ok, 1 some
# cell failed, 2 nothing launched: the grid, an asset or an option is wrong). `set` holds
# `<stage>.<field>` values over the grid's params; `options` are further command-line options,
# e.g. ["--dry-run"] or ["--executor", "debug"].
def run(grid: str | Path, results_root: str | Path = "results", scale: str | None = None,
        set: Mapping[str, Any] | None = None, options: Sequence[str] = ()) -> int:
    argv = ["--grid", str(grid), "--results", str(results_root), *options]
    if scale:
        argv += ["--scale", scale]
    for key, value in (set or {}).items():
        argv += ["--set", f"{key}={_yaml(value)}"]
    return run_cli.main(argv)


# The results table of a results root (`harness.results.load_frame`; docs/usage.md lists its
# columns), with the plugins the runs used loaded for their labels.
def load_frame(results_root: str | Path = "results", grids: Sequence[str] | None = None, curves: bool = False,
               baselines: bool = False) -> pd.DataFrame:
    plugins.load_builtins()
    return results.load_frame(results_root, grids, curves=curves, baselines=baselines)


# Build the report (tables, comparisons, claims, plots, samples) under `out` (default
# <results>/report) and return the path of its index page.
def report(results_root: str | Path = "results", grids: Sequence[str] | None = None, out: str | Path | None = None,
           reference: Mapping[str, Any] | None = None, baseline: Mapping[str, Any] | None = None,
           formats: Sequence[str] = ("md", "tex", "csv"), plots: bool = True) -> Path:
    plugins.load_builtins()
    built = report_cli.build_report(results_root, grids, out or Path(results_root) / "report", formats, plots,
                                    reference=reference, baseline=baseline)
    return built.index


def _yaml(value: Any) -> str:
    import yaml
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
