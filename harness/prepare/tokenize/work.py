"""Tokenise one shard of an image folder with a class-conditional teacher's own encoder, chunk by
chunk (`parts.py`), and merge when every shard is done.

The teacher is built through its registered entry exactly as a cell builds it (its `teacher.*`
configuration, its weight files resolved as assets, checked against their pins), and images are
encoded with `teacher.encode`, so the tokens are the ones that teacher's real-token reader expects.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from harness.builtin import plugins
from harness.contracts import registry
from harness.contracts.entries import RunContext
from harness.prepare.tokenize import parts
from harness.prepare.tokenize.folder import Listing, list_images
from harness.prepare.tokenize.preprocess import PRESETS, load_image
from harness.store import assets
from softdimo.params import schema

# The teachers whose tokens come from images, and the preprocessing each defaults to (its own).
DEFAULT_PRESETS = {"maskbit": "maskbit", "maskgit": "maskgit"}

#----------------------------------------------------------------------------


# Everything one shard's run needs (the command line's values).
@dataclass(frozen=True)
class Job:
    teacher: str
    images: Path
    out: Path
    params: tuple[tuple[str, Any], ...] = ()   # teacher.* fields
    preprocess: str | None = None              # None: the teacher's default
    flip: bool = False                         # also tokenise each image's mirror
    classes: Path | None = None                # class-list file (label order)
    num_shards: int = 1
    shard: int = 0
    chunk_size: int = 2048
    batch_size: int = 64
    workers: int = 0
    device: str = "cpu"
    progress: bool = True


# The teacher of a job on its device, its configuration, and the sha256 of every weight file it read.
def build_teacher(job: Job, log: Callable[[str], None]) -> tuple[Any, dict[str, Any], dict[str, str]]:
    plugins.load_builtins()
    if job.teacher not in DEFAULT_PRESETS:
        raise ValueError(f"--teacher {job.teacher!r}: tokens from images are made for {', '.join(DEFAULT_PRESETS)}")
    entry = registry.teachers.get(job.teacher)
    fields = schema(entry.config_cls)
    values = {}
    for key, value in job.params:
        if key not in fields:
            raise ValueError(f"--set {key}: {job.teacher} has no field {key!r}; allowed: {', '.join(fields)}")
        try:
            values[key] = fields[key].check(value)
        except ValueError as e:
            raise ValueError(f"--set {key}={value!r}: {e}") from None
    config = entry.config_cls(**values)
    assets.forget_used_assets()
    ctx = RunContext(run_dir=parts.parts_dir(job.out), cache_dir=parts.parts_dir(job.out),
                     device=torch.device(job.device), log=log)
    teacher = entry.build(config, ctx)
    return teacher, dataclasses.asdict(config), {n: used["sha256"] for n, used in assets.used_assets().items()}


# What fixes the result of a job (shards must agree on it; the merged file stores it).
def make_plan(job: Job, teacher: Any, config: dict[str, Any], weights: dict[str, str], listing: Listing) -> dict[str, Any]:
    layout = teacher.layout
    return {"format": parts.FORMAT, "teacher": job.teacher, "teacher_config": config, "weights_sha256": weights,
            "preprocess": job.preprocess or DEFAULT_PRESETS[job.teacher], "resolution": layout.image_shape[1],
            "flip": job.flip, "num_images": len(listing), "listing_sha256": listing.sha256(),
            "classes": list(listing.classes), "num_classes": teacher.num_classes,
            "layout": [layout.positions, layout.groups, layout.classes],
            "num_shards": job.num_shards, "chunk_size": job.chunk_size}


# Run one shard of a job; returns what happened: "merged", "shard done" (others still running) or
# "already complete".
def run_shard(job: Job, log: Callable[[str], None] = print) -> str:
    if not 0 <= job.shard < job.num_shards:
        raise ValueError(f"--shard {job.shard}: must be in [0, {job.num_shards}) (--num-shards {job.num_shards})")
    if job.preprocess is not None and job.preprocess not in PRESETS:
        raise ValueError(f"--preprocess {job.preprocess!r}: allowed {', '.join(PRESETS)}")
    teacher, config, weights = build_teacher(job, log)
    listing = list_images(job.images, teacher.num_classes, job.classes)
    if listing.skipped:
        log(f"{len(listing.skipped)} files that are not images left out (e.g. {listing.skipped[0]})")
    plan = make_plan(job, teacher, config, weights, listing)
    if job.out.exists():
        recorded = parts.merged_plan(job.out) if job.out.is_file() else None
        if recorded is None:
            raise FileExistsError(f"--out {job.out} exists and is not a token file of this command; not overwritten")
        parts.check_plan(recorded, plan, str(job.out))
        return "already complete"
    folder = parts.parts_dir(job.out)
    parts.agree_on_plan(folder, plan)
    progress = parts.shard_progress(folder, plan, job.shard)
    log(f"shard {job.shard} of {job.num_shards}: images {progress.total - progress.done} of {progress.total} to "
        f"tokenise ({plan['num_images']} in all, {plan['preprocess']} preprocessing at {plan['resolution']} px"
        f"{', with mirrors' if job.flip else ''})")
    _tokenise_chunks(job, teacher, listing, plan, folder, progress)
    return "merged" if parts.merge(job.out, plan) else "shard done"


# Merge the chunks of a finished job (every shard done) without tokenising anything.
def merge_only(out: Path) -> str:
    folder = parts.parts_dir(out)
    if out.is_file():
        return "already complete"
    if not (folder / parts.PLAN_FILE).is_file():
        raise FileNotFoundError(f"{folder / parts.PLAN_FILE}: no tokenisation of --out {out} was started")
    plan = json.loads((folder / parts.PLAN_FILE).read_text(encoding="utf-8"))
    missing = [c for s in range(plan["num_shards"]) for c in parts.shard_progress(folder, plan, s).missing]
    if missing:
        raise ValueError(f"{folder}: {len(missing)} chunks not done yet (first: images {missing[0][0]}-"
                           f"{missing[0][1]}); run the shards that cover them")
    return "merged" if parts.merge(out, plan) else "already complete"


# The images of a listing as the teacher's input, with their labels.
class _Images(Dataset):
    def __init__(self, listing: Listing, preset: str, resolution: int):
        self.listing, self.preset, self.resolution = listing, preset, resolution

    def __len__(self) -> int:
        return len(self.listing)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path = self.listing.root / self.listing.files[i]
        try:
            return load_image(path, self.preset, self.resolution), self.listing.labels[i]
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read the image ({e})") from e


# Encode the missing chunks of a shard, writing each when complete.
def _tokenise_chunks(job: Job, teacher: Any, listing: Listing, plan: dict[str, Any], folder: Path,
                     progress: parts.Progress) -> None:
    from tqdm import tqdm
    batches = [list(range(a, min(a + job.batch_size, end))) for start, end in progress.missing
               for a in range(start, end, job.batch_size)]
    loader = DataLoader(_Images(listing, plan["preprocess"], plan["resolution"]), batch_sampler=batches,
                        num_workers=job.workers)
    interactive = sys.stderr.isatty()
    bar = tqdm(total=progress.total, initial=progress.done, unit="img", desc=f"shard {job.shard}/{job.num_shards}",
               disable=not job.progress, mininterval=1 if interactive else 60, dynamic_ncols=interactive)
    chunks = iter(progress.missing)
    chunk, rows, labels = next(chunks, None), [], []
    for images, batch_labels in loader:
        tokens = teacher.encode(images).cpu()
        if job.flip:                                     # row 2i: image i, row 2i+1: its mirror
            mirrored = teacher.encode(images.flip(-1)).cpu()
            tokens = torch.stack([tokens, mirrored], 1).flatten(0, 1)
            batch_labels = batch_labels.repeat_interleave(2)
        rows.append(tokens)
        labels.append(batch_labels)
        bar.update(len(images))
        if sum(len(r) for r in rows) == (chunk[1] - chunk[0]) * (2 if job.flip else 1):
            parts.write_chunk(folder, chunk, torch.cat(rows), torch.cat(labels))
            chunk, rows, labels = next(chunks, None), [], []
    bar.close()
