"""Samples side by side: a page per teacher whose rows are fixed conditions and whose columns are the
methods, so that what differs along a row is the method alone.

Every run keeps its first images with their conditions (`harness.methods.images.save_condition_samples`).
Image i of a run is drawn for the teacher's evaluation condition i from a noise stream fixed by the
run's seed and i, whatever the method (`harness.methods.samples`), so the page takes, for one seed, one run
of each method and shows their images 0..rows-1: a class label is printed at the left of its row
with its name, a prompt under its row. A run without the file (recorded before runs kept it) is
left out and named in the page's footer.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from harness.grid.conditions import caption
from harness.methods.images import load_condition_samples
from harness.report.plots import capped, plt, save_figure, slug
from harness.store import CONDITION_SAMPLES_FILE
from harness.store.results import final_runs, order_key

ROWS = 10                                    # conditions per page
TILE_IN = 0.95                               # inches per image

#----------------------------------------------------------------------------


# The per-condition file of a run under the results root (a reused run: its own copy, else the
# original's), or None.
def condition_file(results_root: Path, grid: str, run_id: str, reused_from: Any) -> Path | None:
    candidates = [results_root / grid / run_id / CONDITION_SAMPLES_FILE]
    if isinstance(reused_from, str) and reused_from:
        candidates.append(results_root / reused_from / CONDITION_SAMPLES_FILE)
    return next((p for p in candidates if p.is_file()), None)


# The seed shown for a teacher: the one most method groups have a run with a file for (the
# smallest among equals), and one run per group of that seed in table order.
def choose_runs(runs: pd.DataFrame) -> tuple[int | None, list[pd.Series]]:
    with_file = runs[runs["file"].notna()]
    if with_file.empty:
        return None, []
    counts = with_file.groupby("seed")["group"].nunique()
    seed = min(counts.index[counts == counts.max()], key=lambda s: (s is None, s))
    chosen = with_file[with_file["seed"] == seed].drop_duplicates("group")
    ordered = sorted(chosen.itertuples(index=False),
                     key=lambda r: order_key("run", r.steps, r.label, position=r.matrix_order))
    return seed, [pd.Series(r._asdict()) for r in ordered]


# Draw one teacher's page: rows = conditions, columns = the chosen runs' images.
def _page(teacher: str, seed: Any, columns: list[tuple[str, np.ndarray, list[Any]]], missing: Sequence[str],
          mismatched: Sequence[str]) -> Any:
    rows = min(ROWS, min(len(images) for _, images, _ in columns))
    conditions = columns[0][2][:rows]
    prompts = any(isinstance(c, str) for c in conditions)
    n = len(columns)
    heights = [1.0, 0.32] * rows if prompts else [1.0] * rows
    label_w = 0.0 if prompts else 1.5
    head_h = 0.55 + 0.12 * max(len(textwrap.wrap(t, 16)) for t, _, _ in columns)
    fig = plt.figure(figsize=(label_w + TILE_IN * max(n, 3), head_h + TILE_IN * sum(heights) + 0.5))
    grid = fig.add_gridspec(len(heights), n, height_ratios=heights, hspace=0.05, wspace=0.05,
                            left=label_w / (label_w + TILE_IN * max(n, 3)) if label_w else 0.02, right=0.98,
                            top=1 - head_h / (head_h + TILE_IN * sum(heights) + 0.5), bottom=0.02)
    per_row = 2 if prompts else 1
    for r in range(rows):
        text = caption(teacher, conditions[r])
        for c, (title, images, _) in enumerate(columns):
            ax = fig.add_subplot(grid[r * per_row, c])
            ax.imshow(images[r], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("\n".join(textwrap.wrap(title, 16)), fontsize=7)
            if c == 0 and not prompts:
                ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=7)
        if prompts:
            ax = fig.add_subplot(grid[r * per_row + 1, :])
            ax.axis("off")
            ax.text(0.5, 0.75, f"“{text}”", ha="center", va="center", fontsize=7, transform=ax.transAxes)
    notes = [f"seed {_seed_text(seed)}: image i of every column has condition i and the same per-image noise stream"]
    if mismatched:
        notes.append("conditions differ from the first column's in: " + ", ".join(mismatched))
    if missing:
        notes.append(f"not shown (no run of seed {seed} kept per-condition samples): " + ", ".join(missing))
    fig.suptitle(f"{teacher}: the same conditions (rows) across methods (columns)", fontsize=9)
    fig.text(0.5, 0.003, "\n".join(textwrap.fill(t, 140) for t in notes), ha="center", va="bottom", fontsize=6)
    return fig


# One page per teacher of the runs in the results table (PNG and PDF under `out_dir`); returns the
# files written. Teachers without any run that kept per-condition samples get no page.
def side_by_side_pages(df: pd.DataFrame, results_root: Path, out_dir: Path) -> list[Path]:
    runs = final_runs(df).drop_duplicates("run_id").copy()
    if runs.empty:
        return []
    runs["file"] = [condition_file(results_root, g, r, u)
                    for g, r, u in zip(runs["grid"], runs["run_id"], runs["reused_from"])]
    paths: list[Path] = []
    for teacher, trs in runs.groupby("teacher", sort=True):
        seed, chosen = choose_runs(trs)
        if not chosen:
            continue
        labels, _ = capped([r["label"] for r in chosen])
        columns = []
        for r in chosen:
            if r["label"] in labels:
                images, conditions, _ = load_condition_samples(r["file"])
                columns.append((r["label"], images, conditions))
        first = columns[0][2]
        mismatched = [t for t, _, conds in columns[1:] if conds[:ROWS] != first[:len(conds[:ROWS])]]
        have = {r["label"] for r in chosen}
        missing = sorted(set(trs["label"]) - have)
        fig = _page(str(teacher), seed, columns, missing, mismatched)
        paths += save_figure(fig, out_dir, f"side_by_side_{slug(str(teacher))}")
    return paths


def _seed_text(seed: Any) -> str:
    return str(int(seed)) if isinstance(seed, (int, float)) and seed == seed else str(seed)
