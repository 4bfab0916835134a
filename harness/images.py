"""Image files of the harness: a run's sample grid (PNG) in its record directory."""
from __future__ import annotations

import math
from pathlib import Path

import torch

MIN_TILE_PX = 64                      # small images (8x8 digits) are upscaled to at least this
MAX_TILE_PX = 128                     # large images are downscaled to at most this in the grid

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
    Image.fromarray(pixels[..., 0] if c == 1 else pixels, "L" if c == 1 else "RGB").save(path)
