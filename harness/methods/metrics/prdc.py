"""Precision, recall, density and coverage (Naeem et al., ICML 2020, "Reliable Fidelity and
Diversity Metrics for Generative Models"), on the same Inception features as FID.

With real features R, fake features F and r_k(x) the distance from x to its k-th nearest
neighbour within its own set (itself excluded):

    precision = 1/M sum_j 1[exists i: |F_j - R_i| < r_k(R_i)]
    recall    = 1/N sum_i 1[exists j: |R_i - F_j| < r_k(F_j)]
    density   = 1/(kM) sum_j sum_i 1[|F_j - R_i| < r_k(R_i)]
    coverage  = 1/N sum_i 1[min_j |R_i - F_j| < r_k(R_i)]

Distances are computed in float64 in row blocks, so 50k x 10k sets fit in memory on one GPU.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

DEFAULT_K = 3
PRDC_KEYS = ("precision", "recall", "density", "coverage")


# r_k: distance from each row of x to its k-th nearest neighbour in x, itself excluded.
def knn_radii(x: Tensor, k: int, block: int = 1024) -> Tensor:
    if x.shape[0] <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} points, got {x.shape[0]}")
    radii = [torch.cdist(x[s:s + block], x).kthvalue(k + 1, dim=1).values  # k+1: the point itself is 0
             for s in range(0, x.shape[0], block)]
    return torch.cat(radii)


# The four PRDC values of fake features against real features (both [n, d]), k neighbours.
def prdc(real: np.ndarray | Tensor, fake: np.ndarray | Tensor, k: int = DEFAULT_K,
         device: torch.device | str = "cpu", block: int = 1024) -> dict[str, float]:
    r = torch.as_tensor(real).to(device, torch.float64)
    f = torch.as_tensor(fake).to(device, torch.float64)
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1]:
        raise ValueError(f"real {tuple(r.shape)} and fake {tuple(f.shape)} must be [n, d] with equal d")
    r_radii, f_radii = knn_radii(r, k, block), knn_radii(f, k, block)

    inside_count = torch.zeros(f.shape[0], dtype=torch.float64, device=r.device)   # per fake: # real balls
    covered = torch.zeros(r.shape[0], dtype=torch.bool, device=r.device)           # per real: nearest fake inside
    recalled = torch.zeros(r.shape[0], dtype=torch.bool, device=r.device)          # per real: inside a fake ball
    for s in range(0, r.shape[0], block):
        d = torch.cdist(r[s:s + block], f)                                          # [b, M]
        inside = d < r_radii[s:s + block, None]
        inside_count += inside.sum(0)
        covered[s:s + block] = d.min(dim=1).values < r_radii[s:s + block]
        recalled[s:s + block] = (d < f_radii[None, :]).any(dim=1)
    return {"precision": (inside_count > 0).double().mean().item(),
            "recall": recalled.double().mean().item(),
            "density": (inside_count.sum() / (k * f.shape[0])).item(),
            "coverage": covered.double().mean().item()}
