"""Build the report from the records and the baselines: tables, plots, sample pages, an index.

    python -m harness.report                                   # every grid under ./results
    python -m harness.report --grid soft_vs_hard --format md,tex --out results/report

Writes `<out>/report.md` linking `tables/results.{md,tex,csv}`, `plots/*.{png,pdf}` and
`samples/*.{png,pdf}`. Records that cannot be read are listed in the report by path, and so are
failed runs with their error line and log; neither stops the report.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from harness import baselines, claims, compare, costs, plots, plugins, results, store, tables

FORMATS = ("md", "tex", "csv", "parquet")

#----------------------------------------------------------------------------


# What the report was built from, and what it wrote.
@dataclass
class Report:
    index: Path
    frame: pd.DataFrame
    tables: tables.Tables
    files: list[Path]
    problems: list[str]


# The comparison references of each grid: `reference` (--reference) for every grid, else the
# grid's own `compare:` section as the run command recorded it; grids without one are not compared.
def references(results_root: Path, grids: Sequence[str], reference: Mapping[str, Any] | None
               ) -> dict[str, dict[str, Any]]:
    if reference:
        return {g: {"reference": dict(reference), "within": []} for g in grids}
    return {g: info for g in grids if (info := store.grid_info(results_root, g).get("compare"))}


# Build every artefact of the report under `out_dir`; returns what was written. `reference` (a
# selector) chooses the cells every run is compared with; `baseline` (a selector of stored baseline
# rows) the numbers the tables' delta column is taken to.
def build_report(results_root: str | Path, grids: Sequence[str] | None, out_dir: str | Path,
                 formats: Sequence[str] = FORMATS, with_plots: bool = True,
                 reference: Mapping[str, Any] | None = None, baseline: Mapping[str, Any] | None = None) -> Report:
    results_root, out_dir = Path(results_root), Path(out_dir)
    records, problems = store.scan(results_root, grids)
    _load_plugins(records)
    base, base_summary, base_problems = baselines.load_all()
    df = results.frame(results.record_rows(records) + [b.row() for b in base])
    built = tables.build_tables(df, delta_to=baseline)
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
        path.write_text(renderers[fmt](), encoding="utf-8")
        files.append(path)
        if fmt == "csv":                              # the per-run rows beside the group means
            runs = results.final_runs(df).drop(columns=["protocol"])
            files.append(tdir / "runs.csv")
            runs.to_csv(files[-1], index=False)
    grids_here = sorted({r["grid"] for r in records})
    compare_markdown = "\n".join(
        compare.render_markdown(compare.compare(df[(df["source"] == g) | (df["kind"] == "baseline")],
                                                ref["reference"], ref.get("within", ())), ref["reference"])
        for g, ref in references(results_root, grids_here, reference).items())
    claims_file = baselines.baselines_dir() / claims.CLAIMS_FILE
    shipped = claims.load_claims(claims_file) if claims_file.is_file() else []
    tested = [c for c in shipped if c.grid in grids_here]
    claims_markdown = claims.render_markdown(claims.evaluate_claims(df, tested))
    cost_markdown = costs.render_markdown(df)
    for name, text in (("compare.md", compare_markdown), ("claims.md", claims_markdown), ("cost.md", cost_markdown)):
        if text.strip():
            files.append(tdir / name)
            files[-1].write_text(text, encoding="utf-8")
    plot_files: list[Path] = []
    sample_files: list[Path] = []
    if with_plots:
        plot_files = (plots.plot_relaxations(df, out_dir / "plots") + plots.plot_steps(df, out_dir / "plots")
                      + plots.plot_curves(df, out_dir / "plots") + plots.plot_best_of_n(df, out_dir / "plots"))
        sample_files = plots.sample_pages(df, results_root, out_dir / "samples")
    index = out_dir / "report.md"
    index.write_text(render_index(records, problems, base_summary, base_problems, markdown, compare_markdown,
                                  claims_markdown, cost_markdown, files, plot_files, sample_files, out_dir),
                     encoding="utf-8")
    all_problems = [f"{p.path}: {p.message}" for p in problems] + base_problems
    return Report(index, df, built, files + plot_files + sample_files + [index], all_problems)


def _load_plugins(records: Sequence[Mapping[str, Any]]) -> None:
    # Labels come from the methods' own entries: import the plugins the runs used, if present.
    for module in sorted({m for r in records for m in r["spec"].get("plugins", [])}):
        try:
            plugins.load_module(module)
        except ImportError:
            pass                             # labels fall back to the spec's axes


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


# The report's index page: runs, tables, plots, samples, problems, failures.
def render_index(records: Sequence[Mapping[str, Any]],
                 problems: Sequence[store.Problem], base_summary: Sequence[str],
                 base_problems: Sequence[str],
                 table_markdown: str, compare_markdown: str, claims_markdown: str, cost_markdown: str,
                 table_files: Sequence[Path],
                 plot_files: Sequence[Path],
                 sample_files: Sequence[Path], out_dir: Path) -> str:
    out = ["# Results report", ""]
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
    out.append(table_markdown or "No ok records to tabulate.")
    out.append("")
    if compare_markdown.strip():
        out += ["## Comparisons with the reference cells", "", compare_markdown, ""]
    if claims_markdown:
        out += ["## Paper claims", "", claims_markdown, ""]
    if cost_markdown:
        out += ["## Cost", "", cost_markdown, ""]
    if plot_files:
        out += ["## Plots", ""]
        for p in plot_files:
            if p.suffix == ".png":
                out.append(f"![{p.stem}]({_rel(p, out_dir)}) ([pdf]({_rel(p.with_suffix('.pdf'), out_dir)}))")
        out.append("")
    if sample_files:
        out += ["## Samples", ""]
        out += [f"- [{p.stem}]({_rel(p, out_dir)})" for p in sample_files if p.suffix == ".png"]
        out.append("")
    out += ["## Baselines", ""] + [f"- {line}" for line in base_summary] + [""]
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        out += ["## Failed runs", ""]
        for r in failed:
            err = r.get("error") or {}
            out.append(f"- `{r['grid']}/{r['run_id']}` {r.get('description', '')}: "
                       f"{err.get('type', '?')}: {err.get('message', '')} (log: `{err.get('log', '')}`)")
        out.append("")
    if problems or base_problems:
        out += ["## Records and baselines that could not be read", ""]
        out += [f"- `{p.path}`: {p.message}" for p in problems]
        out += [f"- {p}" for p in base_problems]
        out.append("")
    return "\n".join(out)


# `python -m harness.report`; returns the exit code (2: bad arguments).
def main(argv: Sequence[str] | None = None) -> int:
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
    args = p.parse_args(argv)
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
    try:
        report = build_report(args.results, args.grid, out, formats, reference=reference, baseline=baseline)
    except KeyError as e:
        print(f"error: --reference / --baseline: {e.args[0]}", file=sys.stderr)
        return 2
    for prob in report.problems:
        print(f"warning: {prob}", file=sys.stderr)
    print(f"wrote {report.index} ({len(report.files)} files, {len(report.frame)} result rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
