"""Readable names of the conditions images were made from, for sample pages: a class label by its
teacher's class names (`TeacherEntry.class_names`), a prompt as it is.

ImageNet class names come from torchvision's weight metadata (`ResNet50_Weights.IMAGENET1K_V1
.meta["categories"]`, the 1000 short names shipped inside the torchvision package, BSD-3-Clause;
nothing is downloaded); without torchvision a class is shown by its index.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

from harness.contracts import registry

DIGIT_NAMES = tuple(str(d) for d in range(10))

#----------------------------------------------------------------------------


# The 1000 ImageNet-1k class names in label order, or None when torchvision is not installed.
@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...] | None:
    try:
        from torchvision.models import ResNet50_Weights
    except ImportError:
        return None
    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


# The class names a registered teacher declares, or None.
def class_names(teacher: str) -> Sequence[str] | None:
    if teacher not in registry.teachers:
        return None
    names = registry.teachers.get(teacher).class_names
    return names() if names is not None else None


# A condition as text: a prompt as it is; class c as "c: name" ("class c" when the name is the
# number itself or unknown).
def caption(teacher: str, condition: Any) -> str:
    if isinstance(condition, str):
        return condition
    if isinstance(condition, bool) or not isinstance(condition, int):
        return str(condition)
    names = class_names(teacher)
    if names is None or not 0 <= condition < len(names) or names[condition] == str(condition):
        return f"class {condition}"
    return f"{condition}: {names[condition]}"
