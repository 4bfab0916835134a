"""The work of one tokenisation split into shards and chunks, kept on disk so that any shard can stop
and resume, and merged into the one file `teacher.real_tokens` reads.

For an output `FILE`, the folder `FILE.parts/` holds `plan.json` (everything that fixes the result:
teacher configuration, its weight files' sha256, preprocessing, resolution, flips, the image
listing's sha256, shards, chunk size) and one `chunk-<start>-<end>.safetensors` per finished chunk
of images [start, end) of the sorted listing. Shard s of K covers images [s N / K, (s+1) N / K)
(integer division), cut into chunks of `chunk_size` images; a chunk file is written atomically, so
one that exists is complete, and a restarted shard skips it. Every shard that finishes checks
whether all chunks of all shards exist; the first to find them merges them in order into FILE (with
the plan in the file's metadata), checks it with the teachers' own reader, and removes the parts
folder. `--merge` does only that step.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from softdimo.files import atomic_write
from softdimo.teachers.base import TokenLayout
from softdimo.teachers.class_conditioned import load_real_tokens, save_real_tokens

FORMAT = "softdimo-real-tokens-1"
PLAN_FILE = "plan.json"

#----------------------------------------------------------------------------


class PlanMismatchError(ValueError):
    pass


# Where the parts of an output file live.
def parts_dir(out: Path) -> Path:
    return Path(str(out) + ".parts")


# Images [start, end) of shard `shard` of `num_shards` over `n` images.
def shard_range(n: int, shard: int, num_shards: int) -> tuple[int, int]:
    return shard * n // num_shards, (shard + 1) * n // num_shards


# The chunks [start, end) of an image range.
def chunk_ranges(start: int, end: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk_size, end)) for a in range(start, end, chunk_size)]


# Every chunk of every shard, in image order.
def all_chunks(plan: dict[str, Any]) -> list[tuple[int, int]]:
    return [c for s in range(plan["num_shards"])
            for c in chunk_ranges(*shard_range(plan["num_images"], s, plan["num_shards"]), plan["chunk_size"])]


def chunk_path(parts: Path, chunk: tuple[int, int]) -> Path:
    return parts / f"chunk-{chunk[0]:09d}-{chunk[1]:09d}.safetensors"


# Write the plan if this is the first shard to start, else check it is the same plan (a mismatch
# names every differing key). Returns the plan on disk.
def agree_on_plan(parts: Path, plan: dict[str, Any]) -> dict[str, Any]:
    parts.mkdir(parents=True, exist_ok=True)
    path = parts / PLAN_FILE
    if not path.is_file():
        try:
            atomic_write(path, json.dumps(plan, indent=1, sort_keys=True), lock=parts / ".plan.lock",
                         check=lambda: _absent(path))
        except FileExistsError:
            pass                                    # another shard wrote it first: compare below
    return check_plan(json.loads(path.read_text(encoding="utf-8")), plan, str(path))


# `recorded` if it equals `plan`, else PlanMismatchError naming the differences and `where`.
def check_plan(recorded: dict[str, Any], plan: dict[str, Any], where: str) -> dict[str, Any]:
    differ = sorted(k for k in set(recorded) | set(plan) if recorded.get(k) != plan.get(k))
    if differ:
        lines = "; ".join(f"{k}: {_short(recorded.get(k))} there, {_short(plan.get(k))} now" for k in differ)
        raise PlanMismatchError(f"{where} was made with other settings ({lines}); use another --out, or "
                                f"remove it to start again")
    return recorded


def _absent(path: Path) -> None:
    if path.exists():
        raise FileExistsError(path)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


# Save one finished chunk: tokens [rows, L, G] and labels [rows].
def write_chunk(parts: Path, chunk: tuple[int, int], tokens: Tensor, labels: Tensor) -> Path:
    return atomic_write(chunk_path(parts, chunk), lambda tmp: save_file(
        {"tokens": tokens.to(torch.int32).contiguous(), "labels": labels.long().contiguous()}, str(tmp)))


# Merge every chunk into `out` if all exist and nobody merged yet; check the file with the teachers'
# reader against the plan's layout and class count, then remove the parts. Returns True if this call
# wrote `out`, False if chunks are still missing or another shard merged first.
def merge(out: Path, plan: dict[str, Any]) -> bool:
    parts = parts_dir(out)
    chunks = all_chunks(plan)
    if out.is_file() or not all(chunk_path(parts, c).is_file() for c in chunks):
        return False
    try:
        loaded = [load_file(str(chunk_path(parts, c))) for c in chunks]
        tokens = torch.cat([d["tokens"] for d in loaded])
        labels = torch.cat([d["labels"] for d in loaded])
        expected = plan["num_images"] * (2 if plan["flip"] else 1)
        if tokens.shape[0] != expected:
            raise RuntimeError(f"{parts}: the chunks hold {tokens.shape[0]} rows, the plan {expected}")
        metadata = {"format": FORMAT, "plan": json.dumps(plan, sort_keys=True)}
        atomic_write(out, lambda tmp: save_real_tokens(tmp, tokens, labels, metadata),
                     lock=parts / ".merge.lock", check=lambda: _absent(out))
    except (FileExistsError, FileNotFoundError):
        if out.is_file():
            return False                            # another shard merged (and removed the parts) first
        raise
    positions, groups, classes = plan["layout"]
    resolution = plan["resolution"]
    load_real_tokens(out, TokenLayout(positions, groups, classes, classes, (3, resolution, resolution)),
                     plan["num_classes"])
    shutil.rmtree(parts)
    return True


# The plan stored in a merged file's metadata, or None if the file is not one (or no safetensors file).
def merged_plan(out: Path) -> dict[str, Any] | None:
    try:
        with safe_open(str(out), framework="pt") as f:
            metadata = f.metadata() or {}
    except SafetensorError:
        return None
    if metadata.get("format") != FORMAT:
        return None
    return json.loads(metadata["plan"])


@dataclass(frozen=True)
class Progress:
    done: int           # images of this shard already in chunk files
    total: int          # images of this shard
    missing: list[tuple[int, int]]


# What is left of one shard: its chunks without a file.
def shard_progress(parts: Path, plan: dict[str, Any], shard: int) -> Progress:
    start, end = shard_range(plan["num_images"], shard, plan["num_shards"])
    chunks = chunk_ranges(start, end, plan["chunk_size"])
    missing = [c for c in chunks if not chunk_path(parts, c).is_file()]
    return Progress(end - start - sum(b - a for a, b in missing), end - start, missing)
