"""The one way the project writes a file, and its one file lock.

`atomic_write` writes to a temporary file beside the target, flushes it to disk (fsync) and then
renames it over the target (or links it into place, for a file that must not exist yet), so a
reader sees the old file or the new one, never half of one, and a crash leaves no torn file.
`exclusive_lock` is an exclusive `flock` on a lock file, for check-then-write steps that several
processes may take at once. Both live in `softdimo`, which never imports `harness`, so that the
method's own writers (distillation checkpoints, the build-once caches) and every writer of the
harness use the same two.
"""
from __future__ import annotations

import fcntl
import os
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator

#----------------------------------------------------------------------------


# Write `path` atomically: `content` (text, bytes, or a function that writes the path it is given)
# goes to a temporary file beside `path`, fsynced, which then replaces `path` (and the directory
# entry is fsynced). With `lock`, the replace happens under that exclusive lock, after `check()`
# (which may refuse by raising). With `exclusive`, `path` must not exist: the file is linked into
# place, and FileExistsError says another writer came first.
def atomic_write(path: str | Path, content: str | bytes | Callable[[Path], None],
                 lock: Path | None = None, check: Callable[[], None] | None = None,
                 exclusive: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        if callable(content):
            content(tmp)
        else:
            tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(tmp, 0o644)
        fsync_file(tmp)
        with exclusive_lock(lock) if lock is not None else nullcontext():
            if check is not None:
                check()
            if exclusive:
                os.link(tmp, path)
            else:
                os.replace(tmp, path)
            fsync_file(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# Hold an exclusive flock on `lock_path` (created if absent) for the duration of the block.
@contextmanager
def exclusive_lock(lock_path: str | Path) -> Iterator[None]:
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)                    # closing the descriptor releases the lock


# Flush a file (or a directory's entries) to disk.
def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Flush every file and directory under `directory` (built privately, before it is renamed into place
# as a whole).
def fsync_tree(directory: str | Path) -> None:
    for folder, _, files in os.walk(directory):
        for name in files:
            fsync_file(Path(folder) / name)
        fsync_file(folder)
