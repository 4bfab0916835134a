"""The glyphs world: the procedural splits, the VQ tokenizer (codebook upkeep, decode / decode_soft),
the caches of tokenizer and MDM, and the teacher protocol."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from softdimo.data import glyphs as data
from softdimo.teachers.base import ImageNoise
from softdimo.teachers.glyphs import GlyphsTeacher, build_glyphs_teacher, build_glyphs_world
from softdimo.teachers.small_vq import DEAD_CODE_USE, SmallVQ, SmallVQArch, _ema_update
from tests.conftest import TINY_GLYPHS
from tests.float_tolerance import rounding_atol


def test_split_images_do_not_depend_on_how_many_are_rendered_at_once() -> None:
    whole, labels = data.render_range(7, 0, 12)
    tail, tail_labels = data.render_range(7, 5, 7)
    assert torch.equal(whole[5:], tail) and torch.equal(labels[5:], tail_labels)
    again, _ = data.render_range(7, 0, 12)
    assert torch.equal(whole, again)


def test_every_real_image_is_one_glyph_in_one_palette_colour() -> None:
    params = data.draw_parameters(3, 0, 200)
    images = data.render(params)
    assert images.shape == (200, 3, data.SIDE, data.SIDE) and 0.0 <= images.min() and images.max() <= 1.0
    ink = images.amax(1) > 0
    assert (images.amax(1) > 0.5).flatten(1).sum(1).min() > 20   # every glyph is drawn
    # every ink pixel lies within the glyph's reach of its centre: the farthest stroke point of
    # the unit frame, scaled by half-size and aspect, plus half the stroke width and the antialiasing
    ends, _ = data.class_segments()
    reach = ends.norm(dim=-1).amax() * params["half_size"] * params["log_aspect"].abs().exp() + params["width"] / 2 + 0.5
    coords = torch.arange(data.SIDE) + 0.5
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    dist = ((xs[None] - params["centre"][:, 0, None, None]) ** 2 + (ys[None] - params["centre"][:, 1, None, None]) ** 2).sqrt()
    assert (dist[ink] <= reach[:, None, None].expand_as(dist)[ink] + 1e-4).all()
    # each pixel is coverage x the image's colour, so its direction is exactly the palette colour's
    # (compared here through a quotient and two products: three float32 roundings at values <= 1)
    colour = data.PALETTE[params["colour"]]
    inked = images.flatten(2).amax(1) > 0
    scale = images.flatten(2).amax(1) / colour.amax(1)[:, None]
    expected = scale[:, None, :] * colour[:, :, None]
    torch.testing.assert_close(images.flatten(2)[inked[:, None, :].expand(-1, 3, -1)],
                               expected[inked[:, None, :].expand(-1, 3, -1)], rtol=0, atol=rounding_atol(1.0, 3, 1))
    assert set(params["label"].tolist()) == set(range(data.NUM_CLASSES))


def test_pose_targets_span_their_ranges() -> None:
    pose = data.pose_targets(data.draw_parameters(0, 0, 500))
    assert pose.shape == (500, 6) and pose.min() >= -1.0 and pose.max() <= 1.0
    assert (pose.amin(0) < -0.9).all() and (pose.amax(0) > 0.9).all()


def test_dead_codes_restart_at_the_worst_represented_outputs() -> None:
    vq = SmallVQ(SmallVQArch(channels=4, latent_dim=2, codebook_size=3))
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [50.0, 50.0]]))
    vq.ema_sum.copy_(vq.codebook)
    vq.ema_count.copy_(torch.tensor([1.0, 1.0, DEAD_CODE_USE / 2]))
    flat = torch.tensor([[0.0, 0.1], [1.0, 0.1], [0.2, 5.0], [0.0, 0.0]])
    codes = vq.nearest_codes(flat.T[None, :, :, None])[0, :, 0]
    assert codes.tolist() == [0, 1, 0, 0]
    _ema_update(vq, flat, codes, decay=0.5, g=torch.Generator().manual_seed(0))
    assert torch.equal(vq.codebook[2], flat[2]) and vq.ema_count[2] == 1.0   # the worst-quantised output
    torch.testing.assert_close(vq.codebook[1], torch.tensor([1.0, 0.05]))    # EMA of its one output


def test_second_build_is_a_cache_hit_and_teachers_share_one_tokenizer(tiny_glyphs: GlyphsTeacher,
                                                                      teacher_cache: Path) -> None:
    again = build_glyphs_teacher(TINY_GLYPHS, teacher_cache)
    assert again.info["cache_hit"] and again.info["tokenizer"]["cache_hit"]
    for key, value in tiny_glyphs.network.state_dict().items():
        assert torch.equal(value, again.network.state_dict()[key]), key
    other_mdm = build_glyphs_world(TINY_GLYPHS.__class__(**{**TINY_GLYPHS.__dict__, "seed": 5}), teacher_cache)
    assert other_mdm.info["tokenizer"]["cache_dir"] == tiny_glyphs.info["tokenizer"]["cache_dir"]
    assert other_mdm.real_tokens_path == tiny_glyphs.real_tokens_path
    summary = tiny_glyphs.info["tokenizer"]
    assert 0 < summary["test_recon_mse"] < 1 and 1 <= summary["test_codes_used"] <= TINY_GLYPHS.codebook_size


def test_real_tokens_are_the_training_split_encoded(tiny_glyphs: GlyphsTeacher) -> None:
    tokens, labels = tiny_glyphs.real_tokens()
    images, split_labels = data.split_images("train")
    assert tokens.shape == (data.SPLIT_SIZES["train"], 64, 1) and labels == split_labels.tolist()
    assert torch.equal(tokens[:50], tiny_glyphs.encode(images[:50]))
    assert tokens.max() < tiny_glyphs.layout.classes and tiny_glyphs.layout.mask_id == TINY_GLYPHS.codebook_size


def test_soft_decoding_is_exact_on_one_hot_and_differentiable(tiny_glyphs: GlyphsTeacher) -> None:
    layout = tiny_glyphs.layout
    tokens = torch.randint(layout.classes, (3, layout.positions, 1))
    one_hot = F.one_hot(tokens, layout.classes).float()
    images = tiny_glyphs.decode(tokens)
    assert images.shape == (3, *layout.image_shape) and 0.0 <= images.min() and images.max() <= 1.0
    assert torch.equal(tiny_glyphs.decode_soft(one_hot), images)
    logits = torch.randn(3, layout.positions, 1, layout.classes, requires_grad=True)
    tiny_glyphs.decode_soft(torch.softmax(logits, -1)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    masked = torch.full_like(tokens, layout.mask_id)
    assert torch.equal(tiny_glyphs.decode(masked), tiny_glyphs.decode(torch.full_like(tokens, layout.classes - 1)))


def test_teacher_protocol(tiny_glyphs: GlyphsTeacher) -> None:
    assert tiny_glyphs.eval_conditions(12) == [i % 10 for i in range(12)]
    cond = tiny_glyphs.encode_condition([0, 3, 9])
    tokens = tiny_glyphs.sample(cond, steps=4, cfg=1.0, noise=ImageNoise(0, range(3)))
    assert tokens.shape == (3, 64, 1) and tokens.max() < tiny_glyphs.layout.classes
    again = tiny_glyphs.sample(cond, steps=4, cfg=1.0, noise=ImageNoise(0, range(3)))
    assert torch.equal(tokens, again)
