"""Build-once caches for trained models: one directory per (name, configuration) content hash,
created under an exclusive file lock so concurrent jobs train a model once and reuse it.

An entry is built in a temporary directory, sealed with its content digest (`cache_digest`:
`content.sha256`, written last) and renamed into place. Every use verifies it first: an entry
that is truncated, altered or has no digest is never loaded; it is moved aside (`.corrupt/`) and
built again, or refused with its name when it cannot be moved. A wait for another process's lock
(it is building the entry) is logged with the holder, and given up after `LOCK_TIMEOUT_S`.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from softdimo.files import atomic_write, fsync_file, fsync_tree
from softdimo.teachers.cache_digest import DIGEST_FILE, CorruptEntryError, verify_entry, write_digest

DONE_MARKER = "complete.json"
CORRUPT_DIR = ".corrupt"                 # <root>/.corrupt/<key>-<time>-<pid>: entries set aside
LOCK_TIMEOUT_S = 12 * 3600.0             # how long to wait for another process building an entry
LOCK_POLL_S = 1.0
LOCK_LOG_EVERY_S = 300.0                 # a waiting process says so again this often
NETWORKS_DIR = "teachers"                 # cached_network's entries, under the cache root
LOCK_WAIT = "another process builds it"  # in the log line of a process that waits on another's build

#----------------------------------------------------------------------------


# Another process held an entry's lock for longer than the wait allows.
class CacheLockTimeout(TimeoutError):
    pass


# The content hash of a configuration dataclass (plus a version tag of the code that trains it).
def config_hash(name: str, config: Any, version: str) -> str:
    body = json.dumps({"name": name, "version": version, "config": dataclasses.asdict(config)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# Where `cached_network` keeps a network under the cache root: "teachers/<name>-<config hash>".
def network_entry(name: str, config: Any, version: str) -> str:
    return f"{NETWORKS_DIR}/{name}-{config_hash(name, config, version)}"


# Hold the exclusive lock of `what` (a flock on `lock_path`), waiting at most `timeout_s` for the
# process holding it: the wait is logged at once and every LOCK_LOG_EVERY_S, naming the holder
# (each holder writes who it is into the lock file).
@contextmanager
def entry_lock(lock_path: Path, what: str, log: Callable[[str], None] = lambda s: None,
               timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as f:
        start, logged = time.monotonic(), None
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= timeout_s:
                    raise CacheLockTimeout(
                        f"gave up after {waited / 60:.1f} min waiting for {what}: its lock {lock_path} is "
                        f"held by {_holder(f)}") from None
                if logged is None or time.monotonic() - logged >= LOCK_LOG_EVERY_S:
                    log(f"waiting for {what}: {LOCK_WAIT} ({_holder(f)}; lock "
                        f"{lock_path}); waited {waited / 60:.1f} min of at most {timeout_s / 60:.0f}")
                    logged = time.monotonic()
                time.sleep(LOCK_POLL_S)
        if logged is not None:
            log(f"{what}: lock free after {(time.monotonic() - start) / 60:.1f} min")
        f.truncate(0)
        f.write(f"host {socket.gethostname()} pid {os.getpid()} job {_job_id()} since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _holder(f: IO[str]) -> str:
    f.seek(0)
    return f.read().strip() or "a process that did not say who it is"


def _job_id() -> str:
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or "none"


# Whether the entry `final` completed and was sealed (its marker and digest file exist), without
# hashing its files: what a launch plans by; an entry without a digest (an older version's) is
# built again by its first user, so it counts as not built.
def sealed(final: Path) -> bool:
    return (final / DONE_MARKER).is_file() and (final / DIGEST_FILE).is_file()


# Whether the complete entry `final` may be used: verified against its digest. A corrupt entry is
# logged (and set aside once the lock is held).
def _usable(final: Path, log: Callable[[str], None]) -> bool:
    if not (final / DONE_MARKER).is_file():
        return False
    try:
        verify_entry(final)
    except CorruptEntryError as e:
        log(f"{e}; it is never loaded: it is set aside and built again")
        return False
    return True


# Move an entry that cannot be used out of the way, keeping it for inspection under
# <root>/.corrupt/; raises CorruptEntryError naming it when it cannot be moved.
def _set_aside(root: Path, final: Path, log: Callable[[str], None]) -> None:
    if not final.exists():
        return
    aside = root / CORRUPT_DIR / f"{final.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(final, aside)
    except OSError as e:
        raise CorruptEntryError(final, f"it cannot be used and cannot be moved aside ({e}); delete it to "
                                       f"build it again") from None
    log(f"cache entry {final} moved to {aside} (delete that when no longer needed)")


# Return the cache directory of `key`, calling `build(tmp_dir)` first if it is not complete and
# intact. `build` writes its files into tmp_dir; a marker with the build time and the digest file
# are written last and the directory is renamed into place. Returns (directory, was_cache_hit);
# the directory has been verified against its digest.
def cached_dir(root: Path, key: str, build: Callable[[Path], dict[str, Any]],
               log: Callable[[str], None] = lambda s: None,
               lock_timeout_s: float = LOCK_TIMEOUT_S) -> tuple[Path, bool]:
    final = root / key
    if _usable(final, log):
        return final, True
    try:
        with entry_lock(root / f".{key}.lock", f"cache entry {final}", log, lock_timeout_s):
            if final.exists() and _usable(final, lambda s: None):   # built by the process waited for
                return final, True
            _set_aside(root, final, log)
            tmp = root / f".{key}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            start = time.time()
            summary = build(tmp)
            summary = {**summary, "build_seconds": time.time() - start}
            atomic_write(tmp / DONE_MARKER, json.dumps(summary, indent=1, sort_keys=True))
            write_digest(tmp)
            fsync_tree(tmp)
            os.replace(tmp, final)
            fsync_file(root)
            return final, False
    except (CacheLockTimeout, CorruptEntryError):
        raise
    except OSError as e:
        if (final / DONE_MARKER).is_file():     # a damaged entry that cannot be built again here
            raise CorruptEntryError(final, f"it is not intact and cannot be built again here ({e.strerror or e}: "
                                           f"{e.filename or ''}); it is never loaded") from e
        raise


# A network trained once per (name, configuration, code version) and cached: `train(config, log)`
# returns (network, training history); the cache keeps its weights (safetensors), configuration
# and training log, and whatever `extra(network, directory)` writes beside them (its summary joins
# the entry's). Returns the network `new_network(config)` loaded from the cache and its info.
def cached_network(name: str, config: Any, version: str, cache_root: Path,
                   train: Callable[[Any, Callable[[str], None]], tuple[Any, list[dict[str, Any]]]],
                   new_network: Callable[[Any], Any],
                   log: Callable[[str], None] = lambda s: None,
                   extra: Callable[[Any, Path], dict[str, Any]] | None = None) -> tuple[Any, dict[str, Any]]:
    from safetensors.torch import load_file, save_file
    entry = network_entry(name, config, version)
    key = entry.split("/", 1)[1]

    def build(tmp: Path) -> dict[str, Any]:
        log(f"training {name} teacher {key} (cache miss)")
        network, history = train(config, log)
        atomic_write(tmp / "weights.safetensors", lambda path: save_file(network.state_dict(), str(path)))
        atomic_write(tmp / "config.json", json.dumps(config.__dict__, indent=1, sort_keys=True))
        atomic_write(tmp / "train_log.json", json.dumps(history))
        return {"final_loss": history[-1]["loss"], "steps": len(history),
                **(extra(network, tmp) if extra is not None else {})}

    directory, hit = cached_dir(Path(cache_root) / NETWORKS_DIR, key, build, log)
    network = new_network(config)
    network.load_state_dict(load_file(str(directory / "weights.safetensors")))
    summary = json.loads((directory / DONE_MARKER).read_text())
    return network, {"cache_key": key, "cache_hit": hit, "cache_dir": str(directory), **summary}
