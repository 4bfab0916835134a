"""Plots (PNG and PDF, matplotlib Agg): functions of the results table (`harness.store.results`). The
report draws the multi-panel figures of `harness.report.figures`; these one-figure-per-metric plots are
drawn with `--per-metric-plots`:

- `plot_relaxations`: per teacher and metric, the one-step methods side by side, every seed a
  point and the mean a bar;
- `plot_steps`: per teacher and metric, the metric against the number of sampling steps: the
  teacher's K-step curve, the one-step students as points at 1 step, references as lines;
- `plot_curves`: per teacher and curve, the values recorded during training, a line per run;
- `plot_best_of_n`: per teacher and metric, the metric against the best-of-N candidates N, a line
  per number of TTEO iterations (the Soft-Di[M]O poster's test-time scaling figure; always drawn);
- `sample_pages`: per grid, pages with the sample grid PNG of each run.
Every function returns the files it wrote; colours come from one `Style` per report, so a method
has the same colour in every figure.
"""
from __future__ import annotations

import math
import re
import statistics
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import pandas as pd  # noqa: E402

from harness.store import SAMPLES_FILE  # noqa: E402
from harness.store.results import final_runs, labels_in_order, order_key  # noqa: E402
from softdimo.files import atomic_write  # noqa: E402

FORMATS = ("png", "pdf")
SAMPLES_PER_PAGE = 12
MAX_LABELS = 24                        # methods drawn per figure; the tables hold every one


# The colour of every label of a report: fixed once, in table order, from all the report's
# labels, so that a method has the same colour in every figure; a label first seen later takes
# the next free colour (deterministically, in the order of the calls).
class Style:
    def __init__(self, labels: Iterable[str] = ()) -> None:
        self.colors: dict[str, Any] = {}
        for label in labels:
            self.color(label)

    # The colour of a label (tab10, then tab20's lighter shades, then cycling).
    def color(self, label: str) -> Any:
        if label not in self.colors:
            palette = plt.get_cmap("tab10").colors + plt.get_cmap("tab20").colors[1::2]
            self.colors[label] = palette[len(self.colors) % len(palette)]
        return self.colors[label]

    # A stored baseline's colour: that of the runs of the same label (the same method; figures mark
    # baselines with other symbols), else its own.
    def reference_color(self, label: str, source: str) -> Any:
        return self.colors[label] if label in self.colors else self.color(reference_label(label, source))

    # The style of a results table: the K-step curves of its multi-step methods, its run labels in
    # table order, then the labels of its teachers' stored baselines that no run has.
    @classmethod
    def of(cls, df: pd.DataFrame) -> "Style":
        runs = final_runs(df)
        multi = runs[runs["steps"].notna() & (runs["relaxation"] == "none") & (runs["steps"] > 1)]
        names = [curve_name(m) for m in sorted(set(multi["method"]))]
        names += labels_in_order(runs)
        bases = df[(df["kind"] == "baseline") & df["teacher"].isin(set(runs["teacher"]))].drop_duplicates("group")
        names += [reference_label(lb, src) for _, lb, src in sorted(
            (order_key("baseline", _steps(s), lb), lb, src) for lb, src, s in zip(bases["label"], bases["source"], bases["steps"])
            if lb not in set(names))]
        return cls(names)


# The name of a multi-step method's curve in figures.
def curve_name(method: str) -> str:
    return f"{method}, K steps"


def _steps(value: Any) -> int | None:
    return None if value is None or value != value else int(value)


# How a stored baseline is named in figures: its label and its source.
def reference_label(label: str, source: str) -> str:
    return f"{label} [{source}]"


# A file-name-safe version of a text.
def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


# Save a figure as PNG and PDF (vector) under `out_dir`; returns both paths.
def save_figure(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = out_dir / f"{stem}.{ext}"
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=150, bbox_inches="tight", metadata=_METADATA[ext]))
        paths.append(path)
    plt.close(fig)
    return paths


_METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None}}


# "higher is better" / "lower is better".
def direction(higher: bool) -> str:
    return "higher is better" if higher else "lower is better"


# The labels a figure draws (the first MAX_LABELS in order) and a title note if some are left out.
def capped(labels: list[str]) -> tuple[list[str], str]:
    if len(labels) <= MAX_LABELS:
        return labels, ""
    return labels[:MAX_LABELS], f"\nfirst {MAX_LABELS} of {len(labels)} methods; all are in the tables"

#----------------------------------------------------------------------------


# The finite values of some rows of the results table.
def points(rows: pd.DataFrame) -> list[float]:
    return [float(v) for v in rows["value"] if v == v]


# One-step methods compared per metric: each seed a point, the mean a bar.
def plot_relaxations(df: pd.DataFrame, out_dir: Path, style: Style | None = None) -> list[Path]:
    style = style or Style.of(df)
    runs = final_runs(df)
    runs = runs[(runs["relaxation"] != "none") & runs["value"].notna()]
    paths = []
    for (teacher, metric), rs in runs.groupby(["teacher", "metric"], sort=True):
        labels, note = capped(labels_in_order(rs))
        values = {label: points(rs[rs["label"] == label]) for label in labels}
        xs, ys, colors = [], [], []
        for i, label in enumerate(labels):
            v = values[label]
            xs += [i + (j - (len(v) - 1) / 2) * min(0.08, 0.5 / len(v)) for j in range(len(v))]
            ys += v
            colors += [style.color(label)] * len(v)
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * min(len(labels), 20), 3.2))
        ax.bar(range(len(labels)), [statistics.fmean(values[lb]) for lb in labels],
               color=[style.color(lb) for lb in labels], alpha=0.35, width=0.6)
        ax.scatter(xs, ys, c=colors, zorder=3, s=18)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        ax.set_ylabel(metric)
        ax.set_title(f"{teacher}: {metric} ({direction(bool(rs['higher_is_better'].iloc[0]))}), one point per seed"
                     f"{note}", fontsize=9)
        paths += save_figure(fig, out_dir, f"relaxations_{slug(teacher)}_{slug(metric)}")
    return paths


# Metric vs sampling steps: a K-step curve per sampler method, one-step points, reference lines.
def plot_steps(df: pd.DataFrame, out_dir: Path, style: Style | None = None) -> list[Path]:
    style = style or Style.of(df)
    runs = final_runs(df)
    runs = runs[runs["value"].notna()]
    paths = []
    for (teacher, metric), rs in runs.groupby(["teacher", "metric"], sort=True):
        multi = rs[rs["steps"].notna() & (rs["relaxation"] == "none")]
        if multi["steps"].nunique() < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for method, m in multi.groupby("method", sort=True):
            curve = {int(k): points(g) for k, g in m.groupby("steps")}
            ks = sorted(curve)
            ax.plot(ks, [statistics.fmean(curve[k]) for k in ks], "-o", color=style.color(method),
                    label=f"{method} (mean over seeds)", zorder=2)
            for k in ks:
                ax.scatter([k] * len(curve[k]), curve[k], color="gray", s=10, zorder=3)
        one_step = rs[(rs["steps"] == 1) & (rs["relaxation"] != "none")]
        references = rs[rs["steps"].isna()]
        students, note = capped(labels_in_order(one_step))
        for label in students:
            v = points(one_step[one_step["label"] == label])
            ax.scatter([1] * len(v), v, marker="*", s=70, color=style.color(label), label=label, zorder=4)
        for label in capped(labels_in_order(references))[0]:
            ax.axhline(statistics.fmean(points(references[references["label"] == label])), ls="--", lw=1,
                       color=style.color(label), label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(metric)
        ax.set_title(f"{teacher}: {metric} vs steps ({direction(bool(rs['higher_is_better'].iloc[0]))}){note}",
                     fontsize=9)
        ax.legend(fontsize=7)
        paths += save_figure(fig, out_dir, f"steps_{slug(teacher)}_{slug(metric)}")
    return paths


# Values recorded during training (the curve rows), a line per run.
def plot_curves(df: pd.DataFrame, out_dir: Path, style: Style | None = None) -> list[Path]:
    style = style or Style.of(df)
    points = df[(df["kind"] == "run") & df["train_step"].notna()]
    paths = []
    for (teacher, name), rs in points.groupby(["teacher", "metric"], sort=True):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        shown: set[str] = set()
        keep, note = capped(labels_in_order(rs))
        for (label, _), line in rs[rs["label"].isin(keep)].groupby(["label", "run_id"], sort=True):
            line = line.sort_values("train_step")
            ax.plot(line["train_step"], line["value"], color=style.color(label), lw=1, alpha=0.8,
                    label=label if label not in shown else None)
            shown.add(label)
        ax.set_xlabel("training step")
        ax.set_ylabel(name)
        ax.set_title(f"{teacher}: {name} during training{note}", fontsize=9)
        ax.legend(fontsize=7)
        paths += save_figure(fig, out_dir, f"curves_{slug(teacher)}_{slug(name)}")
    return paths


# Metric vs best-of-N candidates N, a line (mean over seeds, seeds as points) per TTEO
# iteration count, for runs of one method label that vary `sample.best_of_n`.
def plot_best_of_n(df: pd.DataFrame, out_dir: Path, style: Style | None = None) -> list[Path]:
    style = style or Style.of(df)
    if "sample.best_of_n" not in df.columns:
        return []
    runs = final_runs(df)
    runs = runs[runs["sample.best_of_n"].notna() & runs["value"].notna()]
    paths = []
    for (teacher, metric), rs in runs.groupby(["teacher", "metric"], sort=True):
        if rs["sample.best_of_n"].nunique() < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.4))
        method = rs["method"].map(str) + " " + rs["relaxation"].map(str) + " " + rs["refinement"].map(str)
        for (line, k), g in rs.groupby([method, rs["sample.tteo_steps"].fillna(0).astype(int)], sort=True):
            curve = {int(n): points(c) for n, c in g.groupby("sample.best_of_n")}
            ns = sorted(curve)
            name = f"{g['label'].iloc[0].split(' (')[0]}, TTEO x{k}" if k else f"{g['label'].iloc[0].split(' (')[0]}, no TTEO"
            ax.plot(ns, [statistics.fmean(curve[n]) for n in ns], "-o", color=style.color(name), label=name)
            for n in ns:
                ax.scatter([n] * len(curve[n]), curve[n], color=style.color(name), s=8, alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("best-of-N candidates N")
        ax.set_ylabel(metric)
        ax.set_title(f"{teacher}: {metric} vs N ({direction(bool(rs['higher_is_better'].iloc[0]))})", fontsize=9)
        ax.legend(fontsize=7)
        paths += save_figure(fig, out_dir, f"best_of_n_{slug(teacher)}_{slug(metric)}")
    return paths


# Pages of sample grids: every run of a grid with its samples.png (under the results root),
# titled by its label and seed.
def sample_pages(df: pd.DataFrame, results_root: Path, out_dir: Path) -> list[Path]:
    from PIL import Image
    runs = final_runs(df).drop_duplicates("run_id").sort_values(["grid", "label", "seed", "run_id"])
    by_grid: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for grid, run_id, label, seed, status in zip(runs["grid"], runs["run_id"], runs["label"], runs["seed"],
                                                 runs["status"]):
        path = results_root / grid / run_id / SAMPLES_FILE
        if path.is_file():
            by_grid[grid].append((f"{label} s{seed}\n{run_id} ({status})", path))
    paths = []
    for grid, items in sorted(by_grid.items()):
        for page, start in enumerate(range(0, len(items), SAMPLES_PER_PAGE), start=1):
            chunk = items[start:start + SAMPLES_PER_PAGE]
            cols = min(4, len(chunk))
            rows = math.ceil(len(chunk) / cols)
            fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            for ax, (title, path) in zip(axes.flat, chunk):
                with Image.open(path) as im:
                    ax.imshow(im.convert("RGB"), interpolation="nearest")
                ax.set_title("\n".join(textwrap.fill(t, 44) for t in title.split("\n")), fontsize=7)
            paths += save_figure(fig, out_dir, f"samples_{slug(grid)}_p{page}")
    return paths
