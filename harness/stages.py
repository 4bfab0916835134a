"""Stage hashes: a digest of what each stage of a run produced (the teacher's weights, the
student's weights, the samples), written into every record (`stage_hashes`), so that two records
of the same run made on different machines can be compared stage by stage: the first stage whose
hash differs is where the runs parted (`python -m harness.verify`, docs/reproducibility.md).
"""
from __future__ import annotations

import hashlib
from typing import Mapping

import torch

STAGES = ("teacher", "student", "samples")        # in the order a run produces them

#----------------------------------------------------------------------------


# sha256 (first 16 hex digits) of tensors: each name, dtype, shape and the raw bytes, names sorted.
def tensor_digest(tensors: Mapping[str, torch.Tensor] | torch.Tensor) -> str:
    items = tensors.items() if isinstance(tensors, Mapping) else [("", tensors)]
    h = hashlib.sha256()
    for name, t in sorted(items, key=lambda kv: kv[0]):
        t = t.detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# The first stage (in STAGES order) whose hash both records carry and that differs, else None.
def first_difference(a: Mapping[str, str], b: Mapping[str, str]) -> str | None:
    for stage in STAGES:
        if stage in a and stage in b and a[stage] != b[stage]:
            return stage
    return None


# The digest of a module's weights (its state dict), or None for an object without them.
def weights_digest(module: object) -> str | None:
    return tensor_digest(module.state_dict()) if isinstance(module, torch.nn.Module) else None
