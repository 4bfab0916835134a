"""The cost table of a report: wall-clock seconds per method (mean ± std over its runs), the
seconds of each stage (teacher, distillation, sampling, evaluation), the processes per run and the
accelerator hours, from the cost columns of the results table; and the waste: what the attempts
that failed cost (their records, and those kept under `attempts/` when a cell was run again), in
SLURM accounting's GPU hours where it gave them. Costs depend on the machine and its load, so they
are reported beside the metrics, never compared with baselines.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

import pandas as pd

from harness.report.tables import mean_std
from harness.store.results import final_runs, method_label

STAGES = ("teacher_s", "distill_s", "sample_s", "eval_s")


def _mean_std(values: pd.Series) -> str:
    mean, std = mean_std([float(v) for v in values if v is not None and v == v])
    if mean is None:
        return "–"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


# Markdown: one row per (teacher, method label) of ok runs (each run once): wall and stage seconds,
# processes per run, accelerator hours, and how many runs reused a student another run trained
# (the student cache: they count no distillation seconds).
def render_markdown(df: pd.DataFrame) -> str:
    runs = final_runs(df)
    runs = runs[runs["status"] == "ok"].drop_duplicates("run_id")
    if runs.empty:
        return ""
    out = ["Seconds per run, mean ± std over runs (n); stages as the records give them. A run that "
           "reused a student trained by another run (same student key, e.g. `gumbel` without a "
           "refinement that needs gradients trains exactly `hard`'s student) spends no distillation "
           "seconds of its own. Accelerator hours count every process of a run.", "",
           "| teacher | method | n | wall s | " + " | ".join(STAGES) + " | processes | accelerator h | reused student |",
           "|---|---|---:|---:|" + "---:|" * (len(STAGES) + 3)]
    for (teacher, label), g in runs.groupby(["teacher", "label"], sort=True):
        stages = [_mean_std(g[s]) for s in STAGES]
        hours = float(g["accelerator_hours"].fillna(0.0).sum())
        processes = ", ".join(str(int(w)) for w in sorted(set(g["world_size"].fillna(1))))
        known = g["student_reused"].dropna()
        reused = f"{int(known.sum())}/{len(g)}" if len(known) == len(g) else "–"
        out.append(f"| {teacher} | {label} | {len(g)} | {_mean_std(g['wall_s'])} | " + " | ".join(stages)
                   + f" | {processes} | {hours:.3g} | {reused} |")
    return "\n".join(out) + "\n"


# The accelerator hours of one record: sacct's (every start of the job) where it gave them, else
# the job's own measure.
def accelerator_hours(record: Mapping[str, Any]) -> float:
    cost = record.get("cost") or {}
    sacct = cost.get("sacct") or {}
    return float(sacct.get("accelerator_hours", cost.get("accelerator_hours") or 0.0))


# Markdown: one row per (teacher, method label) of failed attempts (`records`: failed records, the
# current ones and those kept under attempts/): how many, their wall seconds and accelerator hours
# (waste), and how they ended.
def render_failures(records: Iterable[Mapping[str, Any]]) -> str:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("status") == "failed":
            groups.setdefault((str(r["spec"].get("teacher", "?")), method_label(r["spec"])), []).append(r)
    if not groups:
        return ""
    out = ["Failed attempts: what the runs that ended in failure cost, current failed records and those kept "
           "under `attempts/` when a cell was run again. Their accelerator hours are waste; on SLURM they are "
           "accounting's (sacct), which also counts a job that ended without a record of its own.", "",
           "| teacher | method | failed attempts | wall s | accelerator h | how they ended |",
           "|---|---|---:|---:|---:|---|"]
    for (teacher, label), rs in sorted(groups.items()):
        wall = sum(float((r.get("cost") or {}).get("wall_s") or 0.0) for r in rs)
        hours = sum(accelerator_hours(r) for r in rs)
        ended = Counter(str((r.get("error") or {}).get("type", "?")) for r in rs)
        how = ", ".join(f"{name} x{n}" for name, n in sorted(ended.items()))
        out.append(f"| {teacher} | {label} | {len(rs)} | {wall:.1f} | {hours:.3g} | {how} |")
    return "\n".join(out) + "\n"
