"""Paper-style tables from the results table (`harness.store.results`): rows = methods, columns = metrics, one block per
teacher; runs as mean +- std over seeds with n; baselines beside them; a delta to the baseline of
the same method only where the protocols match, and a footnote saying why not where they do not.

`build_tables` is a pure function of rows; `select_metrics` chooses and orders the columns;
`render_markdown`, `render_latex` (booktabs, `harness.report.latex`: mean ± std only, best in bold, n and
the deltas in the caption and footnotes) and `render_csv` only format its result.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

from harness.contracts.protocol import protocol_mismatch
from harness.report.compare import select
from harness.report.latex import (TableNotes, TexLine, best_indices, booktabs_table, decimals_of, mean_pm, number,
                           tex_escape)
from harness.store.results import final_runs, order_key

MISSING = "–"

#----------------------------------------------------------------------------


# One cell: a run's mean +- std over seeds (or a baseline's value) and its footnotes.
@dataclass
class Cell:
    mean: float | None
    std: float | None = None
    n: int = 0
    diverged: int = 0                          # seeds whose value was not finite
    delta: float | None = None                 # mean - matching baseline (protocols match)
    delta_source: str = ""
    notes: list[int] = field(default_factory=list)  # footnote numbers
    optimised: bool = False                    # the runs optimised this metric's reward model


# One row of a block: a method label with a cell per metric.
@dataclass
class TableRow:
    label: str
    kind: str                                  # "run" or "baseline"
    source: str                                # grid(s) or baseline source
    steps: int | None
    cells: dict[str, Cell]
    position: int | None = None                # its place in the grid's matrix (runs)


# The rows of one teacher.
@dataclass
class Block:
    teacher: str
    metrics: list[str]
    higher_is_better: dict[str, bool]
    rows: list[TableRow]


# Every block and the footnotes they refer to.
@dataclass
class Tables:
    blocks: list[Block]
    footnotes: list[str]

#----------------------------------------------------------------------------


# Footnotes numbered in the order they are first added; the same text is one footnote.
class Notes:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1


def _order(row: TableRow) -> tuple:
    return order_key(row.kind, row.steps, row.label, row.source, row.position)


# Build the blocks from the results table: runs aggregated over seeds (final values only), with
# the baselines of the same teacher. The delta column is taken to the baseline of the same label,
# or, with `delta_to` (a selector of baseline rows), to the selected baseline of the same metric.
def build_tables(df: pd.DataFrame, delta_to: Mapping[str, Any] | None = None) -> Tables:
    notes = Notes()
    runs = final_runs(df)
    bases = df[df["kind"] == "baseline"]
    blocks = []
    for teacher, trows in runs.groupby("teacher", sort=True):
        metrics = sorted(trows["metric"].unique())
        hib = {m: bool(trows.loc[trows["metric"] == m, "higher_is_better"].iloc[0]) for m in metrics}
        block_protocols = {m: dict(zip(g["protocol_id"], g["protocol"])) for m, g in trows.groupby("metric")}
        tbases = bases[(bases["teacher"] == teacher) & bases["metric"].isin(metrics)]
        targets = select(tbases, delta_to) if delta_to else None
        groups = [group for _, group in trows.groupby("group", sort=False)]
        table_rows = [_run_row(group, notes) for group in groups]
        base_rows = [_baseline_row(group, block_protocols, notes) for _, group in tbases.groupby("group", sort=False)]
        for row, group in zip(table_rows, groups):
            _add_deltas(row, group, tbases if targets is None else targets, notes, by_label=targets is None)
        blocks.append(Block(teacher, metrics, hib, sorted(table_rows + base_rows, key=_order)))
    return Tables(blocks, notes.texts)


# Mean and sample standard deviation (n - 1); None where undefined.
def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    n = len(values)
    if n == 0:
        return None, None
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def _steps(value: Any) -> int | None:
    return None if value is None or value != value else int(value)


def _run_row(group: pd.DataFrame, notes: Notes) -> TableRow:
    cells = {}
    for metric, rs in group.groupby("metric", sort=False):
        values = [float(v) for v in rs["value"] if v == v and math.isfinite(v)]
        mean, std = mean_std(values)
        cell = Cell(mean, std, len(values), len(rs) - len(values), optimised=bool(rs["optimised"].any()))
        if cell.optimised:
            cell.notes.append(notes.add("(optimised): the run optimised this metric's own reward model "
                                        "(reward fine-tuning, TTEO or best-of-N selection); it is not an "
                                        "independent measure"))
        if cell.diverged:
            cell.notes.append(notes.add(f"{cell.diverged} of {len(rs)} seed(s) diverged "
                                        f"(value not finite); the mean is over the others"))
        if rs["protocol_id"].nunique() > 1:
            cell.notes.append(notes.add("seeds evaluated under different protocols ("
                                        + ", ".join(sorted(set(rs["protocol_id"]))) + ")"))
        cells[metric] = cell
    first = group.iloc[0]
    return TableRow(first["label"], "run", ", ".join(sorted(set(group["source"]))), _steps(first["steps"]), cells,
                    position=first["matrix_order"])


def _baseline_row(group: pd.DataFrame, block_protocols: dict, notes: Notes) -> TableRow:
    cells = {}
    for metric, rs in group.groupby("metric", sort=False):
        b = rs.iloc[0]
        if len(rs) > 1:                        # per-seed baseline rows: their mean and spread
            mean, std = mean_std([float(v) for v in rs["value"]])
            cell = Cell(mean, std, len(rs))
        else:
            cell = Cell(float(b["value"]), None if b["std"] != b["std"] else b["std"], int(b["n"] or 0)
                        if b["n"] == b["n"] and b["n"] is not None else 0)
        reasons = sorted({m for p in block_protocols.get(metric, {}).values()
                          if (m := protocol_mismatch(p, b["protocol"])) is not None})
        if reasons:
            cell.notes.append(notes.add(f"{b['source']}: {b['label']} ({metric}) is not comparable "
                                        f"with the runs above: {'; '.join(reasons)}"))
        cells[metric] = cell
    first = group.iloc[0]
    steps = _steps(first["steps"])
    label = f"{first['label']} [{first['source']}]"
    if steps is not None:
        label = f"{first['label']}, {steps} step{'s' if steps != 1 else ''} [{first['source']}]"
    return TableRow(label, "baseline", first["citation"] or first["source"], steps, cells)


# Delta to a baseline where protocols match: the baseline reporting the same method label (and
# steps), or with `by_label` False any of `bases` of the same metric (the first group).
def _add_deltas(row: TableRow, run_rows: pd.DataFrame, bases: pd.DataFrame, notes: Notes,
                by_label: bool = True) -> None:
    for metric, cell in row.cells.items():
        if cell.mean is None:
            continue
        match = bases[bases["metric"] == metric]
        if by_label:
            match = match[match["label"] == row.label]
            match = match[[s is None or s != s or row.steps is None or int(s) == row.steps for s in match["steps"]]]
        if match.empty:
            continue
        b = match.iloc[0]
        protocols = dict(zip(run_rows.loc[run_rows["metric"] == metric, "protocol_id"],
                             run_rows.loc[run_rows["metric"] == metric, "protocol"]))
        reasons = sorted({m for p in protocols.values() if (m := protocol_mismatch(p, b["protocol"])) is not None})
        if reasons:
            cell.notes.append(notes.add(f"no delta to {b['source']} ({b['citation'] or b['source']}): "
                                        f"{'; '.join(reasons)}"))
        else:
            base_mean = float(match.loc[match["group"] == b["group"], "value"].mean())
            cell.delta, cell.delta_source = cell.mean - base_mean, b["source"]

#----------------------------------------------------------------------------


# A number with 4 significant digits at most and no more than 3 decimals.
fmt = number


# x printed with the decimals of `ref` (a std like its mean).
def _fmt_like(x: float, ref: float) -> str:
    if ref == 0 or not math.isfinite(ref):
        return fmt(x)
    return number(x, decimals_of(ref))


# The text of one table cell: mean +- std (n), delta, footnote marks.
def cell_text(cell: Cell | None, kind: str, pm: str = "±", delta_sign: str = "Δ") -> str:
    if cell is None or cell.mean is None:
        text = MISSING if cell is None or not cell.diverged else "diverged"
    else:
        text = fmt(cell.mean)
        if cell.std is not None:
            text += f" {pm} {_fmt_like(cell.std, cell.mean)}"
        if kind == "run" or cell.n:
            text += f" (n={cell.n})"
        if cell.delta is not None:
            text += f" {delta_sign}{'+' if cell.delta >= 0 else '−'}{_fmt_like(abs(cell.delta), cell.mean)}"
        if cell.optimised:
            text += " (optimised)"
    if cell is not None and cell.notes:
        text += " " + "".join(f"[{n}]" for n in cell.notes)
    return text


def _header(metric: str, higher: bool, up: str = "↑", down: str = "↓") -> str:
    return f"{metric} {up if higher else down}"


# Markdown: one table per teacher block, then the footnotes.
def render_markdown(tables: Tables) -> str:
    out = []
    for block in tables.blocks:
        out.append(f"### Teacher: {block.teacher}\n")
        head = ["method", "steps"] + [_header(m, block.higher_is_better[m]) for m in block.metrics]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "|".join(["---"] * 2 + ["---:"] * len(block.metrics)) + "|")
        for row in block.rows:
            label = row.label if row.kind == "run" else f"*{row.label}*"
            cells = [cell_text(row.cells.get(m), row.kind).replace("|", "\\|") for m in block.metrics]
            steps = MISSING if row.steps is None else str(row.steps)
            out.append("| " + " | ".join([label.replace("|", "\\|"), steps] + cells) + " |")
        out.append("")
    if tables.footnotes:
        out.append("Runs: mean ± std over seeds (n = seeds); *italic* rows are baselines; Δ = run "
                   "mean minus the baseline of the same method, shown only where the evaluation "
                   "protocols match.\n")
        out += [f"[{i}] {t}  " for i, t in enumerate(tables.footnotes, start=1)]
        out.append("")
    return "\n".join(out)


# The tables with only `metrics` (in that order) in each block; blocks with none of them are left
# out.
def select_metrics(tables: Tables, metrics: Sequence[str] | None) -> Tables:
    if not metrics:
        return tables
    blocks = [Block(b.teacher, [m for m in metrics if m in b.metrics], b.higher_is_better, b.rows)
              for b in tables.blocks if any(m in b.metrics for m in metrics)]
    return Tables(blocks, tables.footnotes)


def _rankable(cell: Cell | None, kind: str) -> bool:
    # Runs and comparable baselines compete for bold; optimised values and baselines under other
    # protocols do not.
    return cell is not None and cell.mean is not None and not cell.optimised and (kind == "run" or not cell.notes)


def _seeds_phrase(block: Block) -> str:
    ns = {row.label: max((c.n for c in row.cells.values()), default=0) for row in block.rows if row.kind == "run"}
    if not ns:
        return ""
    if len(set(ns.values())) == 1:
        return f" Runs: mean $\\pm$ std over n = {next(iter(ns.values()))} seed(s) each."
    return " Runs: mean $\\pm$ std over seeds; n: " + "; ".join(
        f"{tex_escape(label)} {n}" for label, n in ns.items()) + "."


# LaTeX (booktabs): one table float per teacher block. Cells: mean ± std; the best value of each
# column in bold; n in the caption; footnotes (lettered) and the deltas under the tabular.
def render_latex(tables: Tables) -> str:
    out = ["% Generated by python -m harness.report; needs \\usepackage{booktabs} (and graphicx where a "
           "table is resized)."]
    for block in tables.blocks:
        notes = TableNotes(tables.footnotes)
        best = {m: best_indices([row.cells[m].mean if _rankable(row.cells.get(m), row.kind) else None
                                 for row in block.rows], block.higher_is_better[m]) for m in block.metrics}
        lines, deltas = [], []
        first_baseline = True
        for i, row in enumerate(block.rows):
            cells = []
            for m in block.metrics:
                c = row.cells.get(m)
                if c is None or c.mean is None:
                    text = "--" if c is None or not c.diverged else "diverged"
                else:
                    text = mean_pm(fmt(c.mean), None if c.std is None else _fmt_like(c.std, c.mean), i in best[m])
                    if c.delta is not None:
                        deltas.append(f"{tex_escape(row.label)} {tex_escape(m)} "
                                      f"{'+' if c.delta >= 0 else '-'}{_fmt_like(abs(c.delta), c.mean)} "
                                      f"({tex_escape(c.delta_source)})")
                cells.append(text + ("" if c is None else notes.mark(c.notes)))
            label = tex_escape(row.label) if row.kind == "run" else r"\textit{" + tex_escape(row.label) + "}"
            steps = "--" if row.steps is None else str(row.steps)
            lines.append(TexLine([label, steps] + cells, rule=row.kind == "baseline" and first_baseline))
            first_baseline = first_baseline and row.kind != "baseline"
        header = ["Method", "Steps"] + [tex_escape(m) + (r" $\uparrow$" if block.higher_is_better[m]
                                                        else r" $\downarrow$") for m in block.metrics]
        after = [r"$\Delta$ (run mean $-$ the baseline of the same method, same protocol): " + "; ".join(deltas)
                 + "."] if deltas else []
        caption = (f"Teacher: {tex_escape(block.teacher)}.{_seeds_phrase(block)} Italic rows: stored baselines. "
                   "Bold: best in its column.")
        out.append(booktabs_table(caption, f"tab:{_tex_label(block.teacher)}", header, "lr" + "r" * len(block.metrics),
                                  lines, notes.notes(), after))
    return "\n".join(out) + "\n"


def _tex_label(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text)


# CSV: one line per (block, row, metric) with the numbers unformatted.
def render_csv(tables: Tables) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["teacher", "kind", "method", "steps", "source", "metric", "higher_is_better",
                "mean", "std", "n", "diverged", "delta", "delta_source", "footnotes"])
    for block in tables.blocks:
        for row in block.rows:
            for m in block.metrics:
                c = row.cells.get(m)
                if c is None:
                    continue
                w.writerow([block.teacher, row.kind, row.label, "" if row.steps is None else row.steps,
                            row.source, m, block.higher_is_better[m], _num(c.mean), _num(c.std),
                            c.n, c.diverged, _num(c.delta), c.delta_source,
                            "; ".join(tables.footnotes[n - 1] for n in c.notes)])
    return buf.getvalue()


def _num(x: float | None) -> str:
    return "" if x is None else repr(x)
