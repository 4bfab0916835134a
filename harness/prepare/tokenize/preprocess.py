"""How an image file becomes the teacher's input: decoded to RGB, resized and centre-cropped to the
teacher's resolution R, as a float tensor [3, R, R] in [0, 1] (each teacher's `encode` maps [0, 1]
to its tokenizer's own range).

- `maskbit`: MaskBit's released deterministic ImageNet transform (markweberdev/maskbit
  `data/webdataset_reader.py`, `ImageNetTransform`: its eval transform, also its training transform
  without random crops), with the interpolation of the generator configs
  (`dataset.preprocessing.interpolation: bicubic`): torchvision `Resize(R, bicubic)` of the shorter
  side, `CenterCrop(R)`, `ToTensor`.
- `maskgit`: Halton-MaskGIT's ImageNet loader (valeoai/Maskgit-pytorch `Dataset/dataloader.py`,
  `imagenet`): torchvision `Resize(R)` (bilinear), `CenterCrop(R)`, `ToTensor` (its Normalize to
  [-1, 1] is inside `MaskGITTeacher.encode`).
- `adm`: ADM's `center_crop_arr` (openai/guided-diffusion `image_datasets.py`), the common choice
  of code that stores ImageNet tokens ahead of training (DiT, MAR, bytedance/1d-tokenizer's
  pretokenization): halve with a box filter while the shorter side is at least 2R, resize the
  shorter side to R by PIL bicubic (sizes rounded), crop the centre (offsets floored).

Decoding is PIL's `Image.open(...).convert("RGB")`, as torchvision's and webdataset's loaders do.
MaskBit trains its generator on random crops (scale 0.8-1) with random flips drawn anew each
step; a stored token file holds fixed views instead (the centre, and its mirror with `--flip`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor

#----------------------------------------------------------------------------


# One image file -> float [3, R, R] in [0, 1] under the named preset.
def load_image(path: Path, preset: str, resolution: int) -> Tensor:
    if preset not in PRESETS:
        raise ValueError(f"unknown preprocessing {preset!r}; allowed: {', '.join(PRESETS)}")
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    return PRESETS[preset](rgb, resolution)


# torchvision's Resize(R, interpolation) of the shorter side, CenterCrop(R), ToTensor.
def _torchvision_crop(interpolation: str) -> Callable[[Image.Image, int], Tensor]:
    def crop(image: Image.Image, resolution: int) -> Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF
        mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}[interpolation]
        resized = TF.resize(image, resolution, interpolation=mode)
        return TF.to_tensor(TF.center_crop(resized, resolution))
    return crop


# ADM's centre crop: box-filter halvings while the shorter side >= 2R, bicubic to shorter side R
# (sizes rounded), centre crop with floored offsets.
def _adm_crop(image: Image.Image, resolution: int) -> Tensor:
    while min(image.size) >= 2 * resolution:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = resolution / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    pixels = np.asarray(image)
    top, left = (pixels.shape[0] - resolution) // 2, (pixels.shape[1] - resolution) // 2
    crop = np.ascontiguousarray(pixels[top:top + resolution, left:left + resolution])
    return torch.from_numpy(crop).permute(2, 0, 1).float().div(255.0)


PRESETS: dict[str, Callable[[Image.Image, int], Tensor]] = {
    "maskbit": _torchvision_crop("bicubic"),
    "maskgit": _torchvision_crop("bilinear"),
    "adm": _adm_crop,
}
