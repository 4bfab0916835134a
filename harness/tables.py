"""Paper-style tables from the flat results table: rows = methods, columns = metrics, one block per
teacher; runs as mean +- std over seeds with n; baselines beside them; a delta to the baseline of
the same method only where the protocols match, and a footnote saying why not where they do not.

`build_tables` is a pure function of rows; `render_markdown`, `render_latex` (booktabs) and
`render_csv` only format its result.
"""
from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from harness.protocol import protocol_mismatch
from harness.results import ResultRow

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


class _Notes:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1


def _order(row: TableRow) -> tuple:
    # Multi-step samplers (most steps first), then one-step methods, then references, then baselines.
    kind = 0 if row.kind == "run" else 1
    steps = row.steps
    tier = 0 if steps is not None and steps > 1 else 1 if steps == 1 else 2
    return (kind, tier, -(steps or 0), row.label.lower(), row.source)


# Build the blocks: runs aggregated over seeds, with the baselines of the same teacher.
def build_tables(rows: Sequence[ResultRow]) -> Tables:
    notes = _Notes()
    runs = [r for r in rows if r.kind == "run"]
    bases = [r for r in rows if r.kind == "baseline"]
    blocks = []
    for teacher in sorted({r.teacher for r in runs}):
        trows = [r for r in runs if r.teacher == teacher]
        metrics = sorted({r.metric for r in trows})
        hib = {m: next(r.higher_is_better for r in trows if r.metric == m) for m in metrics}
        block_protocols = defaultdict(dict)    # metric -> protocol_id -> protocol
        for r in trows:
            block_protocols[r.metric][r.protocol_id] = r.protocol
        groups = _groups(trows)
        table_rows = [_run_row(group, notes) for group in groups]
        tbases = [b for b in bases if b.teacher == teacher and b.metric in hib]
        base_rows = [_baseline_row(group, block_protocols, notes) for group in _groups(tbases)]
        for row, group in zip(table_rows, groups):
            _add_deltas(row, group, tbases, notes)
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


def _groups(rows: Sequence[ResultRow]) -> list[list[ResultRow]]:
    groups: dict[str, list[ResultRow]] = defaultdict(list)
    for r in rows:
        groups[r.group].append(r)
    return list(groups.values())


def _run_row(group: list[ResultRow], notes: _Notes) -> TableRow:
    cells = {}
    by_metric: dict[str, list[ResultRow]] = defaultdict(list)
    for r in group:
        by_metric[r.metric].append(r)
    for metric, rs in by_metric.items():
        values = [r.value for r in rs if r.value is not None and math.isfinite(r.value)]
        mean, std = mean_std(values)
        cell = Cell(mean, std, len(values), len(rs) - len(values), optimised=any(r.optimised for r in rs))
        if cell.optimised:
            cell.notes.append(notes.add("(optimised): the run optimised this metric's own reward model "
                                        "(reward fine-tuning, TTEO or best-of-N selection); it is not an "
                                        "independent measure"))
        if cell.diverged:
            cell.notes.append(notes.add(f"{cell.diverged} of {len(rs)} seed(s) diverged "
                                        f"(value not finite); the mean is over the others"))
        if len({r.protocol_id for r in rs}) > 1:
            cell.notes.append(notes.add("seeds evaluated under different protocols ("
                                        + ", ".join(sorted({r.protocol_id for r in rs})) + ")"))
        cells[metric] = cell
    first = group[0]
    return TableRow(first.label, "run", ", ".join(sorted({r.source for r in group})), first.steps,
                    cells)


def _baseline_row(group: list[ResultRow], block_protocols: dict, notes: _Notes) -> TableRow:
    cells = {}
    for b in group:
        cell = Cell(b.value, b.std, b.n or 0)
        reasons = sorted({f"{protocol_mismatch(p, b.protocol)}" for p in
                          block_protocols.get(b.metric, {}).values()
                          if protocol_mismatch(p, b.protocol) is not None})
        if reasons:
            cell.notes.append(notes.add(f"{b.source}: {b.label} ({b.metric}) is not comparable "
                                        f"with the runs above: {'; '.join(reasons)}"))
        cells[b.metric] = cell
    first = group[0]
    label = f"{first.label} [{first.source}]"
    if first.steps is not None:
        label = f"{first.label}, {first.steps} step{'s' if first.steps != 1 else ''} [{first.source}]"
    return TableRow(label, "baseline", first.citation or first.source, first.steps, cells)


# Delta to the baseline reporting the same method label (and steps), where protocols match.
def _add_deltas(row: TableRow, run_rows: list[ResultRow], bases: list[ResultRow],
                notes: _Notes) -> None:
    for metric, cell in row.cells.items():
        if cell.mean is None:
            continue
        match = [b for b in bases if b.metric == metric and b.label == row.label
                 and (b.steps is None or row.steps is None or b.steps == row.steps)]
        if not match:
            continue
        b = match[0]
        protocols = {r.protocol_id: r.protocol for r in run_rows if r.metric == metric}
        reasons = sorted({m for p in protocols.values()
                          if (m := protocol_mismatch(p, b.protocol)) is not None})
        if reasons:
            cell.notes.append(notes.add(f"no delta to {b.source} ({b.citation or b.source}): "
                                        f"{'; '.join(reasons)}"))
        else:
            cell.delta, cell.delta_source = cell.mean - b.value, b.source

#----------------------------------------------------------------------------


# A number with 4 significant digits at most and no more than 3 decimals.
def fmt(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    digits = max(0, min(3, 3 - int(math.floor(math.log10(abs(x))))))
    return f"{x:.{digits}f}"


def _fmt_like(x: float, ref: float) -> str:
    if ref == 0 or not math.isfinite(ref):
        return fmt(x)
    digits = max(0, min(3, 3 - int(math.floor(math.log10(abs(ref))))))
    return f"{x:.{digits}f}"


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


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "–": "--", "−": "-", "Δ": r"$\Delta$", "±": r"$\pm$"}


# Text made safe for LaTeX (and the table's symbols as math).
def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


# LaTeX (booktabs): one tabular per teacher block; footnotes as a list after it.
def render_latex(tables: Tables) -> str:
    out = ["% Generated by python -m harness.report; needs \\usepackage{booktabs}."]
    for block in tables.blocks:
        cols = "ll" + "r" * len(block.metrics)
        out += [r"\begin{table}[t]", r"\centering", f"\\caption{{Teacher: {tex_escape(block.teacher)}}}",
                f"\\begin{{tabular}}{{{cols}}}", r"\toprule"]
        head = ["Method", "Steps"] + [tex_escape(m) + (r" $\uparrow$" if block.higher_is_better[m]
                                                       else r" $\downarrow$") for m in block.metrics]
        out.append(" & ".join(head) + r" \\")
        out.append(r"\midrule")
        first_baseline = True
        for row in block.rows:
            if row.kind == "baseline" and first_baseline:
                out.append(r"\midrule")
                first_baseline = False
            label = tex_escape(row.label) if row.kind == "run" else r"\textit{" + tex_escape(row.label) + "}"
            cells = [tex_escape(cell_text(row.cells.get(m), row.kind)) for m in block.metrics]
            steps = "--" if row.steps is None else str(row.steps)
            out.append(" & ".join([label, steps] + cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    for i, t in enumerate(tables.footnotes, start=1):
        out.append(f"% [{i}] {t}")
        out.append(f"\\noindent[{i}] {tex_escape(t)}\\\\")
    return "\n".join(out) + "\n"


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
