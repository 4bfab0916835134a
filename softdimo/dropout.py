"""Dropout whose masks every CPU draws alike, and cheaply.

torch's CPU dropout draws its masks with `bernoulli_`, whose kernel depends on the processor: on
Intel CPUs it uses MKL's VSL stream (MCG31), on all others one 64-bit Mersenne-twister draw per
element, so the same seed gives different masks, and different training runs, on Intel and AMD
machines. It is also most of the cost of a mini Di[M]O step (`benchmarks/step_cost.py`). Here a
`DropoutStream` owns numpy's PCG64 bit generator (integer arithmetic only) and a mask element
keeps its value when 32 fresh random bits, read as an unsigned integer, fall below
round(keep x 2^32): keep probability within 2^-32 of 1 - p, the same masks on every machine, and
about six times cheaper than `bernoulli_`.

A stream is used while it is active (`drawing_from`), for CPU tensors: `dropout`, `StreamDropout`
(an `nn.Dropout` whose masks come from it) and `attention` (softmax attention whose probabilities
are dropped with it). Elsewhere (no active stream, or CUDA tensors) these are torch's own dropout,
drawing from torch's global generator, which `softdimo.train` seeds from the stream at every step.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#----------------------------------------------------------------------------


# One process's dropout draws: numpy's PCG64 bit generator, 32 bits per mask element.
class DropoutStream:
    def __init__(self, seed: int):
        self._bits = np.random.PCG64(seed)

    # A keep mask of `shape` (bool, CPU): each element True with probability round(keep 2^32) / 2^32.
    def keep_mask(self, shape: torch.Size | tuple[int, ...], keep: float) -> Tensor:
        n = math.prod(shape)
        words = self._bits.random_raw((n + 1) // 2).view(np.uint32)[:n]   # little-endian halves
        return torch.from_numpy(words < np.uint32(keep_threshold(keep))).view(shape)

    # A seed in [0, 2^63) for torch's own generators (dropout of CUDA tensors, torch's modules).
    def next_seed(self) -> int:
        return int(self._bits.random_raw()) >> 1

    def state_dict(self) -> dict[str, Any]:
        return self._bits.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._bits.state = state


# The 32-bit threshold of keep probability `keep` in (0, 1): round(keep x 2^32), below 2^32.
def keep_threshold(keep: float) -> int:
    if not 0.0 < keep < 1.0:
        raise ValueError(f"keep probability must lie in (0, 1), got {keep}")
    return min(round(keep * 2**32), 2**32 - 1)


_active: ContextVar[DropoutStream | None] = ContextVar("softdimo_dropout_stream", default=None)


# Run a block with `stream` drawing the dropout masks of CPU tensors.
@contextmanager
def drawing_from(stream: DropoutStream) -> Iterator[None]:
    token = _active.set(stream)
    try:
        yield
    finally:
        _active.reset(token)


# The active stream if it draws for `x` (a CPU tensor), else None (torch's dropout applies).
def stream_for(x: Tensor) -> DropoutStream | None:
    stream = _active.get()
    return stream if stream is not None and x.device.type == "cpu" else None


# Inverted dropout at rate p: x * mask / (1 - p), the mask from the active stream (CPU tensors).
def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    if not training or p == 0.0:
        return x
    stream = stream_for(x)
    if stream is None:
        return F.dropout(x, p, True)
    keep = 1.0 - p
    return x * stream.keep_mask(x.shape, keep).to(x.dtype).div_(keep)


# nn.Dropout drawing its masks from the active stream (set_dropout and train/eval work as usual).
class StreamDropout(nn.Dropout):
    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


# Softmax attention over heads [B, H, N, d] with dropout rate p on the attention probabilities:
# torch's fused kernel without dropout or stream, else softmax(q k^T / sqrt(d)) with the dropped
# probabilities zeroed, times v, times 1 / (1 - p) (scaling the [B, H, N, d] output rather than the
# [B, H, N, N] probabilities: the same value within rounding, and cheaper).
def attention(q: Tensor, k: Tensor, v: Tensor, p: float) -> Tensor:
    stream = stream_for(q)
    if p == 0.0 or stream is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)
    probs = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
    keep = 1.0 - p
    return (torch.where(stream.keep_mask(probs.shape, keep), probs, 0.0) @ v) / keep
