"""The digits teacher: cache, embeddings, decoder, CFG and the MaskGIT sampler."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from softdimo.teachers.base import Condition, ImageNoise, NetworkOutput, guided_logits
from softdimo.teachers.digits import DigitsTeacher, build_digits_teacher
from softdimo.teachers.small_mdm import masked_after_step
from tests.conftest import TINY_TEACHER
from tests.float_tolerance import rounding_atol


def test_second_build_is_a_cache_hit(tiny_teacher: DigitsTeacher, teacher_cache: Path) -> None:
    again = build_digits_teacher(TINY_TEACHER, teacher_cache)
    assert again.info["cache_hit"] and again.info["cache_key"] == tiny_teacher.info["cache_key"]
    log = Path(again.info["cache_dir"]) / "train_log.json"
    assert log.is_file() and len(log.read_text()) > 10
    for key, value in tiny_teacher.network.state_dict().items():
        assert torch.equal(value, again.network.state_dict()[key]), key


def test_soft_paths_are_exact_on_one_hot(tiny_teacher: DigitsTeacher) -> None:
    net, layout = tiny_teacher.network, tiny_teacher.layout
    tokens = torch.randint(layout.classes, (3, layout.positions, 1))
    one_hot = torch.nn.functional.one_hot(tokens, layout.classes).float()
    assert torch.equal(net.embed_soft(one_hot), net.embed(tokens))
    mask = torch.rand(3, layout.positions, 1) < 0.5
    masked = torch.where(mask, torch.full_like(tokens, layout.mask_id), tokens)
    assert torch.equal(net.embed_soft(one_hot, mask), net.embed(masked))
    assert torch.equal(tiny_teacher.decode_soft(one_hot), tiny_teacher.decode(tokens))
    probs = torch.softmax(torch.randn(3, layout.positions, 1, layout.classes), -1)
    expected = probs[..., 0, :] @ net.tok_emb.weight[: layout.classes]
    torch.testing.assert_close(net.embed_soft(probs), expected)


def test_cfg_endpoints(tiny_teacher: DigitsTeacher) -> None:
    net = tiny_teacher.network
    e = net.embed(torch.full((4, 64, 1), tiny_teacher.layout.mask_id))
    cond = tiny_teacher.encode_condition([0, 1, 2, 3])
    z_c = net(e, cond).logits
    z_u = net(e, cond, drop=torch.ones(4, dtype=torch.bool)).logits
    torch.testing.assert_close(guided_logits(net, e, cond, 1.0).logits, z_c)
    torch.testing.assert_close(guided_logits(net, e, cond, 0.0).logits, z_u)
    # w z_c + (1 - w) z_u by another route: (2w - 1) times the tiny network's tolerance (1 block of 9
    # reductions, embedding and head: 12, MLP over 64 units) at the logits' magnitude
    atol = 5 * rounding_atol(torch.maximum(z_c.abs(), z_u.abs()), 12, 64)
    torch.testing.assert_close(guided_logits(net, e, cond, 3.0).logits, z_u + 3.0 * (z_c - z_u), atol=atol, rtol=0)


class _CountingNetwork(torch.nn.Module):
    # Wraps a network and records how many slots are masked in each conditional input.
    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net, self.layout, self.counts = net, net.layout, []

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        self.counts.append((tokens == self.layout.mask_id).sum(dim=(1, 2)))
        return self.net.embed(tokens)

    def forward(self, e: torch.Tensor, cond: Condition, drop: torch.Tensor | None = None,
                hidden_layers: tuple = ()) -> NetworkOutput:
        return self.net(e, cond, drop, hidden_layers)


def test_sampler_unmasks_on_the_cosine_schedule(tiny_teacher: DigitsTeacher) -> None:
    from softdimo.teachers.small_mdm import maskgit_sample
    steps, slots = 6, tiny_teacher.layout.slots
    counting = _CountingNetwork(tiny_teacher.network)
    out = maskgit_sample(counting, tiny_teacher.encode_condition([1, 2]), steps, 1.0, ImageNoise(0, range(2)),
                         choice_temperature=2.0)
    expected = [slots] + [math.floor(slots * math.cos(math.pi / 2 * (k + 1) / steps)) for k in range(steps - 1)]
    assert [c.tolist() for c in counting.counts] == [[n, n] for n in expected]
    assert masked_after_step(steps - 1, steps, slots) == 0
    assert (out != tiny_teacher.layout.mask_id).all()


def test_sampling_is_per_image_and_seeded(tiny_teacher: DigitsTeacher) -> None:
    labels = [5, 6, 7, 8]
    full = tiny_teacher.sample(tiny_teacher.encode_condition(labels), 4, 2.0, ImageNoise(9, range(4)),
                               choice_temperature=4.5)
    tail = tiny_teacher.sample(tiny_teacher.encode_condition(labels[2:]), 4, 2.0, ImageNoise(9, range(2, 4)),
                               choice_temperature=4.5)
    other = tiny_teacher.sample(tiny_teacher.encode_condition(labels), 4, 2.0, ImageNoise(10, range(4)),
                                choice_temperature=4.5)
    assert torch.equal(full[2:], tail)
    assert not torch.equal(full, other)


def test_single_step_sampling_draws_each_slot_independently(tiny_teacher: DigitsTeacher) -> None:
    # K = 1 is one independent draw per slot from the fully masked conditional.
    cond = tiny_teacher.encode_condition([3] * 4000)
    tokens = tiny_teacher.sample(cond, 1, 1.0, ImageNoise(1, range(4000)))
    net = tiny_teacher.network
    e = net.embed(torch.full((1, 64, 1), tiny_teacher.layout.mask_id))
    p = net(e, tiny_teacher.encode_condition([3])).logits.softmax(-1)[0, :, 0]
    freq = torch.nn.functional.one_hot(tokens[..., 0], tiny_teacher.layout.classes).float().mean(0)
    assert (freq - p).abs().max() < 0.035  # ~4.5 standard errors at n = 4000
