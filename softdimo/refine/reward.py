"""Differentiable reward fine-tuning (Soft-Di[M]O, docs/paper.md):

  L_reward(theta) = - sum_i lambda_i E_b[ R_i( Dec(q_theta), c ) ]

where Dec is `teacher.decode_soft` (the expected decoder input under the generator's relaxed
distribution q) and R_i are differentiable reward models, `(images [B,C,H,W] in [0,1], Condition)
-> [B]`, higher is better. The generator objective is
`distill.dimo_weight * L_DiMO + reward.weight * L_reward`; the Di[M]O term is the regulariser that
keeps the student near the teacher (against reward hacking).

Reward models come from the harness registry `registry.rewards` (the digits HPS analogue at mini
scale; HPS v2 / CLIP score / ImageReward adapters at paper scale, see docs/refinements.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from softdimo.params import param
from softdimo.precision import full_precision
from softdimo.teachers.base import Condition, Teacher

RewardFn = Callable[[Tensor, Condition], Tensor]

#----------------------------------------------------------------------------


# Stage `reward`: which reward models, their weights lambda_i, and w_reward.
@dataclass(frozen=True)
class RewardConfig:
    models: tuple = param(("digits_reward",), help="reward models R_i by name (registry.rewards); paper: "
                                                   "CLIP score, ImageReward (versions NOT FOUND)")
    weights: tuple = param((), help="lambda_i, one per model; empty = 1 for each (paper: NOT FOUND)")
    weight: float = param(100.0, lo=0.0, help="w_reward, the weight of L_reward (mini, measured); paper: NOT FOUND")


# A bad value of one `<stage>.<field>` of a reward configuration.
class RewardConfigError(ValueError):
    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")


# lambda_i of a reward configuration: `weights`, or 1 per model; checks lengths and types.
def reward_weights(models: Sequence[str], weights: Sequence[Any], stage: str = "reward") -> list[float]:
    if not models:
        raise RewardConfigError(f"{stage}.models", "empty; name at least one reward model")
    if not weights:
        return [1.0] * len(models)
    if len(weights) != len(models):
        raise RewardConfigError(f"{stage}.weights", f"{len(weights)} weights for {len(models)} models "
                                f"({', '.join(models)}); give one per model or none")
    bad = [w for w in weights if isinstance(w, bool) or not isinstance(w, (int, float))]
    if bad:
        raise RewardConfigError(f"{stage}.weights", f"{bad[0]!r} is not a number")
    return [float(w) for w in weights]


# sum_i lambda_i R_i(images, c) per image [B], and each model's batch mean (for logs).
def weighted_reward(rewards: Mapping[str, RewardFn], lambdas: Sequence[float], images: Tensor,
                    cond: Condition) -> tuple[Tensor, dict[str, float]]:
    total, means = None, {}
    for (name, fn), lam in zip(rewards.items(), lambdas):
        r = fn(images, cond)
        means[name] = r.detach().mean().item()
        total = lam * r if total is None else total + lam * r
    return total, means


# The differentiable input transform most image reward models expect (CLIP / HPS / ImageReward):
# bicubic resize of images in [0, 1] to `size` x `size`, then per-channel normalisation.
def clip_preprocess(images: Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    x = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return (x - m) / s


#----------------------------------------------------------------------------


# Reward fine-tuning (implements softdimo.train.Refinement); stateless besides the models.
class RewardRefinement:
    def __init__(self, config: RewardConfig, teacher: Teacher, rewards: Mapping[str, RewardFn]):
        self.config, self.teacher = config, teacher
        self.rewards = dict(rewards)
        self.lambdas = reward_weights(config.models, config.weights)

    # w_reward * L_reward on the soft-decoded images of this step's relaxed generator output.
    def generator_loss(self, batch: Any, rng: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        with full_precision(batch.logits.device):          # decoder and reward models in float32
            images = self.teacher.decode_soft(batch.relaxed.q, batch.cond)
            total, means = weighted_reward(self.rewards, self.lambdas, images, batch.cond)
        log = {f"reward_{name}": v for name, v in means.items()}
        return -self.config.weight * total.mean(), log

    def update(self, batch: Any, rng: torch.Generator) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
