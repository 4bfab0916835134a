"""`python -m harness.report.baselines export --grid NAME [--grid ...] --out CSV` turns the ok records of
grids into a baseline file; `python -m harness.report.baselines list` prints the registered sources."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Iterable, Mapping, Sequence

from harness import store
from harness.builtin import plugins
from harness.store import baselines
from harness.store.baselines import Baseline, write_csv
from harness.store.results import record_rows

#----------------------------------------------------------------------------


# Baselines from ok records: one row per run and metric (its seed, run id, protocol and stage
# hashes), so that a new run can be paired with them, tested against their per-seed values and
# compared stage by stage.
def from_records(records: Iterable[Mapping[str, Any]], source: str, citation: str) -> list[Baseline]:
    ok = [r for r in records if r["status"] == "ok"]
    hashes = {r["run_id"]: r.get("stage_hashes", {}) for r in ok}
    rows = [r for r in record_rows(ok, curves=False) if r["value"] is not None]
    return [Baseline(source, "softdimo-harness mini reference", "", citation, "primary", r["grid"], r["teacher"],
                     r["teacher"], "mini", "", r["label"], r["steps"], r["metric"], r["metric"], float(r["value"]),
                     None, 1, r["higher_is_better"], r["protocol"], "", r["seed"], r["run_id"], hashes[r["run_id"]])
            for r in sorted(rows, key=lambda r: (r["teacher"], r["label"], r["metric"], r["seed"], r["run_id"]))]


# `python -m harness.report.baselines export ...`: ok records of one or more grids -> a baseline CSV.
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.report.baselines",
                                description="Baseline files: export ok records as baselines.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="turn the ok records of a grid into baseline rows")
    e.add_argument("--grid", required=True, action="append", metavar="NAME",
                   help="grid name (results/<NAME>/); repeat for several grids")
    e.add_argument("--results", default="results", metavar="DIR", help="results root")
    e.add_argument("--out", required=True, metavar="CSV", help="baseline file to write")
    e.add_argument("--source", default="mini_reference", help="source name in the file")
    sub.add_parser("list", help="print the registered baseline sources and their files")
    args = p.parse_args(argv)
    plugins.load_builtins()
    if args.command == "list":
        for name, src in baselines.registered.items():
            print(f"{name:16} {src.path()}  {src.description}")
        return 0
    records, problems = store.scan(args.results, args.grid)
    for prob in problems:
        print(f"warning: {prob.path}: {prob.message}", file=sys.stderr)
    for r in records:                       # labels come from the methods' own entries
        for module in r["spec"].get("plugins", []):
            plugins.load_module(module)
    grids = ", ".join(args.grid)
    rows = from_records(records, args.source, f"softdimo-harness grid(s) {grids}, exported from their ok records")
    if not rows:
        print(f"error: no ok records with metrics for grid(s) {grids} under {args.results}",
              file=sys.stderr)
        return 2
    write_csv(rows, args.out)
    print(f"wrote {len(rows)} baseline rows from {sum(r['status'] == 'ok' for r in records)} ok "
          f"records to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
