"""The learned shapes reward (`shapes_clip`): CLIP-score of an image against its prompt under the
committed contrastive model shapes-clip-v1 (harness/methods/metrics/shapes_clip_net.py).

The reward is R(x, c) = 100 cos(f_img(x), f_txt(c)), differentiable in the images (the reward of
Soft-Di[M]O's reward fine-tuning, docs/paper.md, and the selection score of best-of-N / TTEO); the
metric is its mean over a run's samples (CLIPScore's 100 x cosine, without the clamp at 0). It is
kept apart from the exact checker so that reward hacking shows up as reward up, checker down.
`shapes_clip_heldout` is the same score under shapes-clip-heldout-v1 (trained from other seeds),
an independent learned score for runs that optimise shapes-clip-v1.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from harness.contracts.entries import EvalInput, MetricEntry, MetricValue, RunContext, per_image_metric
from harness.methods.metrics.shapes_clip_net import MODELS, load_clip
from softdimo.data import shapes as world
from softdimo.teachers.base import Condition

SCALE = 100.0
BATCH = 1000

#----------------------------------------------------------------------------


# R(x, c) = 100 cos(f_img(x), f_txt(c)) for images [B, 3, 16, 16] in [0, 1] and their prompts;
# differentiable in the images (the network itself is frozen).
class ShapesClipReward:
    def __init__(self, key: str = "v1") -> None:
        self.name = MODELS[key].name
        self.model, self.sha256 = load_clip(key)

    def __call__(self, images: Tensor, cond: Condition) -> Tensor:
        if not cond.raw:
            raise ValueError("shapes_clip needs the prompts (Condition.raw) of the images")
        return self.score(images, [str(p) for p in cond.raw])

    # The reward of images against prompt strings.
    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        if images.shape[1:] != (3, world.SIDE, world.SIDE) or len(images) != len(prompts):
            raise ValueError(f"shapes_clip expects images [B, 3, {world.SIDE}, {world.SIDE}] and B prompts, "
                             f"got {tuple(images.shape)} and {len(prompts)} prompts")
        ids = world.tokenize(prompts).to(images.device)
        return SCALE * self.model.to(images.device).similarity(images, ids)


# The reward entry's builder: (teacher, ctx) -> reward callable.
def build_reward(teacher: Any, ctx: RunContext) -> Callable[[Tensor, Condition], Tensor]:
    return ShapesClipReward()


# The metric `name`: mean CLIP-score of the samples against their prompts under model `key` (per
# image: its score; the mean sums chunks of BATCH in index order; `fields`: the rest of the entry).
def clip_score_metric(name: str, key: str, **fields: Any) -> MetricEntry:
    def extract(inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
        reward = ShapesClipReward(key)
        prompts = [str(c) for c in inp.conditions]
        scores = [reward.score(inp.images[i:i + BATCH].float(), prompts[i:i + BATCH]).detach()
                  for i in range(0, len(prompts), BATCH)]
        return {"score": torch.cat(scores).numpy()}

    def reduce(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
        reward = ShapesClipReward(key)
        scores = torch.from_numpy(arrays["score"])
        total = sum(scores[i:i + BATCH].sum().item() for i in range(0, len(scores), BATCH))
        proto = {"name": "shapes-clip-score", "implementation": "softdimo-harness shapes CLIP-score",
                 "model": reward.name, "model_sha256": reward.sha256, "scale": SCALE,
                 "world": world.WORLD_VERSION, "samples": inp.total}
        return {name: MetricValue(total / inp.total, True, proto)}
    return per_image_metric(name, extract, reduce, **fields)
