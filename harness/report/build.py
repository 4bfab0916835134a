"""Build the report from the records and the baselines: tables, the papers' table layouts, figures,
samples side by side, an index.

    python -m harness.report                                   # every grid under ./results
    python -m harness.report --grid soft_vs_hard --format md,tex --out results/report
    python -m harness.report --layout softdimo_imagenet256 --metrics fid,inception_score
    python -m harness.report --list-layouts

Writes `<out>/report.md` linking `tables/results.{md,tex,csv}`, `tables/layout_<name>.{md,tex,csv}`,
`plots/*.{png,pdf}` and `samples/*.{png,pdf}`. Every link and path in the folder is relative to it
(records and logs: relative to the results root), so the folder can be moved, zipped or committed.
Records that cannot be read are listed in the report, and so are failed runs with their error
line and log; neither stops the report.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from harness import store
from harness.builtin import plugins
from harness.grid.yaml_lines import YamlFileError
from harness.report import claims, compare, costs, figures, latex, layouts, plots, side_by_side, tables, verify
from harness.store import baselines, results
from softdimo.files import atomic_write

FORMATS = ("md", "tex", "csv", "parquet")


# --metrics names a metric that no table, layout column or figure of the report has.
class UnknownMetricsError(ValueError):
    pass

#----------------------------------------------------------------------------


# What the report was built from, and what it wrote.
@dataclass
class Report:
    index: Path
    frame: pd.DataFrame
    tables: tables.Tables
    files: list[Path]
    problems: list[str]
    layouts: list[layouts.LayoutTable]


# The comparison references of each grid: `reference` (--reference) for every grid, else the
# grid's own `compare:` section as the run command recorded it; grids without one are not compared.
def references(results_root: Path, grids: Sequence[str], reference: Mapping[str, Any] | None
               ) -> dict[str, dict[str, Any]]:
    if reference:
        return {g: {"reference": dict(reference), "within": []} for g in grids}
    return {g: info for g in grids if (info := store.grid_info(results_root, g).get("compare"))}


# The layouts a report shows: those named, then every other layout one of whose rows a run matches;
# and the layout files that could not be read (listed in the report, never stopping it).
def chosen_layouts(df: pd.DataFrame, named: Sequence[str]) -> tuple[list[layouts.Layout], list[str]]:
    out = [layouts.load_layout(n) for n in named]
    problems = []
    runs = results.final_runs(df)
    for name, path in layouts.layout_files().items():
        if name in {layout.name for layout in out} or runs.empty:
            continue
        try:
            layout = layouts.load_layout(path)
        except YamlFileError as e:
            problems.append(f"layout {name} ({layouts.LAYOUTS_DIR}/{path.name}, line {e.line}): {e.message}")
            continue
        if any(r.runs is not None and not layouts.select_runs(runs, r.runs).empty for r in layout.rows):
            out.append(layout)
    return out, problems


# Build every artefact of the report under `out_dir`; returns what was written. `reference` (a
# selector) chooses the cells every run is compared with; `baseline` (a selector of stored baseline
# rows) the numbers the tables' delta column is taken to; `metrics` the columns (and figure panels)
# and their order; `layout_names` the paper layouts shown besides those the runs match;
# `per_metric_plots` adds the one-figure-per-metric plots.
def build_report(results_root: str | Path, grids: Sequence[str] | None, out_dir: str | Path,
                 formats: Sequence[str] = FORMATS, with_plots: bool = True,
                 reference: Mapping[str, Any] | None = None, baseline: Mapping[str, Any] | None = None,
                 metrics: Sequence[str] | None = None, layout_names: Sequence[str] = (),
                 per_metric_plots: bool = False) -> Report:
    results_root, out_dir = Path(results_root), Path(out_dir)
    records, problems = store.scan(results_root, grids)
    _load_plugins(records)
    base, base_summary, base_problems = baselines.load_all()
    order = store.cell_order(results_root, {r["grid"] for r in records})
    df = results.frame(results.record_rows(records, cell_order=order) + [b.row() for b in base])
    all_tables = tables.build_tables(df, delta_to=baseline)
    chosen, layout_problems = chosen_layouts(df, layout_names)
    base_problems = base_problems + layout_problems
    _check_metrics(metrics, all_tables, chosen)
    built = tables.select_metrics(all_tables, metrics)
    filled = [layouts.build_layout(layout, df, base, _layout_columns(layout, metrics or ())) for layout in chosen]
    files: list[Path] = []
    tdir = out_dir / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    markdown = tables.render_markdown(built)          # also embedded in the index
    renderers = {"md": lambda: markdown, "tex": lambda: tables.render_latex(built),
                 "csv": lambda: tables.render_csv(built)}
    for fmt in formats:
        if fmt == "parquet":
            files.append(results.to_parquet(df, tdir / "results.parquet"))
            continue
        path = tdir / f"results.{fmt}"
        atomic_write(path, renderers[fmt]())
        files.append(path)
        if fmt == "csv":                              # the per-run rows beside the group means
            runs = results.final_runs(df).drop(columns=["protocol"])
            files.append(tdir / "runs.csv")
            atomic_write(files[-1], lambda tmp: runs.to_csv(tmp, index=False))
    layout_files = _write_layouts(filled, tdir, formats)
    grids_here = sorted({r["grid"] for r in records})
    compare_markdown = "\n".join(
        compare.render_markdown(compare.compare(df[(df["source"] == g) | (df["kind"] == "baseline")],
                                                ref["reference"], ref.get("within", ())), ref["reference"])
        for g, ref in references(results_root, grids_here, reference).items())
    claims_file = baselines.baselines_dir() / claims.CLAIMS_FILE
    shipped = claims.load_claims(claims_file) if claims_file.is_file() else []
    tested = [c for c in shipped if c.grid in grids_here]
    claims_markdown = claims.render_markdown(claims.evaluate_claims(df, tested))
    failed = [r for r in records if r["status"] == "failed"] + store.kept_attempts(results_root, grids_here)
    cost_markdown = "\n".join(filter(None, [costs.render_markdown(df), costs.render_failures(failed)]))
    checks = verify.verify(records, base)
    verify_markdown = verify.render(checks) if checks else ""
    for name, text in (("compare.md", compare_markdown), ("claims.md", claims_markdown), ("cost.md", cost_markdown),
                       ("verify.md", verify_markdown)):
        if text.strip():
            files.append(tdir / name)
            atomic_write(files[-1], text)
    plot_files: list[Path] = []
    sample_files: list[Path] = []
    if with_plots:
        style = plots.Style.of(df)
        pdir = out_dir / "plots"
        plot_files = figures.report_figures(df, pdir, style, metrics) + plots.plot_best_of_n(df, pdir, style)
        if per_metric_plots:
            plot_files += (plots.plot_relaxations(df, pdir, style) + plots.plot_steps(df, pdir, style)
                           + plots.plot_curves(df, pdir, style))
        sample_files = (side_by_side.side_by_side_pages(df, results_root, out_dir / "samples")
                        + plots.sample_pages(df, results_root, out_dir / "samples"))
    index = out_dir / "report.md"
    atomic_write(index, render_index(records, problems, base_summary, base_problems, markdown, compare_markdown,
                                     claims_markdown, cost_markdown, files, plot_files, sample_files, out_dir,
                                     results_root, filled, layout_files, verify_markdown))
    all_problems = [f"{_from_root(p.path, results_root)}: {p.message}" for p in problems] + base_problems
    return Report(index, df, built, files + layout_files + plot_files + sample_files + [index], all_problems, filled)


def _check_metrics(metrics: Sequence[str] | None, built: tables.Tables, chosen: Sequence[layouts.Layout]) -> None:
    known = {m for b in built.blocks for m in b.metrics}
    known |= {name for layout in chosen for c in layout.columns for name in (c.metric, c.header)}
    unknown = [m for m in metrics or () if m not in known]
    if unknown:
        raise UnknownMetricsError(f"unknown metric(s) {', '.join(unknown)}; the report has: {', '.join(sorted(known))}")


def _layout_columns(layout: layouts.Layout, metrics: Sequence[str]) -> list[str] | None:
    # --metrics applies to a layout through the columns it has (by run metric or header).
    known = {c.metric for c in layout.columns} | {c.header for c in layout.columns}
    chosen = [m for m in metrics if m in known]
    return chosen or None


# Write each filled layout as tables/layout_<name>.{md,tex,csv} (the formats asked for).
def _write_layouts(filled: Sequence[layouts.LayoutTable], tdir: Path, formats: Sequence[str]) -> list[Path]:
    renderers = {"md": layouts.render_markdown, "tex": layouts.render_latex, "csv": layouts.render_csv}
    out = []
    for table in filled:
        for fmt in formats:
            if fmt in renderers:
                out.append(tdir / f"layout_{table.layout.name}.{fmt}")
                atomic_write(out[-1], renderers[fmt](table))
    return out


def _load_plugins(records: Sequence[Mapping[str, Any]]) -> None:
    # Labels come from the methods' own entries: import the plugins the runs used, if present.
    for module in sorted({m for r in records for m in r["spec"].get("plugins", [])}):
        try:
            plugins.load_module(module)
        except ImportError:
            pass                             # labels fall back to the spec's axes


def _rel(path: Path, base: Path) -> str:
    # A path inside the report folder, relative to it (links keep working when the folder moves).
    return Path(path).resolve().relative_to(Path(base).resolve()).as_posix()


# A path of the results root as text relative to it: a record or log under the root, or (a log
# written elsewhere, e.g. on a cluster node) its last three parts <grid>/<run id>/<file>.
def _from_root(path: str | Path, results_root: Path) -> str:
    p = Path(path)
    try:
        return p.resolve().relative_to(results_root.resolve()).as_posix()
    except ValueError:
        return Path(*p.parts[len(p.anchor) > 0:][-3:]).as_posix()


# The report's index page: runs, tables, plots, samples, problems, failures.
def render_index(records: Sequence[Mapping[str, Any]],
                 problems: Sequence[store.Problem], base_summary: Sequence[str],
                 base_problems: Sequence[str],
                 table_markdown: str, compare_markdown: str, claims_markdown: str, cost_markdown: str,
                 table_files: Sequence[Path],
                 plot_files: Sequence[Path],
                 sample_files: Sequence[Path], out_dir: Path, results_root: Path,
                 filled: Sequence[layouts.LayoutTable] = (), layout_files: Sequence[Path] = (),
                 verify_markdown: str = "") -> str:
    out = ["# Results report", "",
           "Every link below is relative to this folder; paths of records and logs are relative to the "
           "results root the report was built from.", ""]
    by_grid = Counter((r["grid"], r["status"]) for r in records)
    out.append(f"{len(records)} records.")
    out.append("")
    if records:
        out += ["| grid | ok | diverged | failed |", "|---|---:|---:|---:|"]
        for grid in sorted({r["grid"] for r in records}):
            out.append(f"| {grid} | {by_grid[(grid, 'ok')]} | {by_grid[(grid, 'diverged')]} | "
                       f"{by_grid[(grid, 'failed')]} |")
        out.append("")
    out += ["## Tables", ""]
    out.append(" · ".join(f"[{p.name}]({_rel(p, out_dir)})" for p in table_files) or
               "(no table format requested)")
    out.append("")
    for p in list(table_files) + list(layout_files):
        if p.suffix == ".tex" and (widths := latex.resized_widths(p.read_text(encoding="utf-8"))):
            out.append(f"- `{_rel(p, out_dir)}`: {len(widths)} table(s) estimated wider than \\textwidth "
                       f"({', '.join(f'{w:.0f}pt' for w in widths)} for {latex.TEXTWIDTH_PT:.0f}pt) are wrapped in "
                       f"\\resizebox; `--metrics` chooses fewer columns")
    out.append("")
    out.append(table_markdown or "No ok records to tabulate.")
    out.append("")
    if filled:
        out += ["## Paper tables", "",
                "Each paper's table in its own layout (`baselines/layouts/`), its stored numbers with every "
                "matching run beside them.", ""]
        for table in filled:
            links = [p for p in layout_files if p.name.startswith(f"layout_{table.layout.name}.")]
            out += [layouts.render_markdown(table),
                    " · ".join(f"[{p.name}]({_rel(p, out_dir)})" for p in links), ""]
    if compare_markdown.strip():
        out += ["## Comparisons with the reference cells", "", compare_markdown, ""]
    if claims_markdown:
        out += ["## Paper claims", "", claims_markdown, ""]
    if cost_markdown:
        out += ["## Cost", "", cost_markdown, ""]
    if verify_markdown:
        out += ["## Reproduction of the stored per-seed numbers", "",
                "Each run with stored numbers of the same run id (`python -m harness.report.verify`): identical, float "
                "(the metric's arithmetic), seed noise or different, and the first stage whose hash differs.", "",
                verify_markdown, ""]
    if plot_files:
        out += ["## Figures", ""]
        for p in plot_files:
            if p.suffix == ".png":
                out.append(f"![{p.stem}]({_rel(p, out_dir)})  \n([pdf]({_rel(p.with_suffix('.pdf'), out_dir)}))")
                out.append("")
    if sample_files:
        out += ["## Samples", ""]
        for p in sample_files:
            if p.suffix == ".png" and p.stem.startswith("side_by_side_"):
                out += [f"![{p.stem}]({_rel(p, out_dir)})  \n([pdf]({_rel(p.with_suffix('.pdf'), out_dir)}))", ""]
        grids = [p for p in sample_files if p.suffix == ".png" and not p.stem.startswith("side_by_side_")]
        if grids:
            out += ["Every run's sample grid:", ""] + [f"- [{p.stem}]({_rel(p, out_dir)})" for p in grids]
        out.append("")
    out += ["## Baselines", ""] + [f"- {line}" for line in base_summary] + [""]
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        out += ["## Failed runs", ""]
        for r in failed:
            err = r.get("error") or {}
            log = _from_root(err["log"], results_root) if err.get("log") else ""
            out.append(f"- `{r['grid']}/{r['run_id']}` {r.get('description', '')}: "
                       f"{err.get('type', '?')}: {err.get('message', '')} (log: `{log}`)")
        out.append("")
    if problems or base_problems:
        out += ["## Records and baselines that could not be read", ""]
        out += [f"- `{_from_root(p.path, results_root)}`: {p.message}" for p in problems]
        out += [f"- {p}" for p in base_problems]
        out.append("")
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    p.add_argument("--results", default="results", metavar="DIR", help="results root (default: ./results)")
    p.add_argument("--grid", nargs="+", metavar="NAME", help="grids to include (default: all)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: <results>/report)")
    p.add_argument("--format", default="md,tex,csv", metavar="LIST",
                   help="table formats, comma-separated: md, tex, csv, parquet (the results table; default: "
                        "md,tex,csv)")
    p.add_argument("--reference", metavar="SELECTOR",
                   help="compare every run with these cells of its teacher, KEY=VALUE[,KEY=VALUE] (axes or "
                        "parameters, e.g. method=dimo,relaxation=hard; default: each grid's compare section)")
    p.add_argument("--baseline", metavar="SELECTOR",
                   help="stored baseline rows the tables' delta column is taken to, KEY=VALUE[,...] (e.g. "
                        "source=mini_reference,label=Di[M]O (hard)); default: the baseline of the same label")
    p.add_argument("--metrics", metavar="LIST",
                   help="the columns of the tables and the panels of the figures, in this order, comma-separated "
                        "(run metric names, or a layout's column headers); default: every metric")
    p.add_argument("--layout", nargs="+", default=[], metavar="NAME",
                   help="render these paper table layouts (baselines/layouts/NAME.yaml, or a path) even without "
                        "a matching run; by default the report shows every layout a run matches")
    p.add_argument("--list-layouts", action="store_true", help="list the paper table layouts and exit")
    p.add_argument("--per-metric-plots", action="store_true",
                   help="also draw one figure per metric (relaxations, steps, training curves) besides the "
                        "multi-panel figures")
    return p


# `python -m harness.report`: parses its options and calls `build_report` (as `harness.api.report`
# does), then prints what it wrote; returns the exit code (2: bad arguments).
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list_layouts:
        try:
            print("\n".join(layouts.describe_layouts()) or f"no layouts under {layouts.layouts_dir()}")
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        print(f"error: --format: unknown format(s) {', '.join(bad)}; allowed: {', '.join(FORMATS)}",
              file=sys.stderr)
        return 2
    if not Path(args.results).is_dir():
        print(f"error: --results: {args.results} is not a directory; run python -m harness.run first",
              file=sys.stderr)
        return 2
    plugins.load_builtins()                  # baseline sources, method labels
    out = Path(args.out) if args.out else Path(args.results) / "report"
    try:
        reference = compare.parse_selector(args.reference) if args.reference else None
        baseline = compare.parse_selector(args.baseline) if args.baseline else None
    except ValueError as e:
        print(f"error: --reference / --baseline: {e}", file=sys.stderr)
        return 2
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        chosen = [layouts.load_layout(n) for n in args.layout]
    except (KeyError, ValueError) as e:
        print(f"error: --layout: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    try:
        report = build_report(args.results, args.grid, out, formats, reference=reference, baseline=baseline,
                              metrics=metrics, layout_names=[str(layout.path) for layout in chosen],
                              per_metric_plots=args.per_metric_plots)
    except KeyError as e:
        print(f"error: --reference / --baseline: {e.args[0]}", file=sys.stderr)
        return 2
    except UnknownMetricsError as e:
        print(f"error: --metrics: {e}", file=sys.stderr)
        return 2
    for prob in report.problems:
        print(f"warning: {prob}", file=sys.stderr)
    print(f"wrote {report.index} ({len(report.files)} files, {len(report.frame)} result rows)")
    for table in report.layouts:
        print(f"layout {table.layout.name}: {out / 'tables' / ('layout_' + table.layout.name)}.{{{','.join(formats)}}}")
    return 0

