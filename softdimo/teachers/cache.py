"""Build-once caches for trained models: one directory per (name, configuration) content hash,
created under an exclusive file lock so concurrent jobs train a model once and reuse it.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

DONE_MARKER = "complete.json"
NETWORKS_DIR = "teachers"                     # cached_network's entries, under the cache root
LOCK_WAIT = "waiting for the cache lock of"   # the log line of a process that waits on another's build

#----------------------------------------------------------------------------


# The content hash of a configuration dataclass (plus a version tag of the code that trains it).
def config_hash(name: str, config: Any, version: str) -> str:
    body = json.dumps({"name": name, "version": version, "config": dataclasses.asdict(config)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# Where `cached_network` keeps a network under the cache root: "teachers/<name>-<config hash>".
def network_entry(name: str, config: Any, version: str) -> str:
    return f"{NETWORKS_DIR}/{name}-{config_hash(name, config, version)}"


# Hold an exclusive file lock; `on_wait()` is called first when another process holds it.
@contextmanager
def _exclusive(lock_path: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# Return the cache directory of `key`, calling `build(tmp_dir)` first if it is not complete yet.
# `build` writes its files into tmp_dir; the directory is renamed into place when it returns, and
# a marker with the build time is written last. Returns (directory, was_cache_hit). A process that
# finds another one building the entry logs that it waits (LOCK_WAIT), then waits for it.
def cached_dir(root: Path, key: str, build: Callable[[Path], dict[str, Any]],
               log: Callable[[str], None] = lambda s: None) -> tuple[Path, bool]:
    final = root / key
    if (final / DONE_MARKER).is_file():
        return final, True
    def waiting() -> None:
        log(f"{LOCK_WAIT} {root.name}/{key}: another process is building it")

    with _exclusive(root / f".{key}.lock", waiting):
        if (final / DONE_MARKER).is_file():
            return final, True
        tmp = root / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        start = time.time()
        summary = build(tmp)
        summary = {**summary, "build_seconds": time.time() - start}
        (tmp / DONE_MARKER).write_text(json.dumps(summary, indent=1, sort_keys=True))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        return final, False


# A network trained once per (name, configuration, code version) and cached: `train(config, log)`
# returns (network, training history); the cache keeps its weights (safetensors), configuration
# and training log. Returns the network `new_network(config)` loaded from the cache and its info.
def cached_network(name: str, config: Any, version: str, cache_root: Path,
                   train: Callable[[Any, Callable[[str], None]], tuple[Any, list[dict[str, Any]]]],
                   new_network: Callable[[Any], Any],
                   log: Callable[[str], None] = lambda s: None) -> tuple[Any, dict[str, Any]]:
    from safetensors.torch import load_file, save_file
    entry = network_entry(name, config, version)
    key = entry.split("/", 1)[1]

    def build(tmp: Path) -> dict[str, Any]:
        log(f"training {name} teacher {key} (cache miss)")
        network, history = train(config, log)
        save_file(network.state_dict(), str(tmp / "weights.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config.__dict__, indent=1, sort_keys=True))
        (tmp / "train_log.json").write_text(json.dumps(history))
        return {"final_loss": history[-1]["loss"], "steps": len(history)}

    directory, hit = cached_dir(Path(cache_root) / NETWORKS_DIR, key, build, log)
    network = new_network(config)
    network.load_state_dict(load_file(str(directory / "weights.safetensors")))
    summary = json.loads((directory / DONE_MARKER).read_text())
    return network, {"cache_key": key, "cache_hit": hit, "cache_dir": str(directory), **summary}
