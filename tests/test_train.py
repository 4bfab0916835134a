"""The distillation loop: exact resume, determinism, what each relaxation updates."""
from __future__ import annotations

from pathlib import Path

import torch

from softdimo.config import DistillConfig, RelaxConfig
from softdimo.relax import relax_gumbel, relax_hard, relax_soft
from softdimo.teachers.base import ImageNoise
from softdimo.teachers.digits import DigitsTeacher
from softdimo.train import Distiller, generate, run_distillation

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


def test_hard_and_gumbel_train_bit_identically_without_refinement(tiny_teacher: DigitsTeacher) -> None:
    # The Di[M]O gradient does not pass through the relaxation, and straight-through's forward value
    # is exactly hard's one-hot sample, so without a refinement gumbel trains hard's student to the
    # bit (what lets the harness share it: RelaxationEntry.forward_as); soft does not.
    config = DistillConfig(steps=3, batch_size=8)
    h = run_distillation(Distiller(tiny_teacher, relax_hard, RelaxConfig(), config, seed=3))
    g = run_distillation(Distiller(tiny_teacher, relax_gumbel, RelaxConfig(gumbel_tau=0.3), config, seed=3))
    s = run_distillation(Distiller(tiny_teacher, relax_soft, RelaxConfig(), config, seed=3))
    for attr in ("generator", "aux", "ema"):
        _assert_identical(_params(getattr(h, attr)), _params(getattr(g, attr)))
    assert h.history == g.history
    aux = {name: torch.tensor([e["aux_loss"] for e in d.history]) for name, d in (("hard", h), ("soft", s))}
    assert (aux["hard"] - aux["soft"]).abs().max() > 1e-4  # phi and psi see other inputs


def test_one_step_sampling_is_per_image(tiny_teacher: DigitsTeacher) -> None:
    net = tiny_teacher.network
    labels = [3, 1, 4, 1, 5, 9]
    full, _ = generate(net, tiny_teacher.encode_condition(labels), ImageNoise(5, range(6)), 0.5, 0.1)
    part, _ = generate(net, tiny_teacher.encode_condition(labels[2:4]), ImageNoise(5, range(2, 4)), 0.5, 0.1)
    assert torch.equal(full[2:4], part)
