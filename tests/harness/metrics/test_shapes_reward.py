"""The learned shapes reward (committed shapes-clip-v1): differentiable in the images, prefers the
matching prompt, registered as reward model and metric."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from harness.contracts import registry
from harness.contracts.entries import RunContext
from harness.methods.metrics.shapes_clip_net import contradicting_prompt, load_clip
from softdimo.data import shapes as world
from softdimo.teachers.base import Condition


def _reward(tmp_path: Path):
    return registry.rewards.get("shapes_clip").build(None, RunContext(tmp_path, tmp_path))


def test_reward_is_differentiable_in_the_images(tmp_path: Path) -> None:
    reward = _reward(tmp_path)
    tokens, prompts = world.sample_batch(8, seed=0)
    logits = torch.randn(8, world.POSITIONS, world.NUM_TOKENS, requires_grad=True)
    images = world.render_soft(torch.softmax(logits, -1))
    r = reward(images, Condition("text", {"tokens": world.tokenize(prompts)}, prompts))
    assert r.shape == (8,) and torch.isfinite(r).all()
    r.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in load_clip()[0].parameters())


def test_reward_ranks_the_matching_prompt_first(tmp_path: Path) -> None:
    reward = _reward(tmp_path)
    tokens, prompts = world.sample_batch(300, seed=11)
    images = world.render(tokens)
    rng = random.Random(0)
    contradicting = [contradicting_prompt(world.parse_prompt(p), rng) for p in prompts]
    shuffled = prompts[1:] + prompts[:1]
    with torch.no_grad():
        own = reward.score(images, prompts)
        wrong = reward.score(images, contradicting)
        other = reward.score(images, shuffled)
    assert own.mean() > wrong.mean() and own.mean() > other.mean()
    assert (own > other).float().mean() > 0.9
    assert (own > wrong).float().mean() > 0.75


def test_reward_refuses_missing_prompts(tmp_path: Path) -> None:
    reward = _reward(tmp_path)
    images = torch.zeros(2, 3, world.SIDE, world.SIDE)
    with pytest.raises(ValueError, match="needs the prompts"):
        reward(images, Condition("text", {"tokens": world.tokenize(["a bar", "a cross"])}))
    with pytest.raises(ValueError, match="expects images"):
        reward.score(images[:, :1], ["a bar", "a cross"])
