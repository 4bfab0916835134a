"""Comparisons against a reference, along any axis: every group of runs of a teacher is compared
with the reference cells of that teacher (chosen by a selector such as `method=dimo,relaxation=hard`,
or a stored baseline such as `source=mini_reference,label=Di[M]O (hard)`), metric by metric, only
where the two sides were evaluated under the same protocol.

The test follows the data: paired by seed (the paired t-interval of the per-seed differences) when
both sides have the same seeds; Welch's t-test otherwise, on per-seed values of both sides, or on a
stored baseline's mean / std / n (`scipy.stats.ttest_ind_from_stats`). Every comparison says which
test and which n it used. A pure function of the results table; `render_markdown` formats it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import pandas as pd
import yaml
from scipy import stats

from harness.contracts.protocol import protocol_mismatch
from harness.store.results import final_runs, order_key

AXES = ("kind", "source", "grid", "teacher", "scale", "method", "relaxation", "refinement", "label")

#----------------------------------------------------------------------------


# One comparison: treatment group minus reference, on one metric.
@dataclass(frozen=True)
class Comparison:
    teacher: str
    label: str                      # the compared group's label
    reference: str                  # the reference's label (and source)
    metric: str
    higher_is_better: bool
    test: str                       # "paired t", "Welch t", "Welch t (mean/std/n)", or "" (not compared)
    diff: float | None              # treatment mean minus reference mean
    ci95: float | None              # half-width of the 95% interval of `diff`
    p_value: float | None
    n: int                          # treatment values (seeds)
    n_ref: int                      # reference values (seeds, or the baseline's n)
    note: str = ""                  # why there is no test
    position: Any = None            # the compared group's place in its grid's matrix (`matrix_order`)

    # True when the 95% interval of the difference excludes zero.
    @property
    def beyond_noise(self) -> bool:
        return self.diff is not None and self.ci95 is not None and abs(self.diff) > self.ci95


# Mean, sample std, n and the half-width of the 95% t-interval of the mean of paired differences
# (std and interval are nan for n < 2).
def paired_stats(diffs: Sequence[float]) -> tuple[float, float, int, float]:
    n = len(diffs)
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else math.nan
    ci = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return mean, std, n, float(ci)


# Welch's test of mean(a) - mean(b) from means, stds and counts: (difference, 95% half-width, p).
def welch_from_stats(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int
                     ) -> tuple[float, float, float]:
    va, vb = std_a ** 2 / n_a, std_b ** 2 / n_b
    diff = mean_a - mean_b
    if va + vb == 0:
        return diff, 0.0, 0.0 if diff else 1.0
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    p = stats.ttest_ind_from_stats(mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var=False).pvalue
    return diff, float(stats.t.ppf(0.975, df) * math.sqrt(va + vb)), float(p)


# A selector "KEY=VALUE[,KEY=VALUE]" as a mapping (values read as YAML scalars: 1.0, true, hard).
def parse_selector(text: str) -> dict[str, Any]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{part!r} is not KEY=VALUE; e.g. method=dimo,relaxation=hard")
        out[key.strip()] = yaml.safe_load(value.strip())
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a) == list(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else False
    if a is None or (isinstance(a, float) and a != a):
        return b is None
    return a == b


# The rows of the table matching every key of a selector (axes or `<stage>.<field>` parameters).
def select(df: pd.DataFrame, selector: Mapping[str, Any]) -> pd.DataFrame:
    unknown = [k for k in selector if k not in df.columns]
    if unknown:
        raise KeyError(f"selector key(s) {', '.join(unknown)} are not columns of the results table; allowed: "
                       f"{', '.join(AXES)} or a parameter <stage>.<field> of the runs")
    mask = pd.Series(True, index=df.index)
    for key, value in selector.items():
        mask &= df[key].map(lambda v, value=value: _same(v, value))
    return df[mask]


def _values(rows: pd.DataFrame) -> dict[int | None, float]:
    return {(None if s != s or s is None else int(s)): float(v) for s, v in zip(rows["seed"], rows["value"])
            if v == v and math.isfinite(v)}


def _compare(teacher: str, label: str, ref_label: str, metric: str, higher: bool, treat: pd.DataFrame,
             ref: pd.DataFrame) -> Comparison:
    base = dict(teacher=teacher, label=label, reference=ref_label, metric=metric, higher_is_better=higher)
    reasons = sorted({m for p in treat["protocol"] for q in ref["protocol"] if (m := protocol_mismatch(p, q))})
    a, b = _values(treat), _values(ref)
    if reasons:
        return Comparison(**base, test="", diff=None, ci95=None, p_value=None, n=len(a), n_ref=len(b),
                          note="not compared: different protocols (" + "; ".join(reasons) + ")")
    stored = ref.iloc[0]
    if len(ref) == 1 and stored["kind"] == "baseline" and stored["std"] == stored["std"] and stored["std"] is not None \
            and (stored["n"] or 0) > 1 and len(a) > 1:
        sa = pd.Series(list(a.values()))
        diff, ci, p = welch_from_stats(sa.mean(), sa.std(), len(sa), float(stored["value"]), float(stored["std"]),
                                       int(stored["n"]))
        return Comparison(**base, test="Welch t (mean/std/n)", diff=diff, ci95=ci, p_value=p, n=len(sa),
                          n_ref=int(stored["n"]))
    if None not in a and set(a) == set(b) and len(a) > 1:
        seeds = sorted(a)
        mean, _, n, ci = paired_stats([a[s] - b[s] for s in seeds])
        p = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
        return Comparison(**base, test="paired t", diff=mean, ci95=ci, p_value=p, n=n, n_ref=n)
    if len(a) > 1 and len(b) > 1:
        sa, sb = pd.Series(list(a.values())), pd.Series(list(b.values()))
        diff, ci, p = welch_from_stats(sa.mean(), sa.std(), len(sa), sb.mean(), sb.std(), len(sb))
        return Comparison(**base, test="Welch t", diff=diff, ci95=ci, p_value=p, n=len(sa), n_ref=len(sb))
    diff = (sum(a.values()) / len(a) - sum(b.values()) / len(b)) if a and b else None
    return Comparison(**base, test="", diff=diff, ci95=None, p_value=None, n=len(a), n_ref=len(b),
                      note="no test: fewer than two values on a side")


# Every run group of each teacher against the teacher's reference rows (`reference` selects runs or
# stored baselines of the table), per metric; with `within` (axes or parameters), each run is
# compared with the reference that shares its values of those. A run with no reference is skipped.
def compare(df: pd.DataFrame, reference: Mapping[str, Any], within: Sequence[str] = ()) -> list[Comparison]:
    runs = final_runs(df)
    pool = pd.concat([runs, df[df["kind"] == "baseline"]])
    refs = select(pool, reference)
    keys = ["teacher", *within]
    out = []
    for key, ref_rows in refs.groupby(keys, sort=True, dropna=False):
        teacher = key[0] if isinstance(key, tuple) else key
        scope = select(runs, dict(zip(keys, key if isinstance(key, tuple) else (key,))))
        ref_groups = set(ref_rows["group"])
        ref_label = " / ".join(sorted({f"{lb} [{src}]" if k == "baseline" else lb
                                       for lb, src, k in zip(ref_rows["label"], ref_rows["source"], ref_rows["kind"])}))
        ambiguous = "" if len(ref_groups) == 1 else (
            f"not compared: the reference matches {len(ref_groups)} settings ({ref_label}); add KEY=VALUE pairs "
            f"until it names one")
        for group, treat in scope[~scope["group"].isin(ref_groups)].groupby("group", sort=False):
            label, position = treat["label"].iloc[0], treat["matrix_order"].iloc[0]
            for metric, t in treat.groupby("metric", sort=True):
                r = ref_rows[ref_rows["metric"] == metric]
                higher = bool(t["higher_is_better"].iloc[0])
                if ambiguous and not r.empty:
                    out.append(Comparison(teacher, label, ref_label, metric, higher, "", None, None, None,
                                          len(t), len(r), ambiguous, position))
                elif not r.empty:
                    out.append(replace(_compare(teacher, label, ref_label, metric, higher, t, r), position=position))
    return sorted(out, key=lambda c: (c.teacher, _order(c), c.metric))


# Where a comparison stands among its teacher's: in the grid's matrix order, then by label.
def _order(c: Comparison) -> tuple:
    return order_key("run", None, c.label, position=c.position)


# A Markdown table per teacher: one row per compared label, one column per metric, each cell the
# difference with its 95% interval, the test and n; bold where the interval excludes 0.
def render_markdown(comparisons: Sequence[Comparison], reference: Mapping[str, Any]) -> str:
    if not comparisons:
        return ""
    selector = ",".join(f"{k}={v}" for k, v in reference.items())
    out = [f"Each run against the reference `{selector}` of its teacher: run − reference, the mean "
           "difference ± the half-width of its 95% interval, then the test (paired t by seed where both "
           "sides have the same seeds, Welch t otherwise) and n (run / reference). **bold**: the interval "
           "excludes 0. Numbers under different protocols are not compared.", ""]
    notes: list[str] = []
    for teacher in sorted({c.teacher for c in comparisons}):
        mine = [c for c in comparisons if c.teacher == teacher]
        metrics = sorted({c.metric for c in mine})
        arrows = {c.metric: "↑" if c.higher_is_better else "↓" for c in mine}
        out += [f"### {teacher}", "",
                "| run − reference | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |",
                "|---|" + "---:|" * len(metrics)]
        for label, ref in dict.fromkeys((c.label, c.reference) for c in sorted(mine, key=_order)):
            cells = []
            for m in metrics:
                c = next((x for x in mine if x.label == label and x.reference == ref and x.metric == m), None)
                if c is None:
                    cells.append("–")
                elif not c.test:
                    if c.note not in notes:
                        notes.append(c.note)
                    diff = f"{c.diff:+.4g} " if c.diff is not None else ""
                    cells.append(f"{diff}[{notes.index(c.note) + 1}]")
                else:
                    text = f"{c.diff:+.4g} ± {c.ci95:.2g} ({c.test}, n={c.n}/{c.n_ref})"
                    cells.append(f"**{text}**" if c.beyond_noise else text)
            out.append(f"| {label} − {ref} | " + " | ".join(cells) + " |")
        out.append("")
    out += [f"[{i}] {t}  " for i, t in enumerate(notes, start=1)]
    return "\n".join(out) + "\n"
