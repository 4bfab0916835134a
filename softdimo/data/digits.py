"""scikit-learn's 8x8 digits as tokens: a fixed stratified split and intensity quantisation.

Each pixel (0..16) becomes one token with `levels` values: level = x * levels // 17, and a level
k decodes to the intensity k / (levels - 1) in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

NUM_CLASSES = 10
SIDE = 8
SPLIT_SEED = 0          # stratified 80/20 split, fixed for the whole project
TEST_FRACTION = 0.2

#----------------------------------------------------------------------------


# The fixed split of the raw digits: pixels 0..16 as uint8 [N, 64] and labels [N].
@dataclass(frozen=True)
class DigitsSplit:
    pixels: np.ndarray
    labels: np.ndarray


@lru_cache(maxsize=None)
def load_split(split: str) -> DigitsSplit:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    if split not in ("train", "test"):
        raise ValueError(f"unknown digits split {split!r}; allowed: train, test")
    data = load_digits()
    x = data.data.astype(np.uint8)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y,
                                              random_state=SPLIT_SEED)
    return DigitsSplit(x_tr, y_tr) if split == "train" else DigitsSplit(x_te, y_te)


# Quantise raw pixels 0..16 to `levels` token values (long tensor, same shape).
def quantize(pixels: np.ndarray | Tensor, levels: int) -> Tensor:
    if not 2 <= levels <= 17:
        raise ValueError(f"levels must be in [2, 17], got {levels}")
    x = torch.as_tensor(np.asarray(pixels), dtype=torch.long)
    return x * levels // 17


# Intensity in [0, 1] of each token level.
def level_values(levels: int) -> Tensor:
    return torch.arange(levels, dtype=torch.float32) / (levels - 1)


# Tokens [N, 64] of one split at a quantisation, with labels [N].
def split_tokens(split: str, levels: int) -> tuple[Tensor, Tensor]:
    s = load_split(split)
    return quantize(s.pixels, levels), torch.as_tensor(s.labels)


# Images [N, 1, 8, 8] in [0, 1] of one split, quantised to `levels` and decoded.
def split_images(split: str, levels: int) -> tuple[Tensor, Tensor]:
    tokens, labels = split_tokens(split, levels)
    return level_values(levels)[tokens].view(-1, 1, SIDE, SIDE), labels
