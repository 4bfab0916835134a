"""GAN refinement: where gradients go, what each loss updates, determinism, exact resume."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from softdimo.config import DistillConfig, RelaxConfig
from softdimo.refine.gan import (GANConfig, GANRefinement, feature_matching_loss, gan_masks, head_layers,
                               teacher_predictions)
from softdimo.relax import relax_gumbel, relax_hard, relax_soft
from softdimo.teachers.digits import DigitsTeacher
from softdimo.train import Distiller, run_distillation
from tests.float_tolerance import rounding_atol

CONFIG = DistillConfig(steps=4, batch_size=8, checkpoint_every=2, warmup_steps=1)
RELAX = {"hard": relax_hard, "gumbel": relax_gumbel, "soft": relax_soft}


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _distiller(teacher: DigitsTeacher, relax: str = "soft", seed: int = 0, config: DistillConfig = CONFIG,
               gan: GANConfig = GANConfig(weight=1.0)) -> Distiller:
    return Distiller(teacher, RELAX[relax], RelaxConfig(), config, seed=seed,
                     refinement=GANRefinement(gan, teacher, seed=seed + 100))


@pytest.mark.parametrize("relax, reaches", [("soft", True), ("gumbel", True), ("hard", False)])
def test_gan_gradient_reaches_generator_only_through_differentiable_relaxations(
        tiny_teacher: DigitsTeacher, relax: str, reaches: bool) -> None:
    d = _distiller(tiny_teacher, relax)
    batch = d._generator_pass(8, *d._init_noise())
    loss, _ = d.refinement.generator_loss(batch, d.rng)
    assert loss.requires_grad == reaches
    if reaches:
        loss.backward()
        grads = [p.grad for p in d.generator.parameters() if p.requires_grad]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum().item() for g in grads) > 0


def test_generator_loss_does_not_train_the_discriminator(tiny_teacher: DigitsTeacher) -> None:
    d = _distiller(tiny_teacher)
    heads = _state(d.refinement.disc.heads)
    batch = d._generator_pass(8, *d._init_noise())
    loss, _ = d.refinement.generator_loss(batch, d.rng)
    loss.backward()
    assert all(p.grad is None for p in d.refinement.disc.heads.parameters())
    assert all(p.requires_grad for p in d.refinement.disc.heads.parameters())   # restored for D's step
    assert _same(heads, _state(d.refinement.disc.heads))


def test_discriminator_update_trains_heads_only(tiny_teacher: DigitsTeacher) -> None:
    d = _distiller(tiny_teacher)
    teacher, generator, heads = (_state(tiny_teacher.network), _state(d.generator),
                                 _state(d.refinement.disc.heads))
    batch = d._generator_pass(8, *d._init_noise())
    log = d.refinement.update(batch, d.rng)
    assert {"gan_d_loss", "gan_d_real", "gan_d_fake"} <= log.keys()
    assert all(p.grad is None for p in d.generator.parameters())
    assert _same(generator, _state(d.generator))
    assert _same(teacher, _state(tiny_teacher.network))
    assert not _same(heads, _state(d.refinement.disc.heads))


def test_training_with_gan_keeps_teacher_frozen_and_moves_generator(tiny_teacher: DigitsTeacher) -> None:
    teacher = _state(tiny_teacher.network)
    gan_only = DistillConfig(steps=3, batch_size=8, dimo_weight=0.0)
    d = run_distillation(_distiller(tiny_teacher, config=gan_only))
    assert _same(teacher, _state(tiny_teacher.network))
    assert not torch.equal(d.generator.head.weight, tiny_teacher.network.head.weight)
    assert all("gan_g_loss" in e and "gan_d_loss" in e for e in d.history)


@pytest.mark.parametrize("relax", ["soft", "gumbel"])
def test_gan_training_is_deterministic(tiny_teacher: DigitsTeacher, relax: str) -> None:
    a = run_distillation(_distiller(tiny_teacher, relax, seed=1))
    b = run_distillation(_distiller(tiny_teacher, relax, seed=1))
    c = run_distillation(_distiller(tiny_teacher, relax, seed=2))
    assert _same(_state(a.generator), _state(b.generator))
    assert _same(_state(a.refinement.disc.heads), _state(b.refinement.disc.heads))
    assert a.history == b.history
    assert not _same(_state(a.refinement.disc.heads), _state(c.refinement.disc.heads))


def test_resume_with_gan_is_bit_identical(tiny_teacher: DigitsTeacher, tmp_path: Path) -> None:
    straight = run_distillation(_distiller(tiny_teacher, seed=5))
    ckpt = tmp_path / "distill.pt"
    run_distillation(_distiller(tiny_teacher, seed=5), checkpoint=ckpt, stop_after=2)
    torch.manual_seed(999)
    resumed = run_distillation(_distiller(tiny_teacher, seed=5), checkpoint=ckpt)
    assert resumed.step == straight.step == CONFIG.steps
    for attr in ("generator", "aux", "ema"):
        assert _same(_state(getattr(straight, attr)), _state(getattr(resumed, attr))), attr
    assert _same(_state(straight.refinement.disc.heads), _state(resumed.refinement.disc.heads))
    assert straight.refinement.opt.state_dict()["state"].keys() == resumed.refinement.opt.state_dict()["state"].keys()
    assert straight.history == resumed.history


def test_mask_ratio_range_and_head_layers(tiny_teacher: DigitsTeacher) -> None:
    g = torch.Generator().manual_seed(0)
    mask, r = gan_masks(tiny_teacher.layout, 64, 0.0, 0.0, g)
    assert not mask.any() and (r == 0).all()
    mask, r = gan_masks(tiny_teacher.layout, 64, 0.0, 0.95, g)
    assert r.min() >= 0 and r.max() <= 0.95 and r.std() > 0.1
    torch.testing.assert_close(mask.flatten(1).float().mean(1), r)       # r given to D = realised ratio
    assert head_layers((), 24) == [7, 15, 23] and head_layers((), 3) == [0, 1, 2] and head_layers((), 1) == [0]
    assert head_layers((-1, 0, 2), 3) == [0, 2]
    with pytest.raises(ValueError, match="gan.layers"):
        head_layers((3,), 3)


def test_gan_refuses_data_free_teacher(tiny_teacher: DigitsTeacher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiny_teacher, "real_tokens", lambda: None)
    with pytest.raises(ValueError, match="needs real data"):
        GANRefinement(GANConfig(), tiny_teacher, seed=0)


def test_refinement_starts_after_plain_dimo_steps(tiny_teacher: DigitsTeacher) -> None:
    # refine_start = 2: the first two steps are plain Di[M]O (same as no refinement, whatever
    # dimo_weight says); from step 2 on the GAN-only run trains on L_GAN alone.
    config = DistillConfig(steps=4, batch_size=8, refine_start=2, dimo_weight=0.0)
    plain = Distiller(tiny_teacher, relax_soft, RelaxConfig(), DistillConfig(steps=2, batch_size=8), seed=3)
    run_distillation(plain)
    d = _distiller(tiny_teacher, seed=3, config=config)
    run_distillation(d, stop_after=2)
    assert _same(_state(plain.generator), _state(d.generator))
    assert all("gan_g_loss" not in e for e in d.history)
    run_distillation(d)
    assert [("gan_g_loss" in e) for e in d.history] == [False, False, True, True]


def test_zero_weight_gan_is_paired_with_plain_dimo(tiny_teacher: DigitsTeacher) -> None:
    # The refinement draws from its own stream: with w_GAN = 0 the generator follows plain Di[M]O
    # exactly, so differences between runs with and without a refinement are paired.
    config = DistillConfig(steps=3, batch_size=8)
    plain = run_distillation(Distiller(tiny_teacher, relax_soft, RelaxConfig(), config, seed=4))
    zero = run_distillation(_distiller(tiny_teacher, seed=4, config=config, gan=GANConfig(weight=0.0)))
    assert _same(_state(plain.generator), _state(zero.generator))
    assert not _same(_state(zero.refinement.disc.heads), _state(GANRefinement(GANConfig(), tiny_teacher, 104).disc.heads))


def _moments(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [opt.state[p]["exp_avg"].clone() for group in opt.param_groups for p in group["params"]
            if p in opt.state]


def test_a_continuation_takes_the_parents_networks_and_step_and_keeps_its_own_optimiser_settings(
        tiny_teacher: DigitsTeacher) -> None:
    # The MaskBit "longer training" pattern: a Soft-Di[M]O + GAN student continued with AdamW, weight
    # decay and a smaller lr; Adam moments carried over only when asked.
    parent = run_distillation(_distiller(tiny_teacher, seed=1))
    state = parent.state_dict()
    longer = DistillConfig(steps=7, batch_size=8, warmup_steps=1, optimizer="adamw", weight_decay=0.01,
                           lr_generator=5e-5, lr_aux=5e-5)
    gan = GANConfig(weight=2.0, lr=3e-4)
    for carry in (False, True):
        child = _distiller(tiny_teacher, seed=2, config=longer, gan=gan)
        child.continue_from(state, with_optimizers=carry, with_refinement=True)
        assert child.step == parent.step == 4 and child.history == parent.history
        for attr in ("generator", "aux", "ema"):
            assert _same(_state(getattr(child, attr)), _state(getattr(parent, attr))), attr
        assert _same(_state(child.refinement.disc.heads), _state(parent.refinement.disc.heads))
        for opt in (child.opt_g, child.opt_a, child.refinement.opt):
            if carry:
                assert len(opt.state) > 0
            else:
                assert len(opt.state) == 0                       # fresh optimisers: no moments
        if carry:
            assert all(torch.equal(a, b) for a, b in zip(_moments(child.opt_g), _moments(parent.opt_g)))
        # this run's settings, whatever the parent's were (Adam, lr 2e-4; the heads' lr 1e-3)
        assert [(g["lr"], g["weight_decay"]) for g in child.opt_g.param_groups] == [(5e-5, 0.01)]
        assert child.refinement.opt.param_groups[0]["lr"] == 3e-4
        run_distillation(child)                                  # trains on from step 4 to 7
        assert child.step == 7 and len(child.history) == 7
        assert not _same(_state(child.generator), _state(parent.generator))


#----------------------------------------------------------------------------
# The discriminator input choices (gan.real_input, hard_fakes, paired_masks, feature_matching).


def test_teacher_mix_real_input_is_a_fixed_mixture_with_the_teachers_masked_prediction(
        tiny_teacher: DigitsTeacher) -> None:
    layout, net = tiny_teacher.layout, tiny_teacher.network
    refine = GANRefinement(GANConfig(real_input="teacher_mix", real_mix=0.3), tiny_teacher, seed=0)
    tokens, cond = refine.real_batch(6, torch.Generator().manual_seed(1))
    one_hot = torch.nn.functional.one_hot(tokens, layout.classes).float()
    soft_fake, sharp_fake = torch.full_like(one_hot, 1 / layout.classes), one_hot
    q_a = refine.real_q(tokens, cond, soft_fake, torch.Generator().manual_seed(2))
    q_b = refine.real_q(tokens, cond, sharp_fake, torch.Generator().manual_seed(2))
    torch.testing.assert_close(q_a, q_b, rtol=0, atol=0)                 # no dependence on the fake batch
    torch.testing.assert_close(q_a.sum(-1), torch.ones(q_a.shape[:-1]))
    # Each slot's prediction is phi's, with that slot in the masked half (half of the slots each pass).
    p = teacher_predictions(net, layout, tokens, cond, torch.Generator().manual_seed(2))
    torch.testing.assert_close(q_a, 0.7 * one_hot + 0.3 * p)
    g = torch.Generator().manual_seed(2)
    half = (torch.rand(6, layout.slots, generator=g).argsort(1).argsort(1) < layout.slots // 2).view_as(tokens)
    with torch.no_grad():
        direct = torch.softmax(net(net.embed_soft(one_hot, half), cond).logits, -1)
    torch.testing.assert_close(p[half], direct[half])
    assert half.sum() == 6 * (layout.slots // 2)
    zero = GANRefinement(GANConfig(real_input="teacher_mix", real_mix=0.0), tiny_teacher, seed=0)
    assert torch.equal(zero.real_q(tokens, cond, soft_fake, torch.Generator()), one_hot)


def test_hard_fakes_average_the_fake_term_over_soft_and_one_hot_fakes(tiny_teacher: DigitsTeacher) -> None:
    # With Gumbel-ST the fake input is one_hot(x_theta) (up to the straight-through construction's
    # float32 rounding): adding the one-hot fakes under the same masks leaves D's loss as it was;
    # with soft fakes the one-hot half changes it.
    def d_loss(relax: str, hard_fakes: bool) -> float:
        d = _distiller(tiny_teacher, relax, seed=7, gan=GANConfig(weight=1.0, hard_fakes=hard_fakes))
        batch = d._generator_pass(8, *d._init_noise())
        return d.refinement.update(batch, torch.Generator().manual_seed(3))["gan_d_loss"]
    # the straight-through value one_hot + (q - q) differs from one_hot by float32 rounding, carried
    # through phi's features and the heads: the tiny teacher's tolerance (1 block of 9 reductions,
    # embedding and heads: 12 deep, at most 64 terms) at the loss's size
    gumbel = d_loss("gumbel", False)
    tolerance = rounding_atol(gumbel, 12, 64)
    assert abs(d_loss("gumbel", True) - gumbel) <= tolerance
    assert abs(d_loss("soft", True) - d_loss("soft", False)) > tolerance


def test_paired_masks_share_one_draw(tiny_teacher: DigitsTeacher) -> None:
    paired = GANRefinement(GANConfig(paired_masks=True), tiny_teacher, seed=0)
    (mask_r, r_r), (mask_f, r_f) = paired.masks(16, torch.Generator().manual_seed(0))
    assert torch.equal(mask_r, mask_f) and torch.equal(r_r, r_f)
    (mask_r, r_r), (mask_f, r_f) = GANRefinement(GANConfig(), tiny_teacher, seed=0).masks(
        16, torch.Generator().manual_seed(0))
    assert not torch.equal(mask_r, mask_f)


def test_feature_matching_loss_and_its_gradient(tiny_teacher: DigitsTeacher) -> None:
    a = [torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    assert feature_matching_loss(a, a).item() == 0.0
    shifted = [x + 2.0 for x in a]                                      # batch means 2 apart everywhere
    torch.testing.assert_close(feature_matching_loss(a, shifted), torch.tensor(4.0))
    # Feature matching alone (w_GAN 0) still trains the generator, through phi's features only.
    d = _distiller(tiny_teacher, "soft", gan=GANConfig(weight=0.0, feature_matching=1.0))
    batch = d._generator_pass(8, *d._init_noise())
    loss, log = d.refinement.generator_loss(batch, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(log["gan_fm_loss"]) and log["gan_fm_loss"] > 0
    loss.backward()
    assert sum(p.grad.abs().sum().item() for p in d.generator.parameters() if p.grad is not None) > 0
    assert all(p.grad is None for p in d.refinement.disc.heads.parameters())
    both = _distiller(tiny_teacher, "soft", gan=GANConfig(weight=2.0, feature_matching=0.5))
    batch = both._generator_pass(8, *both._init_noise())
    loss, log = both.refinement.generator_loss(batch, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(2.0 * log["gan_g_loss"] + 0.5 * log["gan_fm_loss"])


@pytest.mark.parametrize("gan", [GANConfig(weight=1.0, real_input="teacher_mix", hard_fakes=True, paired_masks=True,
                                           feature_matching=1.0, d_warmup=3)])
def test_every_input_choice_trains_deterministically_and_resumes(tiny_teacher: DigitsTeacher, tmp_path: Path,
                                                                 gan: GANConfig) -> None:
    straight = run_distillation(_distiller(tiny_teacher, seed=6, gan=gan))
    ckpt = tmp_path / "distill.pt"
    run_distillation(_distiller(tiny_teacher, seed=6, gan=gan), checkpoint=ckpt, stop_after=2)
    resumed = run_distillation(_distiller(tiny_teacher, seed=6, gan=gan), checkpoint=ckpt)
    assert _same(_state(straight.generator), _state(resumed.generator))
    assert _same(_state(straight.refinement.disc.heads), _state(resumed.refinement.disc.heads))
    assert straight.history == resumed.history
    assert all({"gan_fm_loss", "gan_real_p_max"} <= e.keys() for e in straight.history)
    assert all(e["gan_real_p_max"] < 1.0 for e in straight.history)


def test_discriminator_warmup_trains_d_before_the_generator_sees_it(tiny_teacher: DigitsTeacher) -> None:
    # During the first d_warmup refinement steps the generator follows plain Di[M]O exactly (the
    # refinement draws from its own stream) while the heads train; then the GAN term acts.
    config = DistillConfig(steps=4, batch_size=8)
    plain = Distiller(tiny_teacher, relax_soft, RelaxConfig(), config, seed=4)
    warm = _distiller(tiny_teacher, seed=4, config=config, gan=GANConfig(weight=1.0, d_warmup=2))
    heads = _state(warm.refinement.disc.heads)
    for _ in range(2):
        plain.train_step(), warm.train_step()
    assert _same(_state(plain.generator), _state(warm.generator))
    assert not _same(heads, _state(warm.refinement.disc.heads)) and warm.refinement.steps == 2
    plain.train_step(), warm.train_step()
    assert not _same(_state(plain.generator), _state(warm.generator))
