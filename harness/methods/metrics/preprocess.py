"""Image preprocessing shared by the released scorers (HPS, ImageReward, PickScore, CLIP score), on
float tensors so the reward paths stay differentiable.

The scorers differ in small rules that change their numbers on non-square images: which side is
resized to the model size, and how a centre-crop offset is rounded (torchvision and PIL round
half to even, `round((H - size) / 2)`; transformers' image processors floor, `(H - size) // 2`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CROP_ROUNDINGS = ("round", "floor")


# Bicubic, antialiased resize of images [..., H, W] so the shorter side is `size`; the longer side
# becomes int(size * long / short), as torchvision's Resize(int) and transformers compute it.
def resize_shorter(x: Tensor, size: int) -> Tensor:
    import torchvision.transforms.functional as TF
    return TF.resize(x, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)


# The centre size x size window of images [..., H, W]; `rounding` says how an odd margin is split.
def center_crop(x: Tensor, size: int, rounding: str = "round") -> Tensor:
    if rounding not in CROP_ROUNDINGS:
        raise ValueError(f"crop rounding {rounding!r}: allowed {', '.join(CROP_ROUNDINGS)}")
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {h}x{w} images to {size}x{size}")
    if rounding == "round":
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    else:
        top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]



# An image as PIL in its own mode: a file is opened and read in full, an HWC uint8 array wrapped.
def open_image(image: Image.Image | np.ndarray | str | Path) -> Image.Image:
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            im.load()
            return im
    return image if isinstance(image, Image.Image) else Image.fromarray(image)
