"""Build-once caches for trained models: one directory per (name, configuration) content hash,
created under an exclusive file lock so concurrent jobs train a model once and reuse it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from softdimo.files import atomic_write, exclusive_lock, fsync_file, fsync_tree

DONE_MARKER = "complete.json"

#----------------------------------------------------------------------------


# The content hash of a configuration dataclass (plus a version tag of the code that trains it).
def config_hash(name: str, config: Any, version: str) -> str:
    body = json.dumps({"name": name, "version": version, "config": dataclasses.asdict(config)},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# Return the cache directory of `key`, calling `build(tmp_dir)` first if it is not complete yet.
# `build` writes its files into tmp_dir; when it returns, a marker with the build time is written
# last, everything is flushed to disk and the directory is renamed into place. Returns
# (directory, was_cache_hit).
def cached_dir(root: Path, key: str, build: Callable[[Path], dict[str, Any]]) -> tuple[Path, bool]:
    final = root / key
    if (final / DONE_MARKER).is_file():
        return final, True
    with exclusive_lock(root / f".{key}.lock"):
        if (final / DONE_MARKER).is_file():
            return final, True
        tmp = root / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        start = time.time()
        summary = build(tmp)
        summary = {**summary, "build_seconds": time.time() - start}
        atomic_write(tmp / DONE_MARKER, json.dumps(summary, indent=1, sort_keys=True))
        fsync_tree(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        fsync_file(root)
        return final, False


# A network trained once per (name, configuration, code version) and cached: `train(config, log)`
# returns (network, training history); the cache keeps its weights (safetensors), configuration
# and training log. Returns the network `new_network(config)` loaded from the cache and its info.
def cached_network(name: str, config: Any, version: str, cache_root: Path,
                   train: Callable[[Any, Callable[[str], None]], tuple[Any, list[dict[str, Any]]]],
                   new_network: Callable[[Any], Any],
                   log: Callable[[str], None] = lambda s: None) -> tuple[Any, dict[str, Any]]:
    from safetensors.torch import load_file, save_file
    key = f"{name}-{config_hash(name, config, version)}"

    def build(tmp: Path) -> dict[str, Any]:
        log(f"training {name} teacher {key} (cache miss)")
        network, history = train(config, log)
        save_file(network.state_dict(), str(tmp / "weights.safetensors"))
        (tmp / "config.json").write_text(json.dumps(config.__dict__, indent=1, sort_keys=True))
        (tmp / "train_log.json").write_text(json.dumps(history))
        return {"final_loss": history[-1]["loss"], "steps": len(history)}

    directory, hit = cached_dir(Path(cache_root) / "teachers", key, build)
    network = new_network(config)
    network.load_state_dict(load_file(str(directory / "weights.safetensors")))
    summary = json.loads((directory / DONE_MARKER).read_text())
    return network, {"cache_key": key, "cache_hit": hit, "cache_dir": str(directory), **summary}
