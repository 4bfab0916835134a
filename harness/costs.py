"""The cost table of a report: wall-clock seconds per method (mean ± std over its runs) and the
seconds of each stage (teacher, distillation, sampling, evaluation), from the records' `cost`.
A pure function of records; costs depend on the machine and its load, so they are reported
beside the metrics, never compared with baselines.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any, Mapping, Sequence

from harness.results import method_label

STAGES = ("teacher_s", "distill_s", "sample_s", "eval_s")


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


# Markdown: one row per (teacher, method label) of ok records, wall and stage seconds, accelerator
# hours, and how many runs reused a student another run trained (the student cache: they count
# no distillation seconds).
def render_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    seen: set[str] = set()
    for r in records:                      # a run reused in several grids counts once
        if r.get("status") == "ok" and isinstance(r.get("cost"), Mapping) and r["run_id"] not in seen:
            seen.add(r["run_id"])
            groups[(r["spec"]["teacher"], method_label(r["spec"]))].append(r)
    if not groups:
        return ""
    out = ["Seconds per run, mean ± std over runs (n); stages as the records give them. A run that "
           "reused a student trained by another run (same student key, e.g. `gumbel` without a "
           "refinement that needs gradients trains exactly `hard`'s student) spends no distillation "
           "seconds of its own.", "",
           "| teacher | method | n | wall s | " + " | ".join(STAGES) + " | accelerator h | reused student |",
           "|---|---|---:|---:|" + "---:|" * (len(STAGES) + 2)]
    for (teacher, label), runs in sorted(groups.items()):
        costs = [r["cost"] for r in runs]
        stages = [_mean_std([c["stages"][s] for c in costs if s in c.get("stages", {})]) for s in STAGES]
        hours = sum(float(c.get("accelerator_hours") or 0.0) for c in costs)
        students = [(r.get("info") or {}).get("student") for r in runs]
        reused = (f"{sum(bool(st.get('cache_hit')) for st in students)}/{len(runs)}"
                  if all(isinstance(st, Mapping) for st in students) else "–")
        out.append(f"| {teacher} | {label} | {len(costs)} | {_mean_std([c['wall_s'] for c in costs])} | "
                   + " | ".join(stages) + f" | {hours:.3g} | {reused} |")
    return "\n".join(out) + "\n"
