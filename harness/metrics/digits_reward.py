"""The mini-scale reward model (the HPS analogue) and the metric that reports it.

`digits_reward`: R(image, label) = log p(label | image) under digits-reward-v1, a network that no
evaluation metric uses (harness/metrics/digits_nets.py). As a reward model it is differentiable in
the images; as a metric it is the mean reward of a run's samples, so reward fine-tuning, TTEO and
best-of-N can show the reward they optimise next to the independent metrics.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.entries import EvalInput, MetricValue, RunContext, labels_of
from harness.metrics.digits_nets import NETS, load_net
from softdimo.teachers.base import Condition

BATCH = 1000

#----------------------------------------------------------------------------


# log p(y | x) of digits-reward-v1 per image [B], differentiable in the images [B, 1, 8, 8].
def log_prob_reward(images: Tensor, cond: Condition) -> Tensor:
    net, _ = load_net("reward")
    net = net.to(images.device)
    labels = cond.tensors["labels"].to(images.device)
    return F.log_softmax(net(images.float()), dim=1).gather(1, labels[:, None])[:, 0]


# Registry builder: the reward model as a callable `(images, cond) -> [B]` (teacher and ctx unused).
def build_reward(teacher: object, ctx: RunContext) -> Callable[[Tensor, Condition], Tensor]:
    return log_prob_reward


# Metric `digits_reward`: mean log p(label | image) of the samples under digits-reward-v1.
@torch.no_grad()
def compute_reward(inp: EvalInput, ctx: RunContext) -> dict[str, MetricValue]:
    labels = labels_of(inp.conditions)
    values = [log_prob_reward(inp.images[i:i + BATCH], Condition("class", {"labels": labels[i:i + BATCH]}))
              for i in range(0, len(inp.images), BATCH)]
    _, sha = load_net("reward")
    proto = {"name": "digits-reward-logp", "implementation": "softdimo-harness digits metrics v1",
             "reward_model": NETS["reward"].name, "reward_model_sha256": sha,
             "levels": int(inp.spec.param("teacher.levels")), "samples": len(inp.images)}
    return {"digits_reward": MetricValue(torch.cat(values).mean().item(), True, proto)}
