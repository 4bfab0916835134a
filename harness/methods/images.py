"""Image files of the harness, in a run's record directory: its sample grid (PNG) and its first
images with their conditions (npz), from which the report lays the same conditions side by side
across methods."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from harness.methods.samples import to_uint8
from softdimo.files import atomic_write

MIN_TILE_PX = 64                      # small images (8x8 digits) are upscaled to at least this
MAX_TILE_PX = 128                     # large images are downscaled to at most this in the grid
CONDITION_IMAGES = 16                 # images kept with their conditions (the first ones)

#----------------------------------------------------------------------------


# Save images [N, C, H, W] in [0, 1] as one PNG grid; small images are upscaled (nearest).
def save_image_grid(images: torch.Tensor, path: Path) -> None:
    from PIL import Image
    x = images.detach().float().cpu().nan_to_num(0.0).clamp(0, 1)
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"sample grid needs 1 or 3 channels, got {c}")
    side = max(h, w)
    if side < MIN_TILE_PX:
        x = torch.nn.functional.interpolate(x, scale_factor=-(-MIN_TILE_PX // side), mode="nearest")
    elif side > MAX_TILE_PX:
        x = torch.nn.functional.interpolate(x, scale_factor=MAX_TILE_PX / side, mode="area")
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pad = 2
    canvas = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        canvas[:, top:top + h, left:left + w] = x[i]
    pixels = (canvas * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(pixels[..., 0] if c == 1 else pixels, "L" if c == 1 else "RGB")
    atomic_write(path, lambda tmp: image.save(tmp))


# Save the first CONDITION_IMAGES images [N, C, H, W] in [0, 1] at their own resolution, uint8
# NHWC `images`, with `conditions` (each as JSON text) and `indices` (the images' indices in the
# run's sample set, whose per-image noise streams do not depend on the method).
def save_condition_samples(images: torch.Tensor, conditions: Sequence[Any], path: Path) -> int:
    n = min(CONDITION_IMAGES, len(images), len(conditions))
    pixels = to_uint8(images[:n].float().nan_to_num(0.0))
    texts = np.array([json.dumps(c, default=str) for c in conditions[:n]])
    atomic_write(path, lambda tmp: np.savez_compressed(tmp, images=pixels, conditions=texts,
                                                       indices=np.arange(n)))
    return n


# The images, conditions and indices written by `save_condition_samples`.
def load_condition_samples(path: Path) -> tuple[np.ndarray, list[Any], list[int]]:
    with np.load(path) as data:
        missing = [k for k in ("images", "conditions", "indices") if k not in data]
        if missing:
            raise KeyError(f"{path}: no key(s) {', '.join(missing)}; expected images, conditions, indices")
        return data["images"], [json.loads(str(c)) for c in data["conditions"]], data["indices"].tolist()
