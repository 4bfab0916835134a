"""Paper table layouts as data: one YAML file per table of a paper (`baselines/layouts/NAME.yaml`;
docs/usage.md, "Reports") names the paper and its table, the columns in the paper's order (each
column's metric, the paper's name for it, its protocol, precision and direction) and the rows in
the paper's order, each with a selector of the paper's numbers among the stored baselines and a
selector of the runs that reproduce it. `build_layout` lays the paper's rows out with every
matching run beside them: a run line per matching group of seeds (mean ± std), a line saying so
where no run matches, and the difference to the paper only where the two protocols match
(footnoted otherwise). `render_markdown`, `render_latex` and `render_csv` only format it.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from harness.contracts.protocol import protocol_mismatch
from harness.grid.yaml_lines import YamlFileError, line_of, load_yaml
from harness.report.compare import select
from harness.report.latex import TableNotes, TexLine, best_indices, booktabs_table, mean_pm, number, tex_escape
from harness.report.tables import Notes, mean_std
from harness.store.baselines import Baseline, baselines_dir
from harness.store.results import IDENTITY, final_runs

LAYOUTS_DIR = "layouts"                        # under the baselines directory
TOP_KEYS = ("name", "title", "paper", "table", "scale", "description", "baselines", "columns", "rows")
COLUMN_KEYS = ("header", "metric", "paper_metric", "protocol", "precision", "direction")
ROW_KEYS = ("label", "steps", "paper", "runs", "note")
DIRECTIONS = ("higher", "lower")
BASELINE_KEYS = tuple(f.name for f in dataclasses.fields(Baseline))
RUN_KEYS = IDENTITY
PARAMETER_KEY = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_.]*$")
NO_RUN = "no run"
DELTA_INTRO = "Δ = runs − the row's stored number, where the protocols match: "

#----------------------------------------------------------------------------


# One column: the run metric it shows, the paper's metric name, the protocol, the decimals and
# the direction.
@dataclass(frozen=True)
class LayoutColumn:
    header: str
    metric: str
    paper_metric: str
    protocol: str | None
    precision: int | None
    higher_is_better: bool


# One row in the paper's order: a section heading (`section`), or a method with a selector of the
# paper's numbers (`paper`, stored baselines) and of the runs that reproduce it (`runs`).
@dataclass(frozen=True)
class LayoutRow:
    label: str = ""
    steps: int | None = None
    paper: Mapping[str, Any] | None = None
    runs: Mapping[str, Any] | None = None
    note: str = ""
    section: str | None = None


# A paper table's layout as read from its YAML file.
@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    paper: str
    table: str
    scale: str
    description: str
    baselines: Mapping[str, Any]               # selector keys every row's `paper` starts from
    columns: tuple[LayoutColumn, ...]
    rows: tuple[LayoutRow, ...]
    path: Path


# The directory of the layout files: <baselines directory>/layouts.
def layouts_dir() -> Path:
    return baselines_dir() / LAYOUTS_DIR


# Every layout file, by name.
def layout_files() -> dict[str, Path]:
    folder = layouts_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


# A layout by name (a file of `layouts_dir()`) or by path; every problem names the file, the line
# and the key, and what is allowed.
def load_layout(name_or_path: str | Path) -> Layout:
    files = layout_files()
    path = Path(name_or_path)
    if str(name_or_path) in files:
        path = files[str(name_or_path)]
    elif not (path.suffix in (".yaml", ".yml") and path.is_file()):
        raise KeyError(f"unknown layout {str(name_or_path)!r}; known: {', '.join(files) or '(none)'} "
                       f"(files {layouts_dir()}/*.yaml), or the path of a layout file")
    data = load_yaml(path, "layout")
    if not isinstance(data, dict):
        raise YamlFileError(path, 0, "a layout is a mapping with keys " + ", ".join(TOP_KEYS))
    _keys(path, data, TOP_KEYS, "layout")
    for key in ("title", "paper", "columns", "rows"):
        if key not in data:
            raise YamlFileError(path, 0, f"{key}: missing; a layout needs title, paper, columns and rows")
    columns = tuple(_column(path, c, i) for i, c in enumerate(_list(path, data, "columns")))
    rows = tuple(_row(path, r, i) for i, r in enumerate(_list(path, data, "rows")))
    baselines = data.get("baselines") or {}
    _selector(path, data, "baselines", baselines, BASELINE_KEYS, "baselines")
    return Layout(str(data.get("name", path.stem)), str(data["title"]), str(data["paper"]),
                  str(data.get("table", "")), str(data.get("scale", "")), str(data.get("description", "")),
                  dict(baselines), columns, rows, path)


def _keys(path: Path, m: Mapping, allowed: Sequence[str], where: str) -> None:
    for key in m:
        if key not in allowed:
            raise YamlFileError(path, line_of(m, key), f"{where}: unknown key {key!r}; allowed: {', '.join(allowed)}")


def _list(path: Path, data: Mapping, key: str) -> list:
    value = data[key]
    if not isinstance(value, list) or not value:
        raise YamlFileError(path, line_of(data, key), f"{key}: expected a non-empty list")
    return value


def _column(path: Path, c: Any, i: int) -> LayoutColumn:
    where = f"columns[{i}]"
    if not isinstance(c, dict):
        raise YamlFileError(path, 0, f"{where}: expected a mapping with keys {', '.join(COLUMN_KEYS)}")
    _keys(path, c, COLUMN_KEYS, where)
    for key in ("header", "metric", "direction"):
        if key not in c:
            raise YamlFileError(path, line_of(c, None), f"{where}: {key}: missing")
    if c["direction"] not in DIRECTIONS:
        raise YamlFileError(path, line_of(c, "direction"),
                            f"{where}: direction: {c['direction']!r}; allowed: {', '.join(DIRECTIONS)}")
    precision = c.get("precision")
    if precision is not None and (not isinstance(precision, int) or isinstance(precision, bool)
                                  or not 0 <= precision <= 6):
        raise YamlFileError(path, line_of(c, "precision"), f"{where}: precision: {precision!r}; allowed: 0 to 6 decimals")
    return LayoutColumn(str(c["header"]), str(c["metric"]), str(c.get("paper_metric", c["metric"])),
                        None if c.get("protocol") is None else str(c["protocol"]), precision,
                        c["direction"] == "higher")


def _row(path: Path, r: Any, i: int) -> LayoutRow:
    where = f"rows[{i}]"
    if isinstance(r, dict) and set(r) == {"section"}:
        return LayoutRow(section=str(r["section"]))
    if not isinstance(r, dict):
        raise YamlFileError(path, 0, f"{where}: expected a mapping: {{section: TEXT}} or keys {', '.join(ROW_KEYS)}")
    _keys(path, r, ROW_KEYS, where)
    if "label" not in r:
        raise YamlFileError(path, line_of(r, None), f"{where}: label: missing")
    steps = r.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise YamlFileError(path, line_of(r, "steps"), f"{where}: steps: {steps!r}; allowed: a positive integer")
    paper, runs = r.get("paper"), r.get("runs")
    _selector(path, r, f"{where}.paper", paper, BASELINE_KEYS, "paper")
    _selector(path, r, f"{where}.runs", runs, RUN_KEYS, "runs")
    return LayoutRow(str(r["label"]), steps, None if paper is None else dict(paper),
                     None if runs is None else dict(runs), str(r.get("note", "")))


def _selector(path: Path, parent: Mapping, where: str, selector: Any, allowed: Sequence[str], key: str) -> None:
    if selector is None:
        return
    if not isinstance(selector, dict):
        raise YamlFileError(path, line_of(parent, key), f"{where}: expected a mapping KEY: VALUE")
    for k in selector:
        if k not in allowed and not (key == "runs" and PARAMETER_KEY.match(str(k))):
            extra = " or a parameter <stage>.<field>" if key == "runs" else ""
            raise YamlFileError(path, line_of(selector, k),
                                f"{where}: unknown key {k!r}; allowed: {', '.join(allowed)}{extra}")

#----------------------------------------------------------------------------


# One cell: the paper's number or the runs' mean ± std, with its footnotes.
@dataclass
class LayoutCell:
    value: float | None
    std: float | None = None
    n: int = 0
    secondary: bool = False                    # the paper's number comes from a secondary source
    notes: list[int] = field(default_factory=list)
    rankable: bool = True                      # competes for bold (the column's protocol)
    empty: str = "–"                           # the text when there is no value


# One line of the table: a section, a paper row ("paper"), a group of runs ("run") or the line
# saying that no run matches a row ("no_run").
@dataclass
class LayoutLine:
    kind: str
    label: str
    steps: int | None = None
    cells: dict[str, LayoutCell] = field(default_factory=dict)
    notes: list[int] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    grids: list[str] = field(default_factory=list)
    indent: bool = False                       # a run line under its paper line
    group: str = ""                            # the runs' label (their group of seeds)
    row: str = ""                              # the layout row a run line reproduces
    deltas: list[str] = field(default_factory=list)  # "FD +0.12" where protocols match


# A layout filled with the paper's numbers and the runs.
@dataclass
class LayoutTable:
    layout: Layout
    columns: list[LayoutColumn]
    lines: list[LayoutLine]
    footnotes: list[str]
    deltas: list[str]                          # "row: FD +0.12, IS -3.1" where protocols match
    secondary: bool                            # some paper number is secondary


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


# The stored baselines matching a selector (every key equal).
def select_baselines(baselines: Sequence[Baseline], selector: Mapping[str, Any]) -> list[Baseline]:
    return [b for b in baselines if all(_equal(getattr(b, k), v) for k, v in selector.items())]


# The final run rows matching a selector; a parameter no run has matches nothing.
def select_runs(runs: pd.DataFrame, selector: Mapping[str, Any]) -> pd.DataFrame:
    if runs.empty or any(k not in runs.columns for k in selector):
        return runs.iloc[0:0]
    return select(runs, selector)


def _selector_text(selector: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in selector.items())


# The columns chosen by `metrics` (run metric names or headers), in that order; all by default.
def choose_columns(layout: Layout, metrics: Sequence[str] | None) -> list[LayoutColumn]:
    if not metrics:
        return list(layout.columns)
    by = {**{c.metric: c for c in layout.columns}, **{c.header: c for c in layout.columns}}
    unknown = [m for m in metrics if m not in by]
    if unknown:
        raise ValueError(f"layout {layout.name}: unknown column(s) {', '.join(unknown)}; allowed: "
                         + ", ".join(c.metric for c in layout.columns))
    return list(dict.fromkeys(by[m] for m in metrics))


# Fill a layout: the paper's numbers of each row and every group of runs matching it.
def build_layout(layout: Layout, df: pd.DataFrame, baselines: Sequence[Baseline],
                 metrics: Sequence[str] | None = None) -> LayoutTable:
    columns = choose_columns(layout, metrics)
    notes = Notes()
    runs = final_runs(df)
    lines: list[LayoutLine] = []
    labels = [r.label for r in layout.rows if r.section is None]
    for row in layout.rows:
        if row.section is not None:
            lines.append(LayoutLine("section", row.section))
            continue
        first = len(lines)
        numbers: dict[str, Baseline] = {}
        if row.paper is not None:
            selector = {**layout.baselines, **row.paper}
            found = select_baselines(baselines, selector)
            paper_line = LayoutLine("paper", row.label, row.steps)
            for col in columns:
                matches = [b for b in found if b.metric == col.paper_metric]
                paper_line.cells[col.header] = _paper_cell(col, matches, notes)
                if matches:
                    numbers[col.header] = matches[0]
            if not found:
                paper_line.notes.append(notes.add(f"no stored number matches {_selector_text(selector)}"))
            lines.append(paper_line)
        if row.runs is not None:
            under = row.paper is not None
            matched = select_runs(runs, row.runs)
            groups = [g for _, g in matched.groupby("group", sort=False)]
            shown = row.label if labels.count(row.label) == 1 else f"{row.label} ({row.steps} steps)"
            for group in groups:
                label = group["label"].iloc[0]
                name = (row.label if not under else "ours") if len(groups) == 1 else \
                    f"{row.label}: {label}" if not under else f"ours: {label}"
                line = _run_line(name, group, columns, numbers, notes, under)
                line.row = shown if len(groups) == 1 else f"{shown}, {label}"
                lines.append(line)
            if not groups:
                lines.append(LayoutLine("no_run", "ours" if under else row.label, None if under else row.steps,
                                        {c.header: LayoutCell(None, rankable=False, empty=NO_RUN) for c in columns},
                                        [notes.add(f"no run matches {_selector_text(row.runs)}")], indent=under))
        if row.note and len(lines) > first:
            lines[first].notes.append(notes.add(row.note))
    deltas = [f"{line.row}: {', '.join(line.deltas)}" for line in lines if line.deltas]
    return LayoutTable(layout, columns, lines, notes.texts, deltas,
                       any(c.secondary for line in lines for c in line.cells.values()))


def _paper_cell(col: LayoutColumn, matches: Sequence[Baseline], notes: Notes) -> LayoutCell:
    if not matches:
        return LayoutCell(None, rankable=False)
    b = matches[0]
    cell = LayoutCell(b.value, b.std, b.n or 0, secondary=b.source_quality == "secondary")
    if len(matches) > 1:
        cell.notes.append(notes.add(f"{len(matches)} stored numbers match; the first ({b.citation}) is shown"))
    name = b.protocol.get("name")
    if col.protocol is not None and name != col.protocol:
        cell.rankable = False
        cell.notes.append(notes.add(f"the stored {col.header} is under protocol {name}, not the column's "
                                    f"{col.protocol}"))
    return cell


def _run_line(name: str, group: pd.DataFrame, columns: Sequence[LayoutColumn], numbers: Mapping[str, Baseline],
              notes: Notes, indent: bool) -> LayoutLine:
    first = group.iloc[0]
    steps = None if first["steps"] != first["steps"] or first["steps"] is None else int(first["steps"])
    line = LayoutLine("run", name, steps, seeds=sorted({s for s in group["seed"] if s == s}),
                      grids=sorted(set(group["grid"])), indent=indent, group=str(first["label"]))
    for col in columns:
        rs = group[group["metric"] == col.metric]
        values = [float(v) for v in rs["value"] if v == v and math.isfinite(v)]
        mean, std = mean_std(values)
        cell = LayoutCell(mean, std, len(values), rankable=not bool(rs["optimised"].any()))
        if rs.empty:
            cell.empty = "–"
        elif mean is None:
            cell.empty = "diverged"
        if rs["optimised"].any():
            cell.notes.append(notes.add("optimised: the run optimised this metric's own reward model"))
        names = sorted({p.get("name") for p in rs["protocol"] if isinstance(p, dict)})
        if col.protocol is not None and names and names != [col.protocol]:
            cell.rankable = False
            cell.notes.append(notes.add(f"run evaluated under {', '.join(map(str, names))}; the column's "
                                        f"protocol is {col.protocol}"))
        b = numbers.get(col.header)
        if b is not None and mean is not None:
            reasons = sorted({m for p in rs["protocol"] if (m := protocol_mismatch(p, b.protocol)) is not None})
            if reasons:
                cell.notes.append(notes.add(f"no Δ to the stored {col.header}: {'; '.join(reasons)}"))
            else:
                delta = mean - b.value
                line.deltas.append(f"{col.header} {'+' if delta >= 0 else '−'}{number(abs(delta), col.precision)}")
        line.cells[col.header] = cell
    return line

#----------------------------------------------------------------------------


# The formatted value of a cell and its std (None for a single value).
def _numbers(cell: LayoutCell, col: LayoutColumn) -> tuple[str, str | None]:
    std = number(cell.std, col.precision) if cell.std is not None and cell.n > 1 else None
    return number(cell.value, col.precision), std


def _best(table: LayoutTable) -> dict[str, set[int]]:
    return {c.header: best_indices([line.cells[c.header].value if c.header in line.cells
                                    and line.cells[c.header].rankable else None for line in table.lines],
                                   c.higher_is_better, c.precision) for c in table.columns}


def _seeds_text(table: LayoutTable) -> str:
    runs = [line for line in table.lines if line.kind == "run"]
    if not runs:
        return ""
    parts = [f"{line.row} = {line.group}, n = {max((c.n for c in line.cells.values()), default=0)} "
             f"(seeds {', '.join(str(int(s)) for s in line.seeds)}; grid {', '.join(line.grids)})" for line in runs]
    return "Runs: mean ± std over seeds. " + "; ".join(dict.fromkeys(parts)) + "."


def _source_text(table: LayoutTable) -> str:
    layout = table.layout
    text = f"{layout.paper}" + (f", {layout.table}" if layout.table else "")
    if table.secondary:
        text += ". † a secondary transcription of the paper, not read in the original"
    return text


# Markdown: the layout's title, its table (paper rows, then ours under each), the footnotes, the
# seeds and the differences to the paper where protocols match.
def render_markdown(table: LayoutTable) -> str:
    best = _best(table)
    cols = table.columns
    out = [f"### {table.layout.title}", "", f"{_source_text(table)}.", "",
           "| method | steps | " + " | ".join(f"{c.header} {'↑' if c.higher_is_better else '↓'}" for c in cols) + " |",
           "|---|---:|" + "---:|" * len(cols)]
    for i, line in enumerate(table.lines):
        if line.kind == "section":
            out.append(f"| **{_md(line.label)}** | |" + " |" * len(cols))
            continue
        label = ("↳ " if line.indent else "") + line.label + "".join(f" [{n}]" for n in line.notes)
        cells = []
        for c in cols:
            cell = line.cells[c.header]
            if cell.value is None:
                text = cell.empty
            else:
                mean, std = _numbers(cell, c)
                text = mean + ("" if std is None else f" ± {std}") + ("†" if cell.secondary else "")
                text = f"**{text}**" if i in best[c.header] else text
            cells.append(text + "".join(f" [{n}]" for n in cell.notes))
        steps = "" if line.steps is None else str(line.steps)
        out.append("| " + " | ".join(_md(t) for t in [label, steps] + cells) + " |")
    out.append("")
    if table.lines and (seeds := _seeds_text(table)):
        out.append(seeds + "  ")
    if table.deltas:
        out.append(DELTA_INTRO + "; ".join(table.deltas) + ".  ")
    out += [f"[{i}] {t}  " for i, t in enumerate(table.footnotes, start=1)]
    out.append("")
    return "\n".join(out)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


# LaTeX (booktabs, `harness.report.latex`): the same table as one float; cells hold the number or mean ±
# std only, the best of each column in bold; seeds, deltas and notes under the tabular.
def render_latex(table: LayoutTable) -> str:
    best = _best(table)
    cols = table.columns
    notes = TableNotes(table.footnotes)
    lines: list[TexLine] = []
    for i, line in enumerate(table.lines):
        if line.kind == "section":
            lines.append(TexLine(section=tex_escape(line.label), rule=i > 0))
            continue
        label = (r"\quad " if line.indent else "") + tex_escape(line.label)
        cells = []
        if line.kind == "no_run":
            cells.append(f"\\multicolumn{{{len(cols)}}}{{c}}{{\\textit{{{NO_RUN}}}}}")
        else:
            for c in cols:
                cell = line.cells[c.header]
                if cell.value is None:
                    text = "--" if cell.empty == "–" else tex_escape(cell.empty)
                else:
                    text = mean_pm(*_numbers(cell, c), bold=i in best[c.header])
                    text += r"$^\dagger$" if cell.secondary else ""
                cells.append(text + notes.mark(cell.notes))
        steps = "--" if line.steps is None else str(line.steps)
        lines.append(TexLine([label + notes.mark(line.notes), steps] + cells))
    header = ["Method", "Steps"] + [tex_escape(c.header) + (r" $\uparrow$" if c.higher_is_better else r" $\downarrow$")
                                    for c in cols]
    after = []
    if seeds := _seeds_text(table):
        after.append(tex_escape(seeds))
    if table.deltas:
        after.append(tex_escape(DELTA_INTRO + "; ".join(table.deltas) + "."))
    caption = f"{tex_escape(table.layout.title)}. {tex_escape(_source_text(table))}. Bold: best in its column."
    return ("% Generated by python -m harness.report --layout " + table.layout.name
            + "; needs \\usepackage{booktabs} (and graphicx where the table is resized).\n"
            + booktabs_table(caption, f"tab:{table.layout.name}", header, "lr" + "r" * len(cols), lines,
                             notes.notes(), after))


# CSV: one line per (line, column) with the numbers unformatted.
def render_csv(table: LayoutTable) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["layout", "kind", "label", "steps", "column", "metric", "value", "std", "n", "secondary", "notes"])
    for line in table.lines:
        if line.kind == "section":
            continue
        for c in table.columns:
            cell = line.cells[c.header]
            w.writerow([table.layout.name, line.kind, line.label, "" if line.steps is None else line.steps,
                        c.header, c.metric if line.kind != "paper" else c.paper_metric,
                        "" if cell.value is None else repr(cell.value), "" if cell.std is None else repr(cell.std),
                        cell.n, cell.secondary, "; ".join(table.footnotes[n - 1] for n in cell.notes + line.notes)])
    return buf.getvalue()


# One line per layout file: name, paper, table, rows and columns.
def describe_layouts() -> list[str]:
    out = []
    for name, path in layout_files().items():
        layout = load_layout(path)
        methods = sum(1 for r in layout.rows if r.section is None)
        out.append(f"{name}: {layout.paper}: {layout.title} ({methods} rows; columns "
                   f"{', '.join(c.header for c in layout.columns)})")
    return out
