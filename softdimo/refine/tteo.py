"""Test-time embedding optimisation (TTEO) of a trained one-step generator (Soft-Di[M]O, arXiv
2509.22925). Model weights are never touched.

The variable is the generator's input embedding e_in (x_init embedded, plus the sigma_init
noise). k plain SGD steps (paper: lr 0.2, no clipping) ascend, per image,

  J(e) = R( Dec(softmax(z_theta(e) / T)), c ) - mu ||e - e_init||^2,

where Dec is `teacher.decode_soft` and mu (`proximity`) is our addition (0 = the paper's
objective). The objective is summed over images, so each image's update is independent of the batch
it is in. Best-of-N, which TTEO is combined with, is `softdimo/refine/best_of_n.py`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softdimo.teachers.base import Condition, Teacher

RewardFn = Callable[[Tensor, Condition], Tensor]

#----------------------------------------------------------------------------


# k SGD steps on e_in maximising J(e) (module docstring); returns the optimised e [B, L, D].
def optimise_embeddings(network: nn.Module, teacher: Teacher, cond: Condition, e_init: Tensor,
                        reward: RewardFn, steps: int, lr: float, proximity: float,
                        temperature: float = 1.0) -> Tensor:
    e = e_init.detach().clone()
    for _ in range(steps):
        with torch.enable_grad():
            e.requires_grad_(True)
            probs = F.softmax(network(e, cond).logits / temperature, dim=-1)
            objective = reward(teacher.decode_soft(probs, cond), cond).sum()
            if proximity > 0:
                objective = objective - proximity * ((e - e_init) ** 2).sum()
            (grad,) = torch.autograd.grad(objective, e)
        e = (e + lr * grad).detach()
    return e
