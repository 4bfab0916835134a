"""The report's figures, laid out as the papers' (PNG and vector PDF; functions of the results table,
`harness.store.results`), one figure per teacher with one panel per metric:

- `figure_methods`: every method of the teacher side by side, each seed a point and the mean a
  horizontal bar (the relaxation / refinement comparison);
- `figure_steps`: the metric against the number of sampling steps: the teacher's K-step curve
  (mean over seeds, seeds as points), the one-step methods as points at one step, references
  without steps as horizontal lines, and stored baselines (the papers', the mini reference) as
  open markers where their protocol matches the runs';
- `figure_curves`: the values recorded during training, a line per run.

Colours come from one `plots.Style` per report, so a method has the same colour in every figure;
the labels are the tables' row labels. `metrics` chooses and orders the panels.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from harness.contracts.protocol import protocol_mismatch
from harness.report.plots import Style, capped, curve_name, plt, points, reference_label, save_figure, slug
from harness.store.results import final_runs, labels_in_order

PANEL_W, PANEL_H = 3.6, 2.9                  # inches per panel
MAX_COLUMNS = 3                               # panels per row

#----------------------------------------------------------------------------


def _panels(n: int, extra_h: float = 0.0) -> tuple[Any, list[Any]]:
    cols = min(MAX_COLUMNS, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_W * cols, PANEL_H * rows + extra_h), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def _arrow(higher: bool) -> str:
    return "↑" if higher else "↓"


# The metrics of some rows in the order of `metrics` (those present), or sorted.
def _chosen(present: Sequence[str], metrics: Sequence[str] | None) -> list[str]:
    if metrics:
        return [m for m in metrics if m in set(present)]
    return sorted(set(present))


def _legend(fig: Any, axes: list[Any]) -> None:
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)),
                   fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.0))


def _finish(fig: Any, title: str, legend_rows: int) -> None:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05 + 0.035 * legend_rows, 1, 0.96))


# The final finite values of runs, per teacher.
def _per_teacher(df: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    runs = final_runs(df)
    yield from runs[runs["value"].notna()].groupby("teacher", sort=True)


#----------------------------------------------------------------------------


# Per teacher, one panel per metric: each method a column of points (its seeds) with its mean as a
# bar across them. Returns the files written (methods_<teacher>.png / .pdf).
def figure_methods(df: pd.DataFrame, out_dir: Path, style: Style, metrics: Sequence[str] | None = None
                   ) -> list[Path]:
    paths: list[Path] = []
    for teacher, rs in _per_teacher(df):
        chosen = _chosen(list(rs["metric"]), metrics)
        if not chosen:
            continue
        labels, note = capped(labels_in_order(rs))
        fig, axes = _panels(len(chosen), extra_h=0.25 * max(len(lb) for lb in labels) / 10)
        for ax, metric in zip(axes, chosen):
            m = rs[rs["metric"] == metric]
            higher = bool(m["higher_is_better"].iloc[0])
            for i, label in enumerate(labels):
                v = points(m[m["label"] == label])
                if not v:
                    continue
                xs = [i + (j - (len(v) - 1) / 2) * min(0.1, 0.5 / len(v)) for j in range(len(v))]
                ax.scatter(xs, v, s=14, color=style.color(label), zorder=3)
                ax.hlines(statistics.fmean(v), i - 0.3, i + 0.3, color=style.color(label), lw=2, zorder=2)
            ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=7)
            ax.set_xlim(-0.6, len(labels) - 0.4)
            optimised = "\n(optimised by some runs: not independent)" if m["optimised"].any() else ""
            ax.set_title(f"{metric} {_arrow(higher)}{optimised}", fontsize=9)
            ax.tick_params(axis="y", labelsize=7)
            ax.grid(axis="y", alpha=0.3)
        _finish(fig, f"{teacher}: every method, one point per seed, bar = mean{note}", 0)
        paths += save_figure(fig, out_dir, f"methods_{slug(teacher)}")
    return paths


# The stored baselines of one teacher and metric whose protocol matches every protocol of the runs,
# as (label, source, steps, mean value).
def _reference_points(df: pd.DataFrame, teacher: str, metric: str, run_protocols: Sequence[dict]
                      ) -> list[tuple[str, str, int | None, float]]:
    bases = df[(df["kind"] == "baseline") & (df["teacher"] == teacher) & (df["metric"] == metric)]
    out = []
    for _, g in bases.groupby("group", sort=False):
        b = g.iloc[0]
        if any(protocol_mismatch(p, b["protocol"]) is not None for p in run_protocols):
            continue
        steps = None if b["steps"] != b["steps"] or b["steps"] is None else int(b["steps"])
        out.append((str(b["label"]), str(b["source"]), steps, float(g["value"].mean())))
    return out


# Per teacher with a multi-step sampler among runs of at least two step counts, one panel per
# metric: the metric against the sampling steps (log scale). Returns the files written (steps_<teacher>.png / .pdf).
def figure_steps(df: pd.DataFrame, out_dir: Path, style: Style, metrics: Sequence[str] | None = None
                 ) -> list[Path]:
    paths: list[Path] = []
    for teacher, rs in _per_teacher(df):
        multi = rs[rs["steps"].notna() & (rs["relaxation"] == "none")]
        chosen = _chosen(list(multi["metric"]), metrics)
        if multi.empty or rs["steps"].nunique() < 2 or not chosen:
            continue
        fig, axes = _panels(len(chosen))
        for ax, metric in zip(axes, chosen):
            m = rs[rs["metric"] == metric]
            for method, curve_rows in multi[multi["metric"] == metric].groupby("method", sort=True):
                curve = {int(k): points(g) for k, g in curve_rows.groupby("steps")}
                ks = sorted(curve)
                name = curve_name(method)
                ax.plot(ks, [statistics.fmean(curve[k]) for k in ks], "-", color=style.color(name), label=name,
                        zorder=2)
                for k in ks:
                    ax.scatter([k] * len(curve[k]), curve[k], color=style.color(name), s=10, zorder=3)
            one_step = m[(m["steps"] == 1) & (m["relaxation"] != "none")]
            for label in capped(labels_in_order(one_step))[0]:
                v = points(one_step[one_step["label"] == label])
                ax.scatter([1] * len(v), v, marker="*", s=60, color=style.color(label), label=label, zorder=4)
            plain = m[m["steps"].isna()]
            for label in capped(labels_in_order(plain))[0]:
                ax.axhline(statistics.fmean(points(plain[plain["label"] == label])), ls="--", lw=1,
                           color=style.color(label), label=label)
            for label, source, steps, value in _reference_points(df, teacher, metric, list(m["protocol"])):
                color = style.reference_color(label, source)
                if steps is None:
                    ax.axhline(value, ls=":", lw=1, color=color, label=reference_label(label, source))
                else:
                    ax.scatter([steps], [value], marker="D", s=36, facecolors="none", edgecolors=color,
                               label=reference_label(label, source), zorder=5)
            ax.set_xscale("log", base=2)
            ticks = sorted({1, *(int(k) for k in multi["steps"])})
            ax.set_xticks(ticks, [str(k) for k in ticks])
            ax.minorticks_off()
            ax.set_xlabel("sampling steps", fontsize=8)
            ax.set_title(f"{metric} {_arrow(bool(m['higher_is_better'].iloc[0]))}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        _legend(fig, axes)
        legend_rows = math.ceil(len({lb for ax in axes for lb in ax.get_legend_handles_labels()[1]}) / 4)
        _finish(fig, f"{teacher}: metric vs sampling steps (teacher curve, one-step methods at 1; "
                     f"open diamonds: stored baselines under the same protocol)", legend_rows)
        paths += save_figure(fig, out_dir, f"steps_{slug(teacher)}")
    return paths


# Per teacher with curves, one panel per curve: its value against the training step, a line per
# run in its method's colour. Returns the files written (curves_<teacher>.png / .pdf).
def figure_curves(df: pd.DataFrame, out_dir: Path, style: Style, metrics: Sequence[str] | None = None
                  ) -> list[Path]:
    curves = df[(df["kind"] == "run") & df["train_step"].notna()]
    paths: list[Path] = []
    for teacher, rs in curves.groupby("teacher", sort=True):
        chosen = _chosen(list(rs["metric"]), metrics)
        if not chosen:
            continue
        keep, note = capped(labels_in_order(rs))
        fig, axes = _panels(len(chosen))
        for ax, name in zip(axes, chosen):
            c = rs[(rs["metric"] == name) & rs["label"].isin(keep)]
            shown: set[str] = set()
            for (label, _), line in c.groupby(["label", "run_id"], sort=True):
                line = line.sort_values("train_step")
                ax.plot(line["train_step"], line["value"], color=style.color(label), lw=1, alpha=0.85,
                        label=None if label in shown else label)
                shown.add(label)
            higher = c["higher_is_better"].dropna()
            ax.set_title(name + (f" {_arrow(bool(higher.iloc[0]))}" if len(higher) else ""), fontsize=9)
            ax.set_xlabel("training step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        _legend(fig, axes)
        _finish(fig, f"{teacher}: during training, a line per run{note}", math.ceil(len(keep) / 4))
        paths += save_figure(fig, out_dir, f"curves_{slug(teacher)}")
    return paths


# Every figure of the report, in the order the index shows them.
def report_figures(df: pd.DataFrame, out_dir: Path, style: Style, metrics: Sequence[str] | None = None
                   ) -> list[Path]:
    return (figure_methods(df, out_dir, style, metrics) + figure_steps(df, out_dir, style, metrics)
            + figure_curves(df, out_dir, style, metrics))

