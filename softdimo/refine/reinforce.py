"""REINFORCE (score-function) reward fine-tuning: the gradient-free alternative the Soft-Di[M]O
paper dismisses as too noisy for long token sequences (docs/paper.md), implemented so the claim
can be measured. It needs no gradient through the relaxation, so it runs with `hard`.

  grad_theta E_{x ~ p_theta}[R(x)] = E[ (R(x) - b) grad_theta log p_theta(x) ],
  log p_theta(x) = sum_slots log softmax(z_theta / T)[x],

with x = x_theta, the generator's hard sample of this step, R = sum_i lambda_i R_i(Dec(x), c) on
hard-decoded images, and a baseline b that does not depend on x (so the estimator stays unbiased).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from softdimo.params import param
from softdimo.precision import full_precision
from softdimo.refine.reward import RewardFn, reward_weights, weighted_reward
from softdimo.teachers.base import Teacher

BASELINES = ("none", "ema", "leave_one_out")

#----------------------------------------------------------------------------


# Stage `reinforce`: reward models as in `reward`, plus the baseline.
@dataclass(frozen=True)
class ReinforceConfig:
    models: tuple = param(("digits_reward",), help="reward models R_i by name (registry.rewards)")
    weights: tuple = param((), help="lambda_i, one per model; empty = 1 for each")
    weight: float = param(100.0, lo=0.0, help="weight of the score-function loss (as reward.weight)")
    baseline: str = param("leave_one_out", choices=BASELINES,
                          help="b: leave_one_out = mean reward of the other samples of the batch; ema = "
                               "moving average of past batch means (0 before the first); none = 0")
    baseline_decay: float = param(0.9, lo=0.0, hi=1.0, help="decay of the ema baseline")


# log p_theta(x) per sample [B]: the sum over slots of log softmax(z / T) at the drawn tokens.
def sample_log_prob(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    logp = F.log_softmax(logits / temperature, dim=-1).gather(-1, tokens[..., None])[..., 0]
    return logp.flatten(1).sum(1)


# Leave-one-out baseline b_i = (sum_j R_j - R_i) / (B - 1) per sample (0 for a batch of one).
def leave_one_out(rewards: Tensor) -> Tensor:
    n = rewards.shape[0]
    if n < 2:
        return torch.zeros_like(rewards)
    return (rewards.sum() - rewards) / (n - 1)


# The surrogate whose gradient is the REINFORCE estimate of -grad E[R], averaged over the batch:
# -mean_b (R_b - b_b) log p_theta(x_b); rewards and baselines carry no gradient.
def score_function_loss(logits: Tensor, tokens: Tensor, rewards: Tensor, baseline: Tensor,
                        temperature: float = 1.0) -> Tensor:
    advantage = (rewards - baseline).detach()
    return -(advantage * sample_log_prob(logits, tokens, temperature)).mean()


#----------------------------------------------------------------------------


# REINFORCE refinement (implements softdimo.train.Refinement); state: the ema baseline.
class ReinforceRefinement:
    def __init__(self, config: ReinforceConfig, teacher: Teacher, rewards: Mapping[str, RewardFn]):
        self.config, self.teacher = config, teacher
        self.rewards = dict(rewards)
        self.lambdas = reward_weights(config.models, config.weights, stage="reinforce")
        self.ema: float | None = None

    def _baseline(self, rewards: Tensor) -> Tensor:
        if self.config.baseline == "leave_one_out":
            return leave_one_out(rewards)
        if self.config.baseline == "ema" and self.ema is not None:
            return torch.full_like(rewards, self.ema)
        return torch.zeros_like(rewards)

    # weight * score-function loss on this step's hard samples x_theta, rewarded on Dec(x_theta).
    def generator_loss(self, batch: Any, rng: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        with torch.no_grad(), full_precision(batch.logits.device):     # decoder and rewards in float32
            images = self.teacher.decode(batch.relaxed.tokens, batch.cond)
            rewards, means = weighted_reward(self.rewards, self.lambdas, images, batch.cond)
        baseline = self._baseline(rewards)
        loss = score_function_loss(batch.logits, batch.relaxed.tokens, rewards, baseline, batch.temperature)
        mean = rewards.mean().item()
        if self.config.baseline == "ema":
            d = self.config.baseline_decay
            self.ema = mean if self.ema is None else d * self.ema + (1.0 - d) * mean
        log = {f"reward_{name}": v for name, v in means.items()}
        log["reinforce_advantage_std"] = (rewards - baseline).std().item() if len(rewards) > 1 else 0.0
        return self.config.weight * loss, log

    def update(self, batch: Any, rng: torch.Generator) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema = state["ema"]
