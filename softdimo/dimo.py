"""The Di[M]O objective (arXiv 2503.15457; docs/paper.md, "Di[M]O", steps 1-6): token
initialisation, re-masking, the generalised Jeffreys gradient on the generator logits, its
surrogate loss, and the auxiliary model's loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from softdimo.teachers.base import TokenLayout

#----------------------------------------------------------------------------
# Generator input (docs/paper.md, "Di[M]O", step 1).


# x_init: every slot uniform over the C classes, then exactly round(slots * r_init) slots masked.
def token_init(layout: TokenLayout, batch: int, r_init: float, generator: torch.Generator,
               device: torch.device | str = "cpu") -> Tensor:
    tokens = torch.randint(layout.classes, (batch, layout.positions, layout.groups), generator=generator,
                           device=device)
    n_mask = max(1, round(layout.slots * r_init))   # at least one, as the released code
    ranks = torch.rand(batch, layout.slots, generator=generator, device=device).argsort(1).argsort(1)
    masked = (ranks < n_mask).view_as(tokens)
    return torch.where(masked, torch.full_like(tokens, layout.mask_id), tokens)


# Variance-preserving embedding noise: e <- sigma n + sqrt(1 - sigma^2) e, n ~ N(0, I).
def perturb_embeddings(e: Tensor, sigma: float, noise: Tensor) -> Tensor:
    return sigma * noise + math.sqrt(1.0 - sigma * sigma) * e


#----------------------------------------------------------------------------
# Token-level distribution matching (docs/paper.md, "Di[M]O", step 5; the paper's Eq. 7).


# D_beta(p_phi || p_psi) = (1 - beta) KL(p_phi || p_psi) + beta KL(p_psi || p_phi), per slot.
def jeffreys_divergence(logits_phi: Tensor, logits_psi: Tensor, beta: float) -> Tensor:
    logp_phi, logp_psi = F.log_softmax(logits_phi, -1), F.log_softmax(logits_psi, -1)
    fkl = (logp_phi.exp() * (logp_phi - logp_psi)).sum(-1)
    rkl = (logp_psi.exp() * (logp_psi - logp_phi)).sum(-1)
    return (1.0 - beta) * fkl + beta * rkl


# Closed-form gradient of D_beta with respect to the auxiliary logits z_psi:
# (1 - beta) (p_psi - p_phi) + beta p_psi (log p_psi - log p_phi - KL(p_psi || p_phi)).
def jeffreys_gradient(logits_phi: Tensor, logits_psi: Tensor, beta: float) -> Tensor:
    logp_phi, logp_psi = F.log_softmax(logits_phi, -1), F.log_softmax(logits_psi, -1)
    p_phi, p_psi = logp_phi.exp(), logp_psi.exp()
    g = (1.0 - beta) * (p_psi - p_phi)
    if beta != 0.0:
        diff = logp_psi - logp_phi
        rkl = (p_psi * diff).sum(-1, keepdim=True)
        g = g + beta * p_psi * (diff - rkl)
    return g


# The generator's surrogate loss 1/2 ||z_theta - sg(z_theta - g)||^2, summed over masked slots and
# classes and divided by the batch size, so d loss / d z_theta = g at masked slots (Di[M]O code).
def dimo_surrogate_loss(logits_theta: Tensor, grad: Tensor, mask: Tensor) -> Tensor:
    g = grad * mask[..., None].to(grad.dtype)
    target = (logits_theta - g).detach()
    return 0.5 * ((logits_theta - target) ** 2).sum() / logits_theta.shape[0]


# d L_DiMO / d z_theta of that surrogate: g at the masked slots, divided by the batch size.
def dimo_logit_gradient(grad: Tensor, mask: Tensor) -> Tensor:
    return grad * mask[..., None].to(grad.dtype) / grad.shape[0]


# psi's loss: cross-entropy with label smoothing at the masked slots, towards the generator's
# hard samples x_theta (docs/paper.md, "Di[M]O", step 6; the paper's Eq. 3).
def aux_loss(logits_psi: Tensor, targets: Tensor, mask: Tensor, label_smoothing: float) -> Tensor:
    return F.cross_entropy(logits_psi[mask], targets[mask], label_smoothing=label_smoothing)
