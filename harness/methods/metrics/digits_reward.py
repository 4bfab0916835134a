"""The mini-scale reward model (the HPS analogue) and the metric that reports it.

`digits_reward`: R(image, label) = log p(label | image) under digits-reward-v1, a network that no
evaluation metric uses (harness/methods/metrics/digits_nets.py). As a reward model it is differentiable in
the images; as a metric it is the mean reward of a run's samples, so reward fine-tuning, TTEO and
best-of-N can show the reward they optimise next to the independent metrics. `digits_reward_heldout`
is the same quantity under digits-reward-heldout-v1 (the architecture trained from another seed),
an independent learned score for runs that optimise digits-reward-v1.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from harness.contracts.entries import EvalInput, MetricEntry, MetricValue, RunContext, labels_of, per_image_metric
from harness.methods.metrics.digits_nets import NETS, load_net
from softdimo.teachers.base import Condition

BATCH = 1000

#----------------------------------------------------------------------------


# log p(y | x) under the reward network `key` per image [B], differentiable in the images [B, 1, 8, 8].
def log_prob_reward(images: Tensor, cond: Condition, key: str = "reward") -> Tensor:
    net, _ = load_net(key)
    net = net.to(images.device)
    labels = cond.tensors["labels"].to(images.device)
    return F.log_softmax(net(images.float()), dim=1).gather(1, labels[:, None])[:, 0]


# Registry builder: the reward model as a callable `(images, cond) -> [B]` (teacher and ctx unused).
def build_reward(teacher: object, ctx: RunContext) -> Callable[[Tensor, Condition], Tensor]:
    return log_prob_reward


# The metric `name`: mean log p(label | image) of the samples under the reward network `key`
# (per image: its log-probability; `fields`: the rest of the MetricEntry).
def reward_metric(name: str, key: str, **fields: Any) -> MetricEntry:
    @torch.no_grad()
    def extract(inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
        labels = labels_of(inp.conditions)
        values = [log_prob_reward(inp.images[i:i + BATCH], Condition("class", {"labels": labels[i:i + BATCH]}), key)
                  for i in range(0, len(inp.images), BATCH)]
        return {"log_prob": torch.cat(values).numpy()}

    def reduce(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
        _, sha = load_net(key)
        proto = {"name": "digits-reward-logp", "implementation": "softdimo-harness digits metrics v1",
                 "reward_model": NETS[key].name, "reward_model_sha256": sha,
                 "levels": int(inp.spec.param("teacher.levels")), "samples": inp.total}
        return {name: MetricValue(torch.from_numpy(arrays["log_prob"]).mean().item(), True, proto)}
    return per_image_metric(name, extract, reduce, **fields)
