"""A tiny MaskBit-architecture teacher (the parity fixture's configuration), trained on the mini
data for a few steps, runs through Di[M]O with the hard, Gumbel and soft relaxations end to end."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from softdimo.config import DistillConfig, RelaxConfig
from softdimo.data import digits as data
from softdimo.relax import RELAXATIONS
from softdimo.teachers.base import ImageNoise
from softdimo.teachers.class_conditioned import tokenize_images
from softdimo.teachers.maskbit import MaskBitConfig, MaskBitTeacher, build_maskbit_teacher
from softdimo.teachers.small_mdm import MDMTrainSettings, train_mdm
from softdimo.train import Distiller, generate, run_distillation
from tests.float_tolerance import rounding_close

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "maskbit"


@pytest.fixture(scope="module")
def digits_maskbit() -> MaskBitTeacher:
    torch.set_num_threads(1)
    teacher = build_maskbit_teacher(MaskBitConfig(bits=10, size="tiny"),
                                    FIXTURES / "lfqbert_tiny_state_dict.safetensors",
                                    FIXTURES / "tokenizer_tiny_state_dict.safetensors")
    images, labels = data.split_images("train", 17)
    side = teacher.layout.image_shape[-1]
    rgb = F.interpolate(images[:256], size=(side, side), mode="nearest").repeat(1, 3, 1, 1)
    tokens = tokenize_images(teacher, rgb)
    assert tokens.shape == (256, teacher.layout.positions, 2)

    def batches(step: int, g: torch.Generator) -> tuple[torch.Tensor, list]:
        idx = torch.randint(len(tokens), (16,), generator=g)
        return tokens[idx], labels[:256][idx].tolist()

    settings = MDMTrainSettings(steps=5, batch_size=16, lr=1e-3, warmup_steps=1, weight_decay=0.0,
                                label_dropout=0.1, grad_clip=1.0)
    teacher.network.requires_grad_(True)
    history = train_mdm(teacher.network, batches, teacher.encode_condition, settings, seed=0)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    teacher.network.eval().requires_grad_(False)
    return teacher


@pytest.mark.parametrize("relaxation", ["hard", "gumbel", "soft"])
def test_dimo_runs_on_a_tiny_maskbit_teacher(digits_maskbit: MaskBitTeacher, relaxation: str) -> None:
    teacher = digits_maskbit
    before = {k: v.clone() for k, v in teacher.network.state_dict().items()}
    fn, _ = RELAXATIONS[relaxation]
    d = run_distillation(Distiller(teacher, fn, RelaxConfig(), DistillConfig(steps=3, batch_size=4), seed=0))
    assert all(torch.isfinite(torch.tensor([h["divergence"], h["aux_loss"]])).all() for h in d.history)
    for k, v in teacher.network.state_dict().items():
        assert torch.equal(v, before[k]), k                        # the teacher stays frozen
    assert not torch.equal(d.generator.prediction_layer.weight, before["prediction_layer.weight"])
    cond = teacher.encode_condition([1, 2, 3])
    tokens, probs = generate(d.ema, cond, ImageNoise(0, range(3)), r_init=0.6, sigma_init=0.1)
    assert tokens.shape == (3, teacher.layout.positions, 2) and tokens.max() < teacher.layout.classes
    hard, soft = teacher.decode(tokens, cond), teacher.decode_soft(probs, cond)
    assert hard.shape == soft.shape == (3, 3, *teacher.layout.image_shape[1:])
    assert 0.0 <= float(hard.min()) and float(hard.max()) <= 1.0
    one_hot = F.one_hot(tokens, teacher.layout.classes).float()
    # the same decoder on one-hot probabilities: the tiny tokenizer's model (tests/softdimo/test_maskbit.py)
    torch.testing.assert_close(teacher.decode_soft(one_hot, cond), hard, **rounding_close(hard, 38, 576))
