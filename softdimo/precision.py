"""The numeric precision of the distillation loop and the one-step student's sampling
(`distill.precision`).

- `fp32`: every operation in float32; TF32 tensor cores off for matmuls and convolutions.
- `bf16`: the released Di[M]O runs' mixed precision (accelerate `mixed_precision: bf16`, weights not
  cast): the networks' forwards run under `torch.autocast(dtype=bfloat16)` (matmuls, convolutions
  and attention in bf16 with float32 accumulation), the weights, gradients, optimiser states and
  EMA stay float32 (master weights), and the networks' outputs are used in float32 (accelerate's
  prepared models return float32), so softmax, the Jeffreys gradient and the losses are float32.
  TF32 stays off, as the released code sets it.
- `tf32`: float32 weights and tensors, with float32 matmuls and convolutions on TF32 tensor cores
  (CUDA, Ampere or later); where TF32 does not exist (a CPU, an older GPU) it is exactly `fp32`.

Decoders and reward models always run in float32 (`full_precision`): the released code keeps its
VQ decoder in float32 outside autocast.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

PRECISIONS = ("fp32", "bf16", "tf32")

#----------------------------------------------------------------------------


# Run a block at a precision on `device`: bf16 autocast for `bf16`, TF32 matmuls and convolutions
# allowed only for `tf32`; the TF32 flags (process-wide) are restored afterwards.
@contextmanager
def precision_region(precision: str, device: torch.device | str) -> Iterator[None]:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    device = torch.device(device)
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = precision == "tf32"
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


# Run a block in float32 whatever region encloses it (decoders, reward models).
@contextmanager
def full_precision(device: torch.device | str) -> Iterator[None]:
    with torch.autocast(torch.device(device).type, enabled=False):
        yield


# What a precision setting runs as on `device`, in words (for the run's log and record).
def effective_precision(precision: str, device: torch.device | str) -> str:
    device = torch.device(device)
    if precision == "bf16":
        return f"bf16 autocast on {device.type}, float32 master weights"
    if precision == "tf32":
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
            return "tf32 matmuls and convolutions, float32 weights"
        return f"fp32 (no TF32 on {device.type if device.type != 'cuda' else torch.cuda.get_device_name(device)})"
    return "fp32"
