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
BUCKET_BYTES = 25 * 2 ** 20        # gradient bucket size (DDP's default bucket_cap_mb = 25)

#----------------------------------------------------------------------------


# This process's place in the group (rank 0 of 1: no group, the one-process loop).
@dataclass(frozen=True)
class DataParallel:
    rank: int = 0
    world_size: int = 1
    overlap: bool = True                      # all-reduce gradient buckets during the backward pass
    bucket_bytes: int = BUCKET_BYTES

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

    # The gradient synchronisation of one optimiser's (name, parameter) pairs (below); None alone.
    def gradient_sync(self, params: Iterable[tuple[str, nn.Parameter]], name: str) -> "GradientSync | None":
        if self.world_size == 1:
            return None
        return GradientSync(list(params), self.world_size, name, self.bucket_bytes, self.overlap)

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


#----------------------------------------------------------------------------


# A parameter's gradient is missing on some processes and present on others (its buckets no
# longer line up): the processes ran different computations.
class GradientSetMismatch(RuntimeError):
    pass


# Bucketed gradient averaging of one optimiser's parameters, overlapping the backward pass (the
# scheme of torch's DistributedDataParallel, without wrapping the network):
#
# - the parameters are split into buckets of about `bucket_bytes` (of one dtype and device) in
#   reverse order, roughly the order backward produces their gradients;
# - a hook runs after each parameter's gradient is accumulated; when a bucket's gradients are all
#   there, and every earlier bucket has been sent, the bucket is copied into a flat buffer and
#   all-reduced asynchronously while backward goes on (`overlap`; otherwise every bucket is sent by
#   `finish`);
# - `finish` (after backward, before clipping and the optimiser step) sends the buckets not sent
#   yet, waits for all, divides by the number of processes and copies the averages back.
#
# Every process sends every bucket exactly once per step, in bucket order, so the collectives
# always match. Each buffer carries one presence flag per parameter (1 where this process has its
# gradient), summed with the gradients: a flag that is neither 0 nor the number of processes means
# the processes disagree on which gradients exist, and every process raises GradientSetMismatch
# naming the parameter (where DDP would hang or fail on the next step). A parameter without a
# gradient anywhere keeps none (the optimiser skips it, as with one process).
class GradientSync:
    def __init__(self, params: list[tuple[str, nn.Parameter]], world_size: int, name: str,
                 bucket_bytes: int = BUCKET_BYTES, overlap: bool = True) -> None:
        self.world_size, self.name, self.overlap = world_size, name, overlap
        trainable = [p for _, p in params if p.requires_grad]
        self.buckets: list[list[nn.Parameter]] = []
        size = 0
        for p in reversed(trainable):
            current = self.buckets[-1] if self.buckets else None
            nbytes = p.numel() * p.element_size()
            if current is None or size + nbytes > bucket_bytes or (p.dtype, p.device) != (current[0].dtype,
                                                                                            current[0].device):
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += nbytes
        self.bucket_of = {id(p): k for k, bucket in enumerate(self.buckets) for p in bucket}
        self.labels = {id(p): f"{name}: {label}" for label, p in params}
        self._reset()
        for p in trainable:
            p.register_post_accumulate_grad_hook(self._on_gradient)

    def _reset(self) -> None:
        self.ready: list[int] = [0] * len(self.buckets)
        self.seen: set[int] = set()
        self.pending: list[tuple[torch.Tensor, Any]] = []      # (buffer, work) of the buckets sent

    # Hook: one more gradient accumulated; send every bucket now complete, in order.
    def _on_gradient(self, p: nn.Parameter) -> None:
        if id(p) in self.seen:
            raise RuntimeError(f"{self.labels[id(p)]}: a second gradient before the processes averaged the first "
                               f"(one backward pass per optimiser step is synchronised)")
        self.seen.add(id(p))
        self.ready[self.bucket_of[id(p)]] += 1
        if self.overlap:
            while len(self.pending) < len(self.buckets) and \
                    self.ready[len(self.pending)] == len(self.buckets[len(self.pending)]):
                self._send(len(self.pending))

    def _send(self, k: int) -> None:
        bucket = self.buckets[k]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in bucket]
        present = torch.tensor([float(p.grad is not None) for p in bucket], dtype=bucket[0].dtype,
                               device=bucket[0].device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [present])
        self.pending.append((flat, dist.all_reduce(flat, async_op=True)))

    # Send what is left, wait, check the gradient sets agree, write the averages into `.grad`.
    def finish(self) -> None:
        for k in range(len(self.pending), len(self.buckets)):
            self._send(k)
        pending = self.pending
        self._reset()
        for flat, work in pending:
            work.wait()
        for bucket, (flat, _) in zip(self.buckets, pending):
            counts = flat[-len(bucket):]
            uneven = [self.labels[id(p)] + f" (on {int(c)} of {self.world_size})"
                      for p, c in zip(bucket, counts.tolist()) if c not in (0, self.world_size)]
            if uneven:
                raise GradientSetMismatch(
                    f"the processes hold different sets of {self.name} gradients: {', '.join(uneven)}; every "
                    f"process must compute the same losses over the same parameters (a parameter unused on "
                    f"some processes, or a branch taken on some only)")
            offset = 0
            for p in bucket:                # present here exactly where present everywhere
                n = p.numel()
                if p.grad is not None:
                    p.grad.copy_(flat[offset:offset + n].view_as(p).div_(self.world_size))
                offset += n
