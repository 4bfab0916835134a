"""Paired differences between relaxations: for runs that differ only in their relaxation, the
per-seed difference of each metric against a reference relaxation (`hard` by default), with the
mean, the standard deviation over seeds, a 95% t-interval of the mean, and whether that interval
excludes zero ("larger than seed noise"). Pairing by seed removes the variance the runs share
(the same teacher, the same training noise: relaxations draw the same x_theta from one stream).

A pure function of the flat results table; `render_markdown` only formats it.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from scipy import stats

from harness.results import ResultRow
from harness.spec import NONE

#----------------------------------------------------------------------------


# The paired difference of one relaxation against the reference, for one metric.
@dataclass(frozen=True)
class PairedDiff:
    teacher: str
    label: str                      # the compared runs' label ("Di[M]O (soft)")
    reference: str                  # the reference runs' label ("Di[M]O (hard)")
    metric: str
    higher_is_better: bool
    mean: float
    std: float
    n: int
    ci95: float                     # half-width of the 95% t-interval of the mean (nan if n < 2)

    # True when the 95% interval of the mean difference excludes zero.
    @property
    def beyond_noise(self) -> bool:
        return self.n >= 2 and abs(self.mean) > self.ci95


# Mean, sample std, n and the half-width of the 95% t-interval of the mean of paired differences
# (std and interval are nan for n < 2).
def paired_stats(diffs: Sequence[float]) -> tuple[float, float, int, float]:
    n = len(diffs)
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else math.nan
    ci = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return mean, std, n, float(ci)


def _pair_key(row: ResultRow) -> str:
    # The run's group (its spec without the seed) without the relaxation.
    spec = json.loads(row.group)
    spec.pop("relaxation", None)
    return json.dumps(spec, sort_keys=True)


# Paired differences of every relaxation against `reference`, per teacher, setting and metric.
def paired_differences(rows: Sequence[ResultRow], reference: str = "hard") -> list[PairedDiff]:
    values: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    labels: dict[tuple, dict[str, str]] = defaultdict(dict)
    direction: dict[str, bool] = {}
    for r in rows:
        if r.kind != "run" or r.relaxation == NONE or r.value is None or r.seed is None:
            continue
        key = (r.teacher, _pair_key(r), r.metric)
        values[key][r.relaxation][r.seed] = r.value
        labels[key][r.relaxation] = r.label
        direction[r.metric] = r.higher_is_better
    out = []
    for key, by_relax in values.items():
        if reference not in by_relax:
            continue
        base = by_relax[reference]
        for relax, per_seed in sorted(by_relax.items()):
            seeds = sorted(set(per_seed) & set(base))
            if relax == reference or not seeds:
                continue
            mean, std, n, ci = paired_stats([per_seed[s] - base[s] for s in seeds])
            teacher, _, metric = key
            out.append(PairedDiff(teacher, labels[key][relax], labels[key][reference], metric,
                                  direction[metric], mean, std, n, ci))
    return sorted(out, key=lambda d: (d.teacher, d.label, d.metric))


# A Markdown table per teacher: one row per compared label, one column per metric, each cell
# "mean ± std (n)" with a mark where the 95% interval excludes zero.
def render_markdown(diffs: Sequence[PairedDiff]) -> str:
    if not diffs:
        return ""
    out = ["Paired differences against the reference relaxation, per seed (run − reference): "
           "mean ± std over seeds (n). **bold**: the 95% t-interval of the mean excludes 0 "
           "(larger than seed noise); otherwise within seed noise.", ""]
    for teacher in sorted({d.teacher for d in diffs}):
        mine = [d for d in diffs if d.teacher == teacher]
        metrics = sorted({d.metric for d in mine})
        arrows = {d.metric: "↑" if d.higher_is_better else "↓" for d in mine}
        out += [f"### {teacher}", "",
                "| run − reference | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |",
                "|---|" + "---:|" * len(metrics)]
        for label, reference in sorted({(d.label, d.reference) for d in mine}):
            cells = []
            for m in metrics:
                d = next((x for x in mine if x.label == label and x.reference == reference
                          and x.metric == m), None)
                if d is None:
                    cells.append("–")
                    continue
                text = f"{d.mean:+.4g} ± {d.std:.2g} ({d.n})" if d.n > 1 else f"{d.mean:+.4g} (1)"
                cells.append(f"**{text}**" if d.beyond_noise else text)
            out.append(f"| {label} − {reference} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)
