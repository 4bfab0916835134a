"""Example plugin: a new relaxation, registered from a user's own module.

`soft_top2` is the soft embedding restricted to each slot's two most likely tokens (renormalised):
differentiable like `soft`, but closer to a hard token when the generator is confident. Name this
module in a grid's `plugins:` and compare it with the built-in relaxations and the stored
baselines, without editing the project.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.contracts import registry
from harness.contracts.entries import RelaxationEntry
from softdimo.config import RelaxConfig
from softdimo.relax import Relaxed


# q = softmax over each slot's top-2 logits (zero elsewhere); x_theta drawn as for every relaxation
# (hence `sample_as="hard"`: without a refinement it trains hard's student).
def relax_soft_top2(logits: Tensor, gumbel: Tensor, config: RelaxConfig, temperature: float = 1.0) -> Relaxed:
    z = logits / temperature
    top2 = z.topk(2, dim=-1)
    q = torch.zeros_like(z).scatter(-1, top2.indices, F.softmax(top2.values, dim=-1))
    return Relaxed(q, (z.detach() + gumbel).argmax(-1))


registry.relaxations.register("soft_top2", RelaxationEntry(
    "soft_top2", relax_soft_top2, differentiable=True, sample_as="hard",
    description="example plugin: soft embedding over the top-2 tokens"))
