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

from harness import baselines, claims, costs, paired, plots, plugins, store, tables
from harness.results import ResultRow, rows_from_records

FORMATS = ("md", "tex", "csv")

#----------------------------------------------------------------------------


# What the report was built from, and what it wrote.
@dataclass
class Report:
    index: Path
    rows: list[ResultRow]
    tables: tables.Tables
    files: list[Path]
    problems: list[str]


# The flat results table of some records plus every baseline.
def results_table(records: Sequence[Mapping[str, Any]], baseline_rows: Sequence[baselines.Baseline]
                  ) -> list[ResultRow]:
    return rows_from_records(records) + [b.row() for b in baseline_rows]


# Build every artefact of the report under `out_dir`; returns what was written.
def build_report(results_root: str | Path, grids: Sequence[str] | None, out_dir: str | Path,
                 formats: Sequence[str] = FORMATS, with_plots: bool = True) -> Report:
    results_root, out_dir = Path(results_root), Path(out_dir)
    records, problems = store.scan(results_root, grids)
    _load_plugins(records)
    base, base_summary, base_problems = baselines.load_all()
    rows = results_table(records, base)
    built = tables.build_tables(rows)
    files: list[Path] = []
    tdir = out_dir / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    markdown = tables.render_markdown(built)          # also embedded in the index
    renderers = {"md": lambda t: markdown, "tex": tables.render_latex, "csv": tables.render_csv}
    for fmt in formats:
        path = tdir / f"results.{fmt}"
        path.write_text(renderers[fmt](built), encoding="utf-8")
        files.append(path)
    paired_markdown = paired.render_markdown(paired.paired_differences(rows))
    grids_here = {r["grid"] for r in records}
    tested = [c for c in claims.load_claims(baselines.baselines_dir() / claims.CLAIMS_FILE) if c.grid in grids_here]
    claims_markdown = claims.render_markdown(claims.evaluate_claims(rows, tested))
    cost_markdown = costs.render_markdown(records)
    for name, text in (("paired.md", paired_markdown), ("claims.md", claims_markdown), ("cost.md", cost_markdown)):
        if text:
            files.append(tdir / name)
            files[-1].write_text(text, encoding="utf-8")
    plot_files: list[Path] = []
    sample_files: list[Path] = []
    if with_plots:
        ok = [r for r in records if r["status"] in ("ok", "diverged")]
        plot_files = (plots.plot_relaxations(rows, out_dir / "plots")
                      + plots.plot_steps(rows, out_dir / "plots")
                      + plots.plot_curves(ok, out_dir / "plots")
                      + plots.plot_best_of_n(ok, out_dir / "plots"))
        sample_files = plots.sample_pages(records, results_root, out_dir / "samples")
    index = out_dir / "report.md"
    index.write_text(render_index(results_root, records, problems, base_summary, base_problems,
                                  markdown, paired_markdown, claims_markdown, cost_markdown, files, plot_files,
                                  sample_files, out_dir),
                     encoding="utf-8")
    all_problems = [f"{p.path}: {p.message}" for p in problems] + base_problems
    return Report(index, rows, built, files + plot_files + sample_files + [index], all_problems)


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
def render_index(results_root: Path, records: Sequence[Mapping[str, Any]],
                 problems: Sequence[store.Problem], base_summary: Sequence[str],
                 base_problems: Sequence[str],
                 table_markdown: str, paired_markdown: str, claims_markdown: str, cost_markdown: str,
                 table_files: Sequence[Path],
                 plot_files: Sequence[Path],
                 sample_files: Sequence[Path], out_dir: Path) -> str:
    out = ["# Results report", ""]
    by_grid = Counter((r["grid"], r["status"]) for r in records)
    out.append(f"Results root: `{results_root}`; {len(records)} records.")
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
    if paired_markdown:
        out += ["## Paired differences between relaxations", "", paired_markdown, ""]
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
                   help="table formats, comma-separated: md, tex, csv (default: all)")
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
    report = build_report(args.results, args.grid, out, formats)
    for prob in report.problems:
        print(f"warning: {prob}", file=sys.stderr)
    print(f"wrote {report.index} ({len(report.files)} files, {len(report.rows)} result rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
