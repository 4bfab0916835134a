"""The lock file of pinned assets: the sha256 each file had when the user pinned it.

`<asset root>/assets.lock.json` holds one entry per file, keyed by its path relative to the asset
root (or by its absolute path when it lies elsewhere, e.g. named by an asset's own variable):

    {"format": 1, "files": {"maskbit/maskbit_tokenizer_14bit.bin":
        {"sha256": "...", "size": 220000000, "pinned": "2025-01-01T12:00:00+00:00",
         "assets": ["maskbit_tokenizer_14bit"]}}}

Every resolve of an asset whose file is pinned hashes the file and refuses a mismatch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.store.assets.trust import untrusted_reason
from softdimo.files import atomic_write

LOCK_FILE = "assets.lock.json"
LOCK_FORMAT = 1

#----------------------------------------------------------------------------


# One pinned file: its sha256 and size when pinned, when, and the assets it was pinned for.
@dataclass(frozen=True)
class Pin:
    sha256: str
    size: int
    pinned: str
    assets: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "pinned": self.pinned, "assets": list(self.assets)}


class LockFileError(RuntimeError):
    pass


# The lock file of an asset root.
def lock_path(root: Path) -> Path:
    return Path(root) / LOCK_FILE


# The lock file's key of a file: its path relative to the asset root as named (links are not
# followed, so a link in the root keeps its own name), or its absolute path when outside the root.
def pin_key(path: Path, root: Path) -> str:
    path = Path(os.path.abspath(os.path.expanduser(path)))
    try:
        return path.relative_to(Path(os.path.abspath(root))).as_posix()
    except ValueError:
        return str(path)


# Every pin of an asset root ({} without a lock file); a lock file another user could have written,
# or one that is not the lock format, is an error naming it.
def read_pins(root: Path) -> dict[str, Pin]:
    path = lock_path(root)
    if not path.is_file():
        return {}
    reason = untrusted_reason(path)
    if reason is not None:
        raise LockFileError(f"refusing to read the asset lock file {path}: {reason}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != LOCK_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {LOCK_FORMAT}")
        return {key: Pin(e["sha256"], int(e["size"]), e["pinned"], tuple(e.get("assets", ())))
                for key, e in data["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LockFileError(f"{path} is not a readable asset lock file ({e}); fix or remove it, then pin "
                            f"again with `python -m harness.prepare.assets pin`") from e


# Write the pins of an asset root (atomically, keys sorted).
def write_pins(root: Path, pins: dict[str, Pin]) -> Path:
    body = {"format": LOCK_FORMAT, "files": {k: pins[k].to_json() for k in sorted(pins)}}
    return atomic_write(lock_path(root), json.dumps(body, indent=1, sort_keys=True) + "\n")
