"""Registers the baseline sources `papers` and `mini_reference` (see `harness.store.baselines`)."""
from __future__ import annotations

from harness.store.baselines import BaselineSource, baselines_dir, registered

registered.register("papers", BaselineSource(
    "papers", lambda: baselines_dir() / "paper_results.csv",
    "Di[M]O and Soft-Di[M]O papers and the teachers' own reports (with citations)"))
registered.register("mini_reference", BaselineSource(
    "mini_reference", lambda: baselines_dir() / "mini_reference.csv",
    "the project's own mini-scale reference results (python -m harness.report.baselines export)"))
