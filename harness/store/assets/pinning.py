"""The work of `python -m harness.prepare.assets pin` and `link`: record the sha256 of the files a user
placed (every registered asset found, every other file under the asset root, files named
explicitly), and link copies the upstream libraries already downloaded into the asset root.

A file whose pin differs is re-pinned only when asked (`update`), and a file that differs from its
publisher's digest or lies where another user could have put it is never pinned.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.store.assets import (Asset, asset_path, asset_root, library_copies, manifest, published_mismatch,
                            sha256_file)
from harness.store.assets.pins import LOCK_FILE, Pin, pin_key, read_pins, write_pins
from harness.store.assets.trust import untrusted_reason
from harness.store.provenance import now

#----------------------------------------------------------------------------


# What a pin run did: keys pinned now, keys already pinned and unchanged, and refusals (one line each).
@dataclass
class PinReport:
    pinned: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# Pin the files of `assets` (all registered ones by default; then also every other file under the
# asset root) and `files`. A changed file is re-pinned only if its key or one of its assets is in
# `update`. The lock file is written once, with every acceptable pin.
def pin(assets: list[Asset] | None = None, files: tuple[Path, ...] = (), update: tuple[str, ...] = ()) -> PinReport:
    root = asset_root()
    targets: dict[str, tuple[Path, set[str]]] = {}
    for asset in assets if assets is not None else [a for _, a in manifest.items()]:
        path = asset_path(asset)
        if path.is_file():
            targets.setdefault(pin_key(path, root), (path, set()))[1].add(asset.name)
    if assets is None:
        for path in _files_under(root):
            targets.setdefault(pin_key(path, root), (path, set()))
    for path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file to pin")
        targets.setdefault(pin_key(Path(path), root), (Path(path), set()))

    pins, report = read_pins(root), PinReport()
    for key in sorted(targets):
        path, names = targets[key]
        problem, new = _pin_one(key, path, names, pins.get(key), update)
        if problem is not None:
            report.problems.append(problem)
        elif new is None:
            report.unchanged.append(key)
        else:
            pins[key] = new
            report.pinned.append(key)
    if report.pinned:
        write_pins(root, pins)
    return report


# The new pin of one file, or (problem, None), or (None, None) when the existing pin stands.
def _pin_one(key: str, path: Path, names: set[str], old: Pin | None,
             update: tuple[str, ...]) -> tuple[str | None, Pin | None]:
    reason = untrusted_reason(path)
    if reason is not None:
        return f"{key}: not pinned, {reason}", None
    digest = sha256_file(path)
    for name in sorted(names):
        mismatch = published_mismatch(manifest.get(name), digest)
        if mismatch is not None:
            return f"{key}: not pinned, asset {name!r}: {mismatch}", None
    if old is not None and old.sha256 == digest:
        if names <= set(old.assets):
            return None, None
        return None, Pin(old.sha256, old.size, old.pinned, tuple(sorted(names | set(old.assets))))
    if old is not None and key not in update and not names & set(update):
        return (f"{key}: sha256 {digest} differs from the pinned {old.sha256} (pinned {old.pinned}); "
                f"pass --update {key} if the new file is intended"), None
    return None, Pin(digest, path.stat().st_size, now(), tuple(sorted(names)))


# Every file under the asset root a user placed there (links to files included; hidden names and
# the lock file left out), in sorted order.
def _files_under(root: Path) -> list[Path]:
    out = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(folder) / n for n in sorted(names)
                if not n.startswith(".") and n != LOCK_FILE and (Path(folder) / n).is_file()]
    return out


# Link, for each asset missing from the asset root, the first copy an upstream library cached that no
# other user could have put there; returns (asset name, link, target) of each link made and one line
# per copy refused.
def link(assets: list[Asset] | None = None) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    made, refused = [], []
    for asset in assets if assets is not None else [a for _, a in manifest.items()]:
        place = asset_root() / os.path.expanduser(asset.filename)
        if asset_path(asset).is_file() or place.is_file() or os.path.islink(place):
            continue
        for copy in library_copies(asset):
            reason = untrusted_reason(copy)
            if reason is not None:
                refused.append(f"{asset.name}: {copy} not linked, {reason}")
                continue
            place.parent.mkdir(parents=True, exist_ok=True)
            place.symlink_to(copy.resolve())
            made.append((asset.name, place, copy))
            break
    return made, refused
