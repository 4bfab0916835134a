"""`python -m harness.assets check [--names NAME ...] [--no-hash]`: the state of every asset the
built-in entries (and installed plugins) declare, as present / missing / corrupt; exit status 1
when one needs attention."""
from __future__ import annotations

import argparse
import sys

from harness import plugins
from harness.assets import check_asset, describe_problem, manifest
from harness.registry import UnknownNameError

#----------------------------------------------------------------------------


# Print the state of the named assets (all registered ones by default); returns the exit status.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.assets", description=(__doc__ or "").split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="list assets as present / missing / corrupt")
    check.add_argument("--names", nargs="+", metavar="NAME", help="assets to check (default: all)")
    check.add_argument("--no-hash", action="store_true", help="skip sha256 verification")
    args = parser.parse_args(argv)

    plugins.load_builtins()          # teachers and metrics declare their assets when imported
    try:
        wanted = [manifest.get(n) for n in args.names] if args.names else [a for _, a in manifest.items()]
    except UnknownNameError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    statuses = [check_asset(a, verify_hash=not args.no_hash) for a in wanted]
    width = max((len(s.asset.name) for s in statuses), default=4)
    for s in statuses:
        note = "" if s.asset.sha256 or s.state != "present" else "  (no published sha256)"
        print(f"{s.asset.name:<{width}}  {s.state:<7}  {s.path}{note}")
    problems = [describe_problem(s) for s in statuses if s.state != "present"]
    if problems:
        print(f"\n{len(problems)} of {len(statuses)} assets need attention:", file=sys.stderr)
        for p in problems:
            print(f"- {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
