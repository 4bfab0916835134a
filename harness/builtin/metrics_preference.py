"""Registers the human-preference scorers of Soft-Di[M]O's reward fine-tuning, TTEO and best-of-N
(arXiv 2509.22925) that sit next to HPS and CLIP score: ImageReward and PickScore, each as a
metric of a run's (image, prompt) pairs and as a differentiable reward (docs/metrics.md).
"""
from __future__ import annotations

from harness import registry
from harness.builtin.metrics_paper import TEXT_TO_IMAGE, samples_of
from harness.entries import EvalInput, MetricEntry, MetricValue, RewardEntry, RunContext
from harness.metrics import image_reward, pickscore


def _image_reward(inp: EvalInput, ctx: RunContext) -> dict[str, MetricValue]:
    source, _ = samples_of(inp)
    scorer = image_reward.load_image_reward(ctx.device)
    return {"image_reward": image_reward.score_pairs(source, [str(c) for c in inp.conditions], scorer)}


def _pickscore(inp: EvalInput, ctx: RunContext) -> dict[str, MetricValue]:
    source, _ = samples_of(inp)
    scorer = pickscore.load_pickscore(ctx.device)
    return {"pickscore": pickscore.score_pairs(source, [str(c) for c in inp.conditions], scorer)}


registry.metrics.register("image_reward", MetricEntry(
    "image_reward", _image_reward, applies_to=TEXT_TO_IMAGE, assets=image_reward.ASSET_NAMES,
    description="mean ImageReward v1.0 of (image, prompt) pairs (THUDM/ImageReward, normalised reward)"))
registry.metrics.register("pickscore", MetricEntry(
    "pickscore", _pickscore, applies_to=TEXT_TO_IMAGE, assets=pickscore.ASSET_NAMES,
    description="mean PickScore v1 of (image, prompt) pairs (exp(logit_scale) x cosine, CLIP-H/14)"))

registry.rewards.register("image_reward", RewardEntry(
    "image_reward", lambda teacher, ctx: image_reward.ImageRewardReward(image_reward.load_image_reward(ctx.device)),
    applies_to=TEXT_TO_IMAGE, assets=image_reward.ASSET_NAMES,
    description="ImageReward v1.0, differentiable (ReFL's tensor resize / crop / normalise)"))
registry.rewards.register("pickscore", RewardEntry(
    "pickscore", lambda teacher, ctx: pickscore.PickScoreReward(pickscore.load_pickscore(ctx.device)),
    applies_to=TEXT_TO_IMAGE, assets=pickscore.ASSET_NAMES,
    description="PickScore v1, differentiable (its processor's resize / crop / normalise on tensors)"))
