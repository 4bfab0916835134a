"""Generator relaxations: how the one-step generator's logits reach the teacher and the decoder.

All three share one signature: `relax(logits, gumbel, config, temperature) -> Relaxed`, where
`gumbel` is Gumbel(0, 1) noise of the logits' shape drawn by the caller, so every relaxation
consumes the same random stream and draws the same hard sample x_theta = argmax(z/T + g) — runs
that differ only in the relaxation are paired.

- `hard`   (Di[M]O): q = one_hot(x_theta), no gradient reaches the logits.
- `gumbel` (Soft-Di[M]O's ablation baseline, docs/paper.md): straight-through Gumbel-softmax: forward
           one_hot(x_theta), backward through softmax((z/T + g) / tau).
- `soft`   (Soft-Di[M]O Eq. 3): q = p = softmax(z/T); the teacher then sees the expected embedding
           sum_j p_j E_j (`embed_soft`), and the decoder the expected decoder input.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from softdimo.config import RelaxConfig

#----------------------------------------------------------------------------


# A relaxed generator output: q [B,L,G,C] (what embeddings and decoders consume) and the hard
# sample x_theta [B,L,G] drawn from the same noise.
@dataclass
class Relaxed:
    q: Tensor
    tokens: Tensor


def _hard_sample(logits: Tensor, gumbel: Tensor, temperature: float) -> Tensor:
    return (logits.detach() / temperature + gumbel).argmax(-1)


# Di[M]O's hard tokens: one-hot samples, no gradient.
def relax_hard(logits: Tensor, gumbel: Tensor, config: RelaxConfig, temperature: float = 1.0) -> Relaxed:
    tokens = _hard_sample(logits, gumbel, temperature)
    return Relaxed(F.one_hot(tokens, logits.shape[-1]).to(logits.dtype), tokens)


# Straight-through Gumbel-softmax: one-hot forward, softmax((z/T + g)/tau) backward.
def relax_gumbel(logits: Tensor, gumbel: Tensor, config: RelaxConfig, temperature: float = 1.0) -> Relaxed:
    tokens = _hard_sample(logits, gumbel, temperature)
    y_soft = F.softmax((logits / temperature + gumbel) / config.gumbel_tau, dim=-1)
    y_hard = F.one_hot(tokens, logits.shape[-1]).to(logits.dtype)
    return Relaxed(y_hard - y_soft.detach() + y_soft, tokens)


# Soft embeddings: the generator's distribution itself, fully differentiable.
def relax_soft(logits: Tensor, gumbel: Tensor, config: RelaxConfig, temperature: float = 1.0) -> Relaxed:
    return Relaxed(F.softmax(logits / temperature, dim=-1), _hard_sample(logits, gumbel, temperature))


RELAXATIONS = {"hard": (relax_hard, False), "gumbel": (relax_gumbel, True), "soft": (relax_soft, True)}
