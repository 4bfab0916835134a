"""The samples of a run as one process holds them.

A run's N images are made in batches of SAMPLE_BATCH consecutive indices; over several processes
batch k is made by rank k mod world size (`harness.methods.students.batched_samples`), and it stays
there: a process keeps the tokens of its own batches and decodes them batch by batch when the
metrics read them, so no process ever holds the whole set as images and none are sent to rank 0
(`harness.methods.scoring`: each process extracts its images' features, only those travel). Every process
knows every condition. A method that makes its images in one piece (a plugin's) hands them over
whole: rank 0 holds them as one set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

SAMPLE_BATCH = 500          # images per sampling batch: the unit dealt to processes and extracted at once

#----------------------------------------------------------------------------


# One batch of consecutive indices [start, start + len): its hard tokens (decoded when read) or,
# for methods that make images directly, its images [b, C, H, W] in [0, 1].
@dataclass
class HeldBatch:
    start: int
    tokens: Tensor | None = None
    images: Tensor | None = None

    def __len__(self) -> int:
        return len(self.tokens if self.tokens is not None else self.images)

    @property
    def stop(self) -> int:
        return self.start + len(self)


# A process's share of a run's samples: every condition, its own batches, and how tokens become images.
@dataclass
class HeldSamples:
    conditions: list[Any]                            # all N conditions, in index order
    batches: list[HeldBatch]                         # this process's batches, by start index
    decode: Callable[[Tensor, list[Any]], Tensor] | None = None  # (tokens, their conditions) -> images
    dealt: bool = False                              # batches dealt over the processes (else rank 0 holds all)

    # The whole set, made in one piece (one process, or rank 0 of a method that does not deal out):
    # held in batches of SAMPLE_BATCH so that metrics see the same batches as from a dealt set.
    @classmethod
    def whole(cls, images: Tensor, conditions: Sequence[Any], tokens: Tensor | None = None) -> "HeldSamples":
        batches = [HeldBatch(s, tokens[s:s + SAMPLE_BATCH] if tokens is not None else None, images[s:s + SAMPLE_BATCH])
                   for s in range(0, len(images), SAMPLE_BATCH)]
        return cls(list(conditions), batches)

    # Nothing held here (the processes other than rank 0 of a method that does not deal out).
    @classmethod
    def none_here(cls, conditions: Sequence[Any]) -> "HeldSamples":
        return cls(list(conditions), [])

    @property
    def total(self) -> int:
        return len(self.conditions)

    # The conditions of one held batch.
    def conditions_of(self, batch: HeldBatch) -> list[Any]:
        return self.conditions[batch.start:batch.stop]

    # The images [b, C, H, W] in [0, 1] of one held batch (decoded now when it holds tokens).
    def images_of(self, batch: HeldBatch) -> Tensor:
        if batch.images is not None:
            return batch.images
        if self.decode is None:
            raise ValueError("held tokens without a decoder")
        return self.decode(batch.tokens, self.conditions_of(batch))

    # (batch, its images) for every batch held here, in index order; one batch's images at a time.
    def __iter__(self) -> Iterator[tuple[HeldBatch, Tensor]]:
        for batch in self.batches:
            yield batch, self.images_of(batch)

    # Every held image at once (callers that hold the whole set: one process, tests, benchmarks).
    def all_images(self) -> Tensor:
        parts = [images for _, images in self]
        return torch.cat(parts) if parts else torch.empty(0)

    # Every held token [n, L, G], or None when the method made images directly.
    def all_tokens(self) -> Tensor | None:
        if not self.batches or any(b.tokens is None for b in self.batches):
            return None
        return torch.cat([b.tokens for b in self.batches])

    # The held images with index < n (for the record's sample grid), in index order.
    def first_images(self, n: int) -> list[tuple[int, Tensor]]:
        out = []
        for batch in self.batches:
            if batch.start < n:
                batch_images = self.images_of(batch)
                out.append((batch.start, batch_images[:n - batch.start]))
        return out
