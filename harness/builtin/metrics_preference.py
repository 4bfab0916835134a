"""Registers the human-preference scorers of Soft-Di[M]O's reward fine-tuning, TTEO and best-of-N
(arXiv 2509.22925) that sit next to HPS and CLIP score: ImageReward and PickScore, each as a
metric of a run's (image, prompt) pairs and as a differentiable reward (docs/metrics.md).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from harness.builtin.metrics_paper import TEXT_TO_IMAGE, samples_of
from harness.contracts import registry
from harness.contracts.entries import EvalInput, MetricEntry, MetricValue, RewardEntry, RunContext, per_image_metric
from harness.methods.metrics import image_reward, pickscore


# `metric`: the mean score of a run's (image, prompt) pairs under `module`'s scorer (`load(device)`),
# scored where each image was made (per image: its score).
def _pair_metric(metric: str, module: Any, load: Callable[[Any], Any], **fields: Any) -> MetricEntry:
    def extract(inp: EvalInput, ctx: RunContext) -> dict[str, np.ndarray]:
        source, _ = samples_of(inp)
        return {"score": load(ctx.device).score(source, [str(c) for c in inp.conditions])}

    def reduce(inp: EvalInput, arrays: dict[str, np.ndarray], ctx: RunContext) -> dict[str, MetricValue]:
        return {metric: module.pairs_value(arrays["score"], load(ctx.device))}
    return per_image_metric(metric, extract, reduce, **fields)


registry.metrics.register("image_reward", _pair_metric(
    "image_reward", image_reward, lambda device: image_reward.load_image_reward(device), applies_to=TEXT_TO_IMAGE,
    assets=image_reward.ASSET_NAMES,
    description="mean ImageReward v1.0 of (image, prompt) pairs (THUDM/ImageReward, normalised reward)"))
registry.metrics.register("pickscore", _pair_metric(
    "pickscore", pickscore, lambda device: pickscore.load_pickscore(device), applies_to=TEXT_TO_IMAGE,
    assets=pickscore.ASSET_NAMES,
    description="mean PickScore v1 of (image, prompt) pairs (exp(logit_scale) x cosine, CLIP-H/14)"))

registry.rewards.register("image_reward", RewardEntry(
    "image_reward", lambda teacher, ctx: image_reward.ImageRewardReward(image_reward.load_image_reward(ctx.device)),
    applies_to=TEXT_TO_IMAGE, assets=image_reward.ASSET_NAMES,
    description="ImageReward v1.0, differentiable (ReFL's tensor resize / crop / normalise)"))
registry.rewards.register("pickscore", RewardEntry(
    "pickscore", lambda teacher, ctx: pickscore.PickScoreReward(pickscore.load_pickscore(ctx.device)),
    applies_to=TEXT_TO_IMAGE, assets=pickscore.ASSET_NAMES,
    description="PickScore v1, differentiable (its processor's resize / crop / normalise on tensors)"))
