"""The distillation loop: exact resume, determinism, what each relaxation updates."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from softdimo.config import DistillConfig, RelaxConfig
from softdimo.relax import relax_gumbel, relax_hard, relax_soft
from softdimo.teachers.base import ImageNoise
from softdimo.teachers.digits import DigitsTeacher
from softdimo.dimo import dimo_logit_gradient
from softdimo.train import (Distiller, dropout_active, ema_rate, generate, gradient_norms, make_optimizer,
                           run_distillation, sigma_at,
                           warmup_constant)
from tests.float_tolerance import assert_parity

CONFIG = DistillConfig(steps=6, batch_size=8, checkpoint_every=3, warmup_steps=2)


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_is_bit_identical(tiny_teacher: DigitsTeacher, tmp_path: Path) -> None:
    straight = run_distillation(Distiller(tiny_teacher, relax_soft, RelaxConfig(), CONFIG, seed=7))
    ckpt = tmp_path / "distill.pt"
    first = Distiller(tiny_teacher, relax_soft, RelaxConfig(), CONFIG, seed=7)
    run_distillation(first, checkpoint=ckpt, stop_after=3)
    assert ckpt.is_file() and first.step == 3
    torch.manual_seed(12345)  # a resumed process starts with a different global RNG state
    resumed = run_distillation(Distiller(tiny_teacher, relax_soft, RelaxConfig(), CONFIG, seed=7), checkpoint=ckpt)
    assert resumed.step == straight.step == 6
    for attr in ("generator", "aux", "ema"):
        _assert_identical(_params(getattr(straight, attr)), _params(getattr(resumed, attr)))
    assert straight.history == resumed.history


def test_same_seed_same_run_other_seed_other_run(tiny_teacher: DigitsTeacher) -> None:
    config = DistillConfig(steps=3, batch_size=8)
    a = run_distillation(Distiller(tiny_teacher, relax_hard, RelaxConfig(), config, seed=1))
    b = run_distillation(Distiller(tiny_teacher, relax_hard, RelaxConfig(), config, seed=1))
    c = run_distillation(Distiller(tiny_teacher, relax_hard, RelaxConfig(), config, seed=2))
    _assert_identical(_params(a.generator), _params(b.generator))
    assert not torch.equal(a.generator.head.weight, c.generator.head.weight)


def test_teacher_and_frozen_embeddings_stay_fixed(tiny_teacher: DigitsTeacher) -> None:
    before = _params(tiny_teacher.network)
    d = run_distillation(Distiller(tiny_teacher, relax_gumbel, RelaxConfig(), DistillConfig(steps=2, batch_size=8), seed=0))
    _assert_identical(before, _params(tiny_teacher.network))
    for name in tiny_teacher.network.embedding_parameter_names():
        assert torch.equal(d.generator.state_dict()[name], before[name]), name
        assert torch.equal(d.aux.state_dict()[name], before[name]), name
    assert not torch.equal(d.generator.state_dict()["head.weight"], before["head.weight"])
    assert not torch.equal(d.aux.state_dict()["head.weight"], before["head.weight"])


def test_relaxations_train_bit_identically_without_refinement(tiny_teacher: DigitsTeacher) -> None:
    # With distill.teacher_input "sampled" (Di[M]O's discrete path, the default) phi and psi read the
    # re-masked hard sample x_theta, which every built-in relaxation draws from the same noise, and
    # the Di[M]O gradient never passes through q: hard, gumbel and soft train the same student to
    # the bit, which lets the harness share it.
    config = DistillConfig(steps=3, batch_size=8)
    runs = {name: run_distillation(Distiller(tiny_teacher, fn, RelaxConfig(gumbel_tau=0.3), config, seed=3))
            for name, fn in (("hard", relax_hard), ("gumbel", relax_gumbel), ("soft", relax_soft))}
    for name in ("gumbel", "soft"):
        for attr in ("generator", "aux", "ema"):
            _assert_identical(_params(getattr(runs["hard"], attr)), _params(getattr(runs[name], attr)))
        assert runs["hard"].history == runs[name].history


def test_relaxed_teacher_input_is_a_different_method(tiny_teacher: DigitsTeacher) -> None:
    # The "relaxed" variant feeds q to phi and psi: gumbel's straight-through forward value is
    # exactly one_hot(x_theta), so it still equals hard; soft's expected embedding does not.
    config = DistillConfig(steps=3, batch_size=8, teacher_input="relaxed")
    h = run_distillation(Distiller(tiny_teacher, relax_hard, RelaxConfig(), config, seed=3))
    g = run_distillation(Distiller(tiny_teacher, relax_gumbel, RelaxConfig(gumbel_tau=0.3), config, seed=3))
    s = run_distillation(Distiller(tiny_teacher, relax_soft, RelaxConfig(), config, seed=3))
    _assert_identical(_params(h.generator), _params(g.generator))
    aux = {name: torch.tensor([e["aux_loss"] for e in d.history]) for name, d in (("hard", h), ("soft", s))}
    assert (aux["hard"] - aux["soft"]).abs().max() > 1e-4  # phi and psi see other inputs


def test_one_step_sampling_is_per_image(tiny_teacher: DigitsTeacher) -> None:
    net = tiny_teacher.network
    labels = [3, 1, 4, 1, 5, 9]
    full, _ = generate(net, tiny_teacher.encode_condition(labels), ImageNoise(5, range(6)), 0.5, 0.1)
    part, _ = generate(net, tiny_teacher.encode_condition(labels[2:4]), ImageNoise(5, range(2, 4)), 0.5, 0.1)
    assert torch.equal(full[2:4], part)


def test_ema_ramp_is_the_released_formula(tiny_teacher: DigitsTeacher) -> None:
    # Released Di[M]O code: rate = min(decay, (1 + s) / (10 + s)) at global step s, then
    # ema <- rate * ema + (1 - rate) * theta.
    assert ema_rate(0.9999, 0, True) == 0.1 and ema_rate(0.9999, 0, False) == 0.9999
    assert ema_rate(0.9999, 10**5, True) == min(0.9999, (1 + 10**5) / (10 + 10**5))
    d = Distiller(tiny_teacher, relax_hard, RelaxConfig(), DistillConfig(steps=3, batch_size=8, ema_decay=0.9999),
                  seed=0)
    expected = {k: v.clone() for k, v in d.ema.named_parameters()}
    for s in range(3):
        d.train_step()
        rate = min(0.9999, (1 + s) / (10 + s))
        for name, p in d.generator.named_parameters():
            expected[name] = rate * expected[name] + (1 - rate) * p.detach()
    for name, p in d.ema.named_parameters():
        # lerp_ against rate * ema + (1 - rate) * theta: two element-wise roundings per step, 3 steps
        assert_parity(p, expected[name], (2 * 3, 1))


def test_adamw_weight_decay_acts_and_adam_refuses_it(tiny_teacher: DigitsTeacher) -> None:
    w = torch.nn.Parameter(torch.full((4,), 2.0))
    w.grad = torch.zeros(4)
    make_optimizer([w], 0.1, DistillConfig(optimizer="adamw", weight_decay=0.5)).step()
    torch.testing.assert_close(w.detach(), torch.full((4,), 2.0 * (1 - 0.1 * 0.5)))   # decoupled decay only
    with pytest.raises(ValueError, match="needs distill.optimizer 'adamw'"):
        make_optimizer([w], 0.1, DistillConfig(optimizer="adam", weight_decay=0.5))
    runs = [run_distillation(Distiller(tiny_teacher, relax_hard, RelaxConfig(),
                                       DistillConfig(steps=3, batch_size=8, optimizer="adamw", weight_decay=wd),
                                       seed=0)) for wd in (0.0, 0.5)]
    assert not torch.equal(runs[0].generator.head.weight, runs[1].generator.head.weight)
    assert isinstance(runs[1].opt_g, torch.optim.AdamW)


def test_dropout_trains_theta_and_psi_in_train_mode(tiny_teacher: DigitsTeacher) -> None:
    # The released code trains theta and psi in train mode with dropout 0.1; phi and the EMA stay in
    # eval mode. Dropout draws from the run's own stream, so the run stays deterministic.
    on = Distiller(tiny_teacher, relax_hard, RelaxConfig(), DistillConfig(steps=2, batch_size=8), seed=0)
    assert on.generator.training and on.aux.training and not on.ema.training
    assert not tiny_teacher.network.training
    assert {m.p for m in on.generator.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    off = Distiller(tiny_teacher, relax_hard, RelaxConfig(), DistillConfig(steps=2, batch_size=8, dropout=0.0), seed=0)
    assert not off.generator.training
    torch.manual_seed(0)
    a = run_distillation(on)
    torch.manual_seed(1)
    b = run_distillation(Distiller(tiny_teacher, relax_hard, RelaxConfig(), DistillConfig(steps=2, batch_size=8),
                                   seed=0))
    _assert_identical(_params(a.generator), _params(b.generator))
    assert not torch.equal(a.generator.head.weight, run_distillation(off).generator.head.weight)


def test_init_noise_schedules(tiny_teacher: DigitsTeacher) -> None:
    cfg = DistillConfig(sigma_init_schedule="warmup_linear", sigma_init_warmup=10)
    assert [sigma_at(cfg, s) for s in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0]
    cos = DistillConfig(sigma_init_schedule="warmup_cos", sigma_init_warmup=10)
    assert sigma_at(cos, 0) == 0.0 and sigma_at(cos, 5) == pytest.approx(0.5) and sigma_at(cos, 10) == 1.0
    exp = DistillConfig(sigma_init_schedule="warmup_exp", sigma_init_warmup=10)
    assert sigma_at(exp, 10) == pytest.approx(1 - math.exp(-1))
    assert sigma_at(DistillConfig(sigma_init=0.3), 123) == 0.3
    d = Distiller(tiny_teacher, relax_hard, RelaxConfig(), DistillConfig(r_init_range=(0.2, 0.4)), seed=0)
    draws = [d._init_noise()[0] for _ in range(20)]
    assert all(0.2 <= r <= 0.4 for r in draws) and len(set(draws)) == 20
    assert warmup_constant(0, 10) == 0.0 and warmup_constant(5, 10) == 0.5 and warmup_constant(50, 10) == 1.0


def test_refinement_logs_the_gradient_ratio(tiny_teacher: DigitsTeacher) -> None:
    # The refinement part of the logit gradient is the total minus the closed-form Di[M]O part.
    g = torch.randn(2, 3, 1, 4)
    mask = torch.tensor([[[True], [False], [True]], [[False], [False], [True]]])
    dimo = dimo_logit_gradient(g, mask)
    assert torch.equal(dimo[~mask], torch.zeros_like(dimo[~mask]))
    norms = gradient_norms(dimo + 2 * dimo, dimo)
    assert norms["grad_ratio"] == pytest.approx(2.0)
    # Refinement only (Di[M]O weight 0): no ratio, and the log stays JSON (records refuse inf).
    gan_only = gradient_norms(2 * dimo, torch.zeros_like(dimo))
    assert "grad_ratio" not in gan_only and gan_only["grad_dimo"] == 0.0
    json.dumps(gan_only, allow_nan=False)


def test_teacher_dropout_is_active_only_in_the_di_m_o_term(tiny_teacher: DigitsTeacher) -> None:
    # The released code never puts phi in eval mode, so its dropout acts in the loss; the teacher
    # object stays in eval mode with its own rates outside that block.
    net = tiny_teacher.network
    before = {m: m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)}
    with dropout_active(net, 0.1):
        assert net.training and {m.p for m in before} == {0.1}
    assert not net.training and {m: m.p for m in before} == before
    runs = [run_distillation(Distiller(tiny_teacher, relax_hard, RelaxConfig(),
                                       DistillConfig(steps=2, batch_size=8, teacher_dropout=p), seed=0))
            for p in (0.0, 0.1)]
    assert runs[0].history[0]["divergence"] != runs[1].history[0]["divergence"]


def test_psi_reads_its_own_token_table(tiny_teacher: DigitsTeacher) -> None:
    # As the released code's separate models: psi embeds the re-masked sample with its own table,
    # so with trainable embeddings its table learns and the Di[M]O term reads it; phi's does not move.
    config = DistillConfig(steps=2, batch_size=8, warmup_steps=0, freeze_embeddings=False)
    d = Distiller(tiny_teacher, relax_soft, RelaxConfig(), config, seed=0)
    phi_table = tiny_teacher.network.tok_emb.weight.detach().clone()
    d.train_step()
    assert not torch.equal(d.aux.tok_emb.weight, phi_table)
    assert torch.equal(tiny_teacher.network.tok_emb.weight, phi_table)
    moved = d.aux.tok_emb.weight.detach().clone()
    with torch.no_grad():
        d.aux.tok_emb.weight.add_(1.0)                        # psi's table alone changes psi's logits
    shifted = d.train_step()["divergence"]
    d2 = Distiller(tiny_teacher, relax_soft, RelaxConfig(), config, seed=0)
    d2.train_step()
    assert torch.equal(d2.aux.tok_emb.weight, moved)
    assert d2.train_step()["divergence"] != shifted
