"""The mini-scale evaluation protocols for sample sets made outside the harness (a method prototyped
in a researcher's own code), so that they land in the same tables as the grid runs and the stored
mini baselines:

- `mini-digits`: an npz with `images` [N, 8, 8] or [N, 1, 8, 8] in [0, 1] and integer `labels` [N]
  in 0..9; scored by the digits teacher's metrics at `levels` intensity levels (the test split the
  Frechet distance compares with is quantised to them);
- `mini-shapes`: an npz with `images` [N, 3, 16, 16] (or [N, 16, 16, 3]) in [0, 1] and `prompts`
  [N] (strings of the shapes grammar), or a folder of `000000.png`, ... with `prompts.txt` (one
  prompt per line, in file order); scored by the shapes teacher's metrics;
- `mini-glyphs`: an npz with `images` [N, 3, 32, 32] (or [N, 32, 32, 3]) in [0, 1] and integer
  `labels` [N] in 0..9; scored by the glyphs teacher's metrics (against the raw test split, so
  the values do not depend on a tokenizer).

The values and protocol ids are exactly those of grid runs with the same images and conditions
(the metrics are the registered ones, computed by `harness.methods.scoring`). Every problem with the input
names the array and what is expected, before anything is computed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from harness.contracts.entries import MetricValue, RunContext
from harness.grid.spec import RunSpec, resolve_cell
from harness.methods.scoring import score_images
from softdimo.data import digits as digits_data
from softdimo.data import glyphs as glyphs_data
from softdimo.data import shapes as shapes_world
from softdimo.params import schema
from softdimo.teachers.digits import DigitsConfig

#----------------------------------------------------------------------------


# Input that does not fit a mini protocol; the message names the array and what is expected.
class SampleError(ValueError):
    pass


def _unit_range(name: str, images: np.ndarray) -> None:
    if not np.issubdtype(images.dtype, np.floating):
        raise SampleError(f"`{name}`: expected floats in [0, 1], got dtype {images.dtype}")
    if not np.isfinite(images).all() or images.min() < 0.0 or images.max() > 1.0:
        raise SampleError(f"`{name}`: expected values in [0, 1], got the range [{np.nanmin(images):.3g}, "
                          f"{np.nanmax(images):.3g}] (or non-finite values)")


def _npz(path: Path, arrays: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [a for a in arrays if a not in data.files]
            if missing:
                raise SampleError(f"{path}: missing array(s) {', '.join(f'`{a}`' for a in missing)}; found "
                                  f"{', '.join(data.files) or 'none'}")
            return {a: data[a] for a in arrays}
    except (OSError, ValueError) as e:
        if isinstance(e, SampleError):
            raise
        raise SampleError(f"{path}: not a readable npz file ({e})") from None


# Integer class labels [N] in 0..num_classes-1, one per image (checked), as a list.
def _class_labels(labels: np.ndarray, n: int, num_classes: int) -> list[int]:
    if labels.shape != (n,):
        raise SampleError(f"`labels`: expected [N] = [{n}] class labels, one per image, got {list(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes:
        raise SampleError(f"`labels`: expected integers in 0..{num_classes - 1}, got dtype {labels.dtype}, "
                          f"range [{labels.min()}, {labels.max()}]")
    return [int(x) for x in labels]


# RGB images [N, 3, side, side] in [0, 1] from [N, 3, side, side] or [N, side, side, 3] (checked).
def _rgb(name: str, images: np.ndarray, side: int) -> Tensor:
    if images.ndim == 4 and images.shape[1:] == (side, side, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1:] != (3, side, side):
        raise SampleError(f"`{name}`: expected [N, 3, {side}, {side}] or [N, {side}, {side}, 3], got "
                          f"{list(images.shape)}")
    _unit_range(name, images)
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))


# Digits samples: images [N, 1, 8, 8] in [0, 1] and labels, from an npz (`images`, `labels`).
def read_digits(path: str | Path) -> tuple[Tensor, list[int]]:
    data = _npz(Path(path), ("images", "labels"))
    images, labels = data["images"], data["labels"]
    side = digits_data.SIDE
    if images.shape[1:] == (side, side):
        images = images[:, None]
    if images.ndim != 4 or images.shape[1:] != (1, side, side):
        raise SampleError(f"`images`: expected [N, {side}, {side}] or [N, 1, {side}, {side}], got {list(images.shape)}")
    _unit_range("images", images)
    return torch.from_numpy(images.astype(np.float32)), _class_labels(labels, len(images), digits_data.NUM_CLASSES)


# Glyphs samples: images [N, 3, 32, 32] in [0, 1] and labels, from an npz (`images`, `labels`).
def read_glyphs(path: str | Path) -> tuple[Tensor, list[int]]:
    data = _npz(Path(path), ("images", "labels"))
    images = _rgb("images", data["images"], glyphs_data.SIDE)
    return images, _class_labels(data["labels"], len(images), glyphs_data.NUM_CLASSES)


# Shapes samples: images [N, 3, 16, 16] in [0, 1] and their prompts, from an npz (`images`,
# `prompts`) or a folder of PNGs with prompts.txt.
def read_shapes(path: str | Path) -> tuple[Tensor, list[str]]:
    path = Path(path)
    side = shapes_world.SIDE
    if path.is_dir():
        from PIL import Image
        files = sorted(path.glob("*.png"))
        prompts_file = path / "prompts.txt"
        if not prompts_file.is_file():
            raise SampleError(f"{path}: a folder of samples needs prompts.txt (one prompt per line, in file order)")
        prompts = prompts_file.read_text(encoding="utf-8").splitlines()
        if not files:
            raise SampleError(f"{path}: no PNG images")
        images = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0 for f in files])
        name = f"{path}/*.png"
    else:
        data = _npz(path, ("images", "prompts"))
        images, prompts, name = data["images"], [str(p) for p in data["prompts"]], "images"
    tensor = _rgb(name, images, side)
    if len(prompts) != len(images):
        raise SampleError(f"`prompts`: expected one prompt per image ({len(images)}), got {len(prompts)}")
    for i, p in enumerate(prompts):
        try:
            shapes_world.parse_prompt(p)
        except ValueError as e:
            raise SampleError(f"`prompts`[{i}]: {e}") from None
    return tensor, prompts


#----------------------------------------------------------------------------


# One mini protocol: the teacher whose world it scores, the reference rung whose spec the metrics
# read, how a sample set is read, and whether it takes the digits world's intensity levels.
@dataclass(frozen=True)
class MiniProtocol:
    teacher: str
    rung: str
    read: Callable[[str | Path], tuple[Tensor, list[Any]]]
    takes_levels: bool = False


MINI_PROTOCOLS = {"mini-digits": MiniProtocol("digits", "real", read_digits, takes_levels=True),
                  "mini-shapes": MiniProtocol("shapes", "real_prompt", read_shapes),
                  "mini-glyphs": MiniProtocol("glyphs", "real", read_glyphs)}
DEFAULT_LEVELS = schema(DigitsConfig)["levels"].default      # the digits teacher's own default


# The spec whose metrics a mini protocol computes: the world's reference rung with the same
# teacher configuration, sample count and metrics as a grid run.
def protocol_spec(protocol: str, n: int, levels: int, metrics: Sequence[str] = ()) -> RunSpec:
    mini = MINI_PROTOCOLS[protocol]
    cell: dict[str, Any] = {"teacher": mini.teacher, "method": mini.rung, "seed": 0, "eval.samples": n,
                            "eval.metrics": list(metrics)}
    if mini.takes_levels:
        cell["teacher.levels"] = levels
    return resolve_cell(cell, "mini")


# Read, check and score an outside sample set under a mini protocol.
def evaluate(protocol: str, samples: str | Path, levels: int, metrics: Sequence[str], ctx: RunContext
             ) -> tuple[dict[str, MetricValue], int]:
    images, conditions = MINI_PROTOCOLS[protocol].read(samples)
    spec = protocol_spec(protocol, len(images), levels, metrics)
    values, _ = score_images(spec, None, ctx, images, conditions)
    return values, len(images)
