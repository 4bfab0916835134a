"""Stage hashes: a digest of what each stage of a run produced (the teacher's weights, the
student's weights, the samples), written into every record (`stage_hashes`), so that two records
of the same run made on different machines can be compared stage by stage: the first stage whose
hash differs is where the runs parted (`python -m harness.report.verify`, docs/reproducibility.md).
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Mapping

import torch

if TYPE_CHECKING:
    from harness.contracts.held_samples import HeldSamples

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


# (start index, digest) of each batch a process holds: its tokens, or its images when it has none.
def batch_digests(held: "HeldSamples") -> list[tuple[int, str]]:
    return [(b.start, tensor_digest(b.tokens if b.tokens is not None else b.images)) for b in held.batches]


# The samples' stage hash: the batch digests of every process, in index order, hashed together (the
# same whichever process made which batch).
def samples_digest(batches: list[tuple[int, str]]) -> str | None:
    if not batches:
        return None
    body = "|".join(f"{start}:{digest}" for start, digest in sorted(batches))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


# The first stage (in STAGES order) whose hash both records carry and that differs, else None.
def first_difference(a: Mapping[str, str], b: Mapping[str, str]) -> str | None:
    for stage in STAGES:
        if stage in a and stage in b and a[stage] != b[stage]:
            return stage
    return None


# The digest of a module's weights (its state dict), or None for an object without them.
def weights_digest(module: object) -> str | None:
    return tensor_digest(module.state_dict()) if isinstance(module, torch.nn.Module) else None
