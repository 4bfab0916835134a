"""The cost table of a report: wall-clock seconds per method (mean ± std over its runs), the
seconds of each stage (teacher, distillation, sampling, evaluation), the processes per run and the
accelerator hours, from the cost columns of the results table. Costs depend on the machine and its
load, so they are reported beside the metrics, never compared with baselines.
"""
from __future__ import annotations

import pandas as pd

from harness.results import final_runs
from harness.tables import mean_std

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
