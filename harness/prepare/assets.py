"""`python -m harness.prepare.assets check | link | pin`: the assets the built-in entries (and installed
plugins) declare.

- `check [--names NAME ...] [--no-hash]`: each asset as present / missing / corrupt / changed /
  untrusted, and whether it is pinned; exit status 1 when one needs attention.
- `link [--names NAME ...]`: link copies the upstream libraries already downloaded (torch.hub, the
  Hugging Face hub cache, HPS's root) into the asset root, for assets missing there.
- `pin [--names NAME ...] [--files PATH ...] [--update KEY ...]`: record the sha256 of every asset
  found (without `--names`, of every other file under the asset root too) in
  `<asset root>/assets.lock.json`; a file whose pin differs is refused unless named in `--update`
  (its lock-file key or asset name). Exit status 1 when a file was refused.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.builtin import plugins
from harness.contracts.registry import UnknownNameError
from harness.store.assets import Asset, asset_root, check_asset, describe_problem, manifest, pinning
from harness.store.assets.pins import LockFileError, lock_path

#----------------------------------------------------------------------------


# Run one subcommand; returns the exit status.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.prepare.assets",
                                     description=(__doc__ or "").split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="list assets as present / missing / corrupt / changed / untrusted")
    check.add_argument("--no-hash", action="store_true", help="skip sha256 verification (published and pinned)")
    link = sub.add_parser("link", help="link copies the upstream libraries downloaded into the asset root")
    pin = sub.add_parser("pin", help="record the sha256 of the assets placed, in the asset root's lock file")
    pin.add_argument("--files", nargs="+", type=Path, default=[], metavar="PATH", help="other files to pin")
    pin.add_argument("--update", nargs="+", default=[], metavar="KEY",
                     help="re-pin these changed files (lock-file key or asset name)")
    for command in (check, link, pin):
        command.add_argument("--names", nargs="+", metavar="NAME", help="assets to act on (default: all)")
    args = parser.parse_args(argv)

    plugins.load_builtins()          # teachers and metrics declare their assets when imported
    try:
        wanted = [manifest.get(n) for n in args.names] if args.names else None
    except UnknownNameError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command == "link":
        return _link(wanted)
    if args.command == "pin":
        return _pin(wanted, tuple(args.files), tuple(args.update))
    return _check(wanted if wanted is not None else [a for _, a in manifest.items()], not args.no_hash)


def _check(wanted: list[Asset], verify_hash: bool) -> int:
    statuses = [check_asset(a, verify_hash=verify_hash) for a in wanted]
    width = max((len(s.asset.name) for s in statuses), default=4)
    for s in statuses:
        note = ""
        if s.state == "present" and verify_hash:
            published = s.asset.sha256 or s.asset.sha256_prefix
            note = "  (" + ", ".join([*(["published sha256"] if published else []),
                                      "pinned" if s.pinned else "not pinned"]) + ")"
        print(f"{s.asset.name:<{width}}  {s.state:<9}  {s.path}{note}")
    problems = [describe_problem(s) for s in statuses if s.state != "present"]
    if problems:
        print(f"\n{len(problems)} of {len(statuses)} assets need attention:", file=sys.stderr)
        for p in problems:
            print(f"- {p}", file=sys.stderr)
    return 1 if problems else 0


def _link(wanted: list[Asset] | None) -> int:
    made, refused = pinning.link(wanted)
    for name, place, target in made:
        print(f"{name}: linked {place} -> {target}")
    for line in refused:
        print(f"refused: {line}", file=sys.stderr)
    if not made:
        print("nothing to link: every asset is in the asset root or has no copy in an upstream cache")
    return 0


def _pin(wanted: list[Asset] | None, files: tuple[Path, ...], update: tuple[str, ...]) -> int:
    try:
        report = pinning.pin(wanted, files, update)
    except (LockFileError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key in report.pinned:
        print(f"pinned     {key}")
    print(f"{len(report.pinned)} pinned now, {len(report.unchanged)} already pinned and unchanged "
          f"(lock file {lock_path(asset_root())})")
    for line in report.problems:
        print(f"refused: {line}", file=sys.stderr)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
