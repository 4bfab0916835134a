"""Plots (PNG and PDF, matplotlib Agg) from the flat results table and the records.

- `plot_relaxations`: per teacher and metric, the one-step methods side by side, every seed a
  point and the mean a bar;
- `plot_steps`: per teacher and metric, the metric against the number of sampling steps: the
  teacher's K-step curve, the one-step students as points at 1 step, references as lines;
- `plot_curves`: per teacher and curve, the values recorded during training, a line per run;
- `plot_best_of_n`: per teacher and metric, the metric against the best-of-N candidates N, a line
  per number of TTEO iterations (the Soft-Di[M]O poster's test-time scaling figure);
- `sample_pages`: per grid, pages with the sample grid PNG of each run.
Every function returns the files it wrote; colours are fixed per method label.
"""
from __future__ import annotations

import hashlib
import math
import re
import statistics
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.results import ResultRow, method_label  # noqa: E402

FORMATS = ("png", "pdf")
SAMPLES_PER_PAGE = 12
MAX_LABELS = 24                        # methods drawn per figure; the tables hold every one
_PALETTE = plt.get_cmap("tab10").colors


# A colour that depends only on the label (stable across plots and reports).
def color_of(label: str) -> Any:
    return _PALETTE[int(hashlib.sha1(label.encode()).hexdigest(), 16) % len(_PALETTE)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _save(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _arrow(higher: bool) -> str:
    return "higher is better" if higher else "lower is better"


# The labels a figure draws (the first MAX_LABELS in order) and a title note if some are left out.
def _capped(labels: list[str]) -> tuple[list[str], str]:
    if len(labels) <= MAX_LABELS:
        return labels, ""
    return labels[:MAX_LABELS], f"\nfirst {MAX_LABELS} of {len(labels)} methods; all are in the tables"

#----------------------------------------------------------------------------


# One-step methods compared per metric: each seed a point, the mean a bar.
def plot_relaxations(rows: Sequence[ResultRow], out_dir: Path) -> list[Path]:
    runs = [r for r in rows if r.kind == "run" and r.relaxation != "none" and r.value is not None]
    by_key: dict[tuple[str, str], list[ResultRow]] = defaultdict(list)
    for r in runs:
        by_key[(r.teacher, r.metric)].append(r)
    paths = []
    for (teacher, metric), rs in sorted(by_key.items()):
        labels, note = _capped(sorted({r.label for r in rs}))
        index = {label: i for i, label in enumerate(labels)}
        values: dict[str, list[float]] = defaultdict(list)
        for r in rs:
            if r.label in index:
                values[r.label].append(r.value)
        xs, ys, colors = [], [], []
        for label in labels:
            v = values[label]
            xs += [index[label] + (j - (len(v) - 1) / 2) * min(0.08, 0.5 / len(v)) for j in range(len(v))]
            ys += v
            colors += [color_of(label)] * len(v)
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * min(len(labels), 20), 3.2))
        ax.bar(range(len(labels)), [statistics.fmean(values[lb]) for lb in labels],
               color=[color_of(lb) for lb in labels], alpha=0.35, width=0.6)
        ax.scatter(xs, ys, c=colors, zorder=3, s=18)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        ax.set_ylabel(metric)
        ax.set_title(f"{teacher}: {metric} ({_arrow(rs[0].higher_is_better)}), one point per seed"
                     f"{note}", fontsize=9)
        paths += _save(fig, out_dir, f"relaxations_{_slug(teacher)}_{_slug(metric)}")
    return paths


# Metric vs sampling steps: a K-step curve per sampler method, one-step points, reference lines.
def plot_steps(rows: Sequence[ResultRow], out_dir: Path) -> list[Path]:
    runs = [r for r in rows if r.kind == "run" and r.value is not None]
    by_key: dict[tuple[str, str], list[ResultRow]] = defaultdict(list)
    for r in runs:
        by_key[(r.teacher, r.metric)].append(r)
    paths = []
    for (teacher, metric), rs in sorted(by_key.items()):
        multi = [r for r in rs if r.steps is not None and r.relaxation == "none"]
        if len({r.steps for r in multi}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for method in sorted({r.method for r in multi}):
            curve: dict[int, list[float]] = defaultdict(list)
            for r in multi:
                if r.method == method:
                    curve[r.steps].append(r.value)
            ks = sorted(curve)
            ax.plot(ks, [statistics.fmean(curve[k]) for k in ks], "-o", color=color_of(method),
                    label=f"{method} (mean over seeds)", zorder=2)
            for k in ks:
                ax.scatter([k] * len(curve[k]), curve[k], color="gray", s=10, zorder=3)
        one_step: dict[str, list[float]] = defaultdict(list)
        references: dict[str, list[float]] = defaultdict(list)
        for r in rs:
            if r.steps == 1 and r.relaxation != "none":
                one_step[r.label].append(r.value)
            elif r.steps is None:
                references[r.label].append(r.value)
        students, note = _capped(sorted(one_step))
        for label in students:
            ax.scatter([1] * len(one_step[label]), one_step[label], marker="*", s=70,
                       color=color_of(label), label=label, zorder=4)
        for label in _capped(sorted(references))[0]:
            ax.axhline(statistics.fmean(references[label]), ls="--", lw=1, color=color_of(label),
                       label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(metric)
        ax.set_title(f"{teacher}: {metric} vs steps ({_arrow(rs[0].higher_is_better)}){note}",
                     fontsize=9)
        ax.legend(fontsize=7)
        paths += _save(fig, out_dir, f"steps_{_slug(teacher)}_{_slug(metric)}")
    return paths


# Values recorded during training (`record["curves"]`), a line per run.
def plot_curves(records: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    by_key: dict[tuple[str, str], list[tuple[str, list]]] = defaultdict(list)
    for rec in records:
        for name, points in (rec.get("curves") or {}).items():
            if points:
                by_key[(rec["spec"]["teacher"], name)].append((method_label(rec["spec"]), points))
    paths = []
    for (teacher, name), lines in sorted(by_key.items()):
        fig, ax = plt.subplots(figsize=(5, 3.4))
        shown: set[str] = set()
        keep, note = _capped(sorted({label for label, _ in lines}))
        for label, points in sorted((x for x in lines if x[0] in keep), key=lambda x: x[0]):
            xs = [p[0] for p in points]
            ys = [p[1] if p[1] is not None else math.nan for p in points]
            ax.plot(xs, ys, color=color_of(label), lw=1, alpha=0.8,
                    label=label if label not in shown else None)
            shown.add(label)
        ax.set_xlabel("training step")
        ax.set_ylabel(name)
        ax.set_title(f"{teacher}: {name} during training{note}", fontsize=9)
        ax.legend(fontsize=7)
        paths += _save(fig, out_dir, f"curves_{_slug(teacher)}_{_slug(name)}")
    return paths


# Metric vs best-of-N candidates N, a line (mean over seeds, seeds as points) per TTEO
# iteration count, for runs of one method label that vary `sample.best_of_n`.
def plot_best_of_n(records: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    points: dict[tuple[str, str], dict[tuple[str, int], dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    higher: dict[str, bool] = {}
    for rec in {r["run_id"]: r for r in records}.values():
        params = rec["spec"].get("params", {})
        if "sample.best_of_n" not in params:
            continue
        line = (method_label(rec["spec"]), int(params.get("sample.tteo_steps", 0)))
        for metric, m in rec.get("metrics", {}).items():
            if m.get("value") is not None and math.isfinite(m["value"]):
                points[(rec["spec"]["teacher"], metric)][line][int(params["sample.best_of_n"])].append(m["value"])
                higher[metric] = bool(m.get("higher_is_better", False))
    paths = []
    for (teacher, metric), lines in sorted(points.items()):
        if len({n for curve in lines.values() for n in curve}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for (label, k), curve in sorted(lines.items()):
            ns = sorted(curve)
            name = f"{label}, TTEO x{k}" if k else f"{label}, no TTEO"
            ax.plot(ns, [statistics.fmean(curve[n]) for n in ns], "-o", color=color_of(name), label=name)
            for n in ns:
                ax.scatter([n] * len(curve[n]), curve[n], color=color_of(name), s=8, alpha=0.5)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("best-of-N candidates N")
        ax.set_ylabel(metric)
        ax.set_title(f"{teacher}: {metric} vs N ({_arrow(higher[metric])})", fontsize=9)
        ax.legend(fontsize=7)
        paths += _save(fig, out_dir, f"best_of_n_{_slug(teacher)}_{_slug(metric)}")
    return paths


# Pages of sample grids: every run of a grid with its samples.png, titled by its description.
def sample_pages(records: Sequence[Mapping[str, Any]], results_root: Path, out_dir: Path
                 ) -> list[Path]:
    from PIL import Image
    by_grid: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for rec in sorted(records, key=lambda r: (r["grid"], r.get("description", ""), r["run_id"])):
        png = (rec.get("samples") or {}).get("grid_png")
        path = results_root / rec["grid"] / rec["run_id"] / png if png else None
        if path is not None and path.is_file():
            by_grid[rec["grid"]].append((f"{rec.get('description') or rec['run_id']}\n"
                                         f"{rec['run_id']} ({rec['status']})", path))
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
            paths += _save(fig, out_dir, f"samples_{_slug(grid)}_p{page}")
    return paths
