"""Reward fine-tuning and REINFORCE: gradient paths, effect, determinism, unbiasedness, resume."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness.contracts.entries import RunContext
from harness.methods.students import build_rewards
from softdimo.config import DistillConfig, RelaxConfig
from softdimo.refine.reinforce import (ReinforceConfig, ReinforceRefinement, leave_one_out, sample_log_prob,
                                       score_function_loss)
from softdimo.refine.reward import RewardConfig, RewardConfigError, RewardRefinement, reward_weights
from softdimo.relax import relax_gumbel, relax_hard, relax_soft
from softdimo.teachers.digits import DigitsTeacher
from softdimo.train import Distiller, run_distillation

RELAX = {"hard": relax_hard, "gumbel": relax_gumbel, "soft": relax_soft}


def _rewards(teacher: DigitsTeacher, tmp_path: Path) -> dict:
    return build_rewards(["digits_reward"], teacher, RunContext(tmp_path, tmp_path))


def _reward_distiller(teacher: DigitsTeacher, tmp_path: Path, relax: str = "soft", seed: int = 0,
                      config: DistillConfig = DistillConfig(steps=4, batch_size=8, warmup_steps=1),
                      weight: float = 1.0) -> Distiller:
    ref = RewardRefinement(RewardConfig(weight=weight), teacher, _rewards(teacher, tmp_path))
    return Distiller(teacher, RELAX[relax], RelaxConfig(), config, seed=seed, refinement=ref)


@pytest.mark.parametrize("relax, reaches", [("soft", True), ("gumbel", True), ("hard", False)])
def test_reward_gradient_reaches_generator_only_through_differentiable_relaxations(
        tiny_teacher: DigitsTeacher, tmp_path: Path, relax: str, reaches: bool) -> None:
    d = _reward_distiller(tiny_teacher, tmp_path, relax)
    loss, log = d.refinement.generator_loss(d._generator_pass(8, *d._init_noise()), d.rng)
    assert "reward_digits_reward" in log
    assert loss.requires_grad == reaches
    if reaches:
        loss.backward()
        assert d.generator.head.weight.grad.abs().sum() > 0


def test_reward_fine_tuning_raises_the_reward(tiny_teacher: DigitsTeacher, tmp_path: Path) -> None:
    # Reward only (no Di[M]O term), a few steps: the soft-decoded reward of a fixed batch goes up.
    config = DistillConfig(steps=15, batch_size=16, warmup_steps=1, dimo_weight=0.0, lr_generator=1e-3,
                           grad_clip=0.0)
    d = _reward_distiller(tiny_teacher, tmp_path, config=config, seed=3)
    probe = _reward_distiller(tiny_teacher, tmp_path, seed=4)

    def reward_now() -> float:
        probe.rng.manual_seed(0)
        with torch.no_grad():
            probe.generator.load_state_dict(d.generator.state_dict())
            probe.generator.eval()                          # no dropout: the same batch every time
            _, log = probe.refinement.generator_loss(probe._generator_pass(64, *probe._init_noise()), probe.rng)
        return log["reward_digits_reward"]

    before = reward_now()
    run_distillation(d)
    assert reward_now() > before + 0.5


def test_reward_training_is_deterministic(tiny_teacher: DigitsTeacher, tmp_path: Path) -> None:
    a = run_distillation(_reward_distiller(tiny_teacher, tmp_path, "gumbel", seed=1))
    b = run_distillation(_reward_distiller(tiny_teacher, tmp_path, "gumbel", seed=1))
    c = run_distillation(_reward_distiller(tiny_teacher, tmp_path, "gumbel", seed=2))
    assert torch.equal(a.generator.head.weight, b.generator.head.weight) and a.history == b.history
    assert not torch.equal(a.generator.head.weight, c.generator.head.weight)


def test_reward_weights_are_checked() -> None:
    assert reward_weights(("a", "b"), ()) == [1.0, 1.0]
    assert reward_weights(("a", "b"), (0.5, 2)) == [0.5, 2.0]
    with pytest.raises(RewardConfigError, match="reward.weights: 1 weights for 2 models"):
        reward_weights(("a", "b"), (1.0,))
    with pytest.raises(RewardConfigError, match="reward.models: empty"):
        reward_weights((), ())


#----------------------------------------------------------------------------
# REINFORCE.


def _toy_exact_gradient(logits: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    # d/dz E_{x ~ softmax(z)}[f(x)] for two independent slots, by enumerating all outcomes.
    z = logits.clone().requires_grad_(True)
    p = F.softmax(z, -1)                                  # [1, 2, 1, C]
    expected = (p[0, 0, 0][:, None] * p[0, 1, 0][None, :] * table).sum()
    (g,) = torch.autograd.grad(expected, z)
    return g


@pytest.mark.parametrize("baseline", ["none", "leave_one_out", "constant"])
def test_reinforce_estimator_is_unbiased_on_a_toy_case(baseline: str) -> None:
    # Two slots, three classes, reward f(x0, x1) from a table: the mean of many score-function
    # estimates matches the exact gradient within 4 standard errors.
    gen = torch.Generator().manual_seed(0)
    logits = torch.tensor([[[[0.3, -0.5, 1.0]], [[0.0, 0.8, -0.4]]]])
    table = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0], [2.0, 1.5, -0.5]])
    exact = _toy_exact_gradient(logits, table)
    batch, batches = 16, 2000
    z = logits.expand(batch, -1, -1, -1).clone().requires_grad_(True)
    estimates = []
    for _ in range(batches):
        tokens = torch.multinomial(F.softmax(logits, -1).view(-1, 3), batch, replacement=True, generator=gen)
        tokens = tokens.T.reshape(batch, 2, 1)
        rewards = table[tokens[:, 0, 0], tokens[:, 1, 0]]
        b = {"none": torch.zeros_like(rewards), "leave_one_out": leave_one_out(rewards),
             "constant": torch.full_like(rewards, 1.3)}[baseline]
        loss = score_function_loss(z, tokens, rewards, b)
        (g,) = torch.autograd.grad(-loss, z)             # estimate of +grad E[f] per batch
        estimates.append(g.sum(0, keepdim=True))          # batch mean (the loss averages over b)
    est = torch.cat(estimates)
    mean, stderr = est.mean(0, keepdim=True), est.std(0, keepdim=True) / batches ** 0.5
    assert ((mean - exact).abs() <= 4 * stderr + 1e-6).all(), (mean, exact, stderr)
    assert exact.abs().max() > 0.1


def test_sample_log_prob_and_leave_one_out() -> None:
    logits = torch.randn(3, 4, 1, 5, generator=torch.Generator().manual_seed(1))
    tokens = torch.randint(5, (3, 4, 1), generator=torch.Generator().manual_seed(2))
    expected = torch.stack([sum(F.log_softmax(logits[b, i, 0] / 2.0, -1)[tokens[b, i, 0]] for i in range(4))
                            for b in range(3)])
    torch.testing.assert_close(sample_log_prob(logits, tokens, 2.0), expected)
    torch.testing.assert_close(leave_one_out(torch.tensor([1.0, 2.0, 6.0])), torch.tensor([4.0, 3.5, 1.5]))


def _reinforce_distiller(teacher: DigitsTeacher, tmp_path: Path, seed: int, baseline: str = "ema",
                         config: DistillConfig = DistillConfig(steps=4, batch_size=8, checkpoint_every=2)) -> Distiller:
    ref = ReinforceRefinement(ReinforceConfig(baseline=baseline), teacher, _rewards(teacher, tmp_path))
    return Distiller(teacher, relax_hard, RelaxConfig(), config, seed=seed, refinement=ref)


def test_reinforce_trains_with_hard_tokens(tiny_teacher: DigitsTeacher, tmp_path: Path) -> None:
    d = _reinforce_distiller(tiny_teacher, tmp_path, seed=0)
    loss, log = d.refinement.generator_loss(d._generator_pass(8, *d._init_noise()), d.rng)
    assert loss.requires_grad and log["reinforce_advantage_std"] > 0
    loss.backward()
    assert d.generator.head.weight.grad.abs().sum() > 0


def test_resume_with_reinforce_is_bit_identical(tiny_teacher: DigitsTeacher, tmp_path: Path) -> None:
    straight = run_distillation(_reinforce_distiller(tiny_teacher, tmp_path, seed=6))
    ckpt = tmp_path / "distill.pt"
    run_distillation(_reinforce_distiller(tiny_teacher, tmp_path, seed=6), checkpoint=ckpt, stop_after=2)
    resumed = run_distillation(_reinforce_distiller(tiny_teacher, tmp_path, seed=6), checkpoint=ckpt)
    assert straight.refinement.ema is not None and straight.refinement.ema == resumed.refinement.ema
    assert torch.equal(straight.generator.head.weight, resumed.generator.head.weight)
    assert straight.history == resumed.history
