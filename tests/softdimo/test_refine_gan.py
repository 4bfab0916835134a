"""GAN refinement: where gradients go, what each loss updates, determinism, exact resume."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from softdimo.config import DistillConfig, RelaxConfig
from softdimo.refine.gan import GANConfig, GANRefinement, gan_masks, head_layers
from softdimo.relax import relax_gumbel, relax_hard, relax_soft
from softdimo.teachers.digits import DigitsTeacher
from softdimo.train import Distiller, run_distillation

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
