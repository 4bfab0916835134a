"""What class-conditional ImageNet teachers (MaskBit, MaskGIT) share: integer class conditions with
a null class, uniform training labels, balanced evaluation labels, and tokenised real images for
the GAN's real branch (a safetensors file of `tokens` [N, L, G] and `labels` [N])."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from softdimo.files import atomic_write
from softdimo.teachers.base import Condition, TokenLayout

#----------------------------------------------------------------------------


# Mixin for a `Teacher` with `name`, `num_classes`, `layout`, `device` and `real_tokens_path`
# (a Path or None): the condition and real-data half of the protocol.
class ClassConditioned:
    name: str
    num_classes: int
    layout: TokenLayout
    device: torch.device
    real_tokens_path: Path | None
    _real: tuple[Tensor, list[Any]] | None = None

    # Class labels (ints in [0, num_classes]; num_classes is the null class) as a `Condition`.
    # A fresh label tensor: nothing downstream writes into it (unlike upstream in-place drops).
    def encode_condition(self, raw: Sequence[Any]) -> Condition:
        labels = [int(r) for r in raw]
        bad = [x for x in labels if not 0 <= x <= self.num_classes]
        if bad:
            raise ValueError(f"{self.name} class labels must be in [0, {self.num_classes}] ({self.num_classes} "
                             f"= null class), got {bad[:5]}")
        return Condition("class", {"labels": torch.tensor(labels, dtype=torch.long, device=self.device)},
                         labels)

    # Uniform class labels for distillation (data-free, as Di[M]O).
    def sample_conditions(self, n: int, generator: torch.Generator) -> list[Any]:
        return torch.randint(self.num_classes, (n,), generator=generator, device=generator.device).tolist()

    # Balanced evaluation labels: image i has class i mod num_classes.
    def eval_conditions(self, n: int) -> list[Any]:
        return [i % self.num_classes for i in range(n)]

    # Tokenised real images and their labels, when `teacher.real_tokens` names a file; else None.
    def real_tokens(self) -> tuple[Tensor, list[Any]] | None:
        if self.real_tokens_path is None:
            return None
        if self._real is None:
            self._real = load_real_tokens(self.real_tokens_path, self.layout, self.num_classes)
        return self._real


#----------------------------------------------------------------------------
# Tokenised real images (the GAN's real branch).


# Tokenise images [N, 3, H, W] in [0, 1] with a teacher's `encode`, in batches -> [N, L, G].
def tokenize_images(teacher: Any, images: Tensor, batch_size: int = 64) -> Tensor:
    return torch.cat([teacher.encode(images[i:i + batch_size]).cpu()
                      for i in range(0, images.shape[0], batch_size)])


# Write real tokens [N, L, G] and labels [N] to a safetensors file `teacher.real_tokens` can name:
# tokens as int16 when every value fits (a quarter of int64's size: ImageNet's 1.28M images of 512
# MaskBit slots take 1.3 GB), labels as int64; `metadata` (text) goes into the file's header.
def save_real_tokens(path: str | Path, tokens: Tensor, labels: Sequence[int] | Tensor,
                     metadata: dict[str, str] | None = None) -> None:
    labels_tensor = torch.as_tensor(labels, dtype=torch.long)
    small = tokens.numel() == 0 or (int(tokens.min()) >= 0 and int(tokens.max()) <= torch.iinfo(torch.int16).max)
    stored = tokens.to(torch.int16 if small else torch.long).contiguous()
    atomic_write(path, lambda tmp: save_file({"tokens": stored, "labels": labels_tensor}, str(tmp), metadata=metadata))


# Read and check a real-tokens file against the layout: tokens [N, L, G] in [0, C), labels [N].
def load_real_tokens(path: str | Path, layout: TokenLayout, num_classes: int) -> tuple[Tensor, list[Any]]:
    data = load_file(str(path))
    if set(data) != {"tokens", "labels"}:
        raise ValueError(f"{path}: expected the tensors 'tokens' and 'labels', found {sorted(data)}")
    if data["tokens"].is_floating_point() or data["labels"].is_floating_point():
        raise ValueError(f"{path}: tokens and labels must be integer tensors, got {data['tokens'].dtype} and "
                         f"{data['labels'].dtype}")
    tokens, labels = data["tokens"].long(), data["labels"].long()
    expected = (layout.positions, layout.groups)
    if tokens.dim() != 3 or tuple(tokens.shape[1:]) != expected or labels.shape != tokens.shape[:1]:
        raise ValueError(f"{path}: expected tokens [N, {expected[0]}, {expected[1]}] and labels [N], got "
                         f"{tuple(tokens.shape)} and {tuple(labels.shape)}")
    if tokens.min() < 0 or tokens.max() >= layout.classes:
        raise ValueError(f"{path}: token values must be in [0, {layout.classes}) (no mask values)")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{path}: labels must be in [0, {num_classes})")
    return tokens, labels.tolist()
