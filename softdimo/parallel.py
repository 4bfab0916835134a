"""Data parallelism of the distillation loop over the processes of a torch.distributed group.

Every process holds the same theta, psi and refinement state; it computes the losses of its share
of the global batch (rows [rank b, (rank + 1) b) of the B = world_size b rows the one-process loop
would draw) and the gradients are averaged over processes before each optimiser step, so the
parameters stay identical on every process. With one process nothing here communicates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from softdimo.teachers.base import derive_seed

T = TypeVar("T")

#----------------------------------------------------------------------------


# This process's place in the group (rank 0 of 1: no group, the one-process loop).
@dataclass(frozen=True)
class DataParallel:
    rank: int = 0
    world_size: int = 1

    # Rows per process of a global batch; the global batch must split evenly.
    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise ValueError(f"distill.batch_size = {global_batch} (the global batch) does not split over "
                             f"{self.world_size} processes; use a multiple of {self.world_size}")
        return global_batch // self.world_size

    # This process's rows of a tensor (or list) drawn for the whole global batch.
    def rows(self, x: T) -> T:
        if self.world_size == 1:
            return x
        b = self.local_batch(len(x))
        return x[self.rank * b:(self.rank + 1) * b]  # type: ignore[index]

    # A seed of this process's own stream: `seed` itself on rank 0 (the one-process stream).
    def process_seed(self, seed: int) -> int:
        return seed if self.rank == 0 else derive_seed(seed, f"process{self.rank}")

    # Average the gradients of `params` over processes (one flat all-reduce); no-op alone.
    def average_gradients(self, params: Iterable[nn.Parameter]) -> None:
        if self.world_size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    # The mean over processes of each scalar (training logs); unchanged alone.
    def mean_scalars(self, values: dict[str, float]) -> dict[str, float]:
        if self.world_size == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return {**values, **{k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}}

    # Wait for every process (e.g. until rank 0 has written a checkpoint the others will read).
    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    # One picklable object from every process, in rank order (on every process).
    def gather_objects(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out
