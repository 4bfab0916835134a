"""HPS v2 / v2.1 and CLIP score, exercised with a small random open_clip model saved in the released
files' formats and loaded through the same path as the real ViT-H-14 / ViT-g-14 files."""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from harness.methods.metrics import clip_score, hps
from harness.methods.metrics.random_weights import TINY_OPEN_CLIP, register_open_clip_config, write_open_clip
from softdimo.teachers.base import Condition
from tests.float_tolerance import rounding_atol
from tests.scorer_parity import SCORE

PROMPTS = ["a cat on a sofa", "a red car at night", "mountains in fog", "a bowl of fruit", "an astronaut"]


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    return register_open_clip_config(tmp_path_factory.mktemp("clip_config"))


def _images(n: int, h: int = 40, w: int = 52, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# HPS computed independently: HPS's transform (ToTensor, bicubic resize of the float tensor's longer
# side, zero padding to a square, OpenAI normalisation) and normalised open_clip embeddings, x100.
def _direct_hps(ckpt, arch, images, prompts) -> np.ndarray:
    model = open_clip.create_model(arch, pretrained=None)
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    model.eval()
    size = TINY_OPEN_CLIP["vision_cfg"]["image_size"]
    pixels = []
    for im in images:
        t = TF.to_tensor(Image.fromarray(im))
        h, w = t.shape[-2:]
        new_h, new_w = round(h * size / max(h, w)), round(w * size / max(h, w))
        t = TF.resize(t, [new_h, new_w], interpolation=TF.InterpolationMode.BICUBIC)
        t = F.pad(t, ((size - new_w) // 2, size - new_w - (size - new_w) // 2,
                      (size - new_h) // 2, size - new_h - (size - new_h) // 2))
        pixels.append(TF.normalize(t, hps.OPENAI_MEAN, hps.OPENAI_STD))
    with torch.no_grad():
        f_img = F.normalize(model.encode_image(torch.stack(pixels)), dim=-1)
        f_txt = F.normalize(model.encode_text(open_clip.get_tokenizer(arch)(prompts)), dim=-1)
    return 100 * (f_img * f_txt).sum(-1).double().numpy()


def test_hps_pairs_equal_direct_computation(tiny_clip, asset_root, stand_in):
    ckpt = write_open_clip(asset_root / "hpsv2" / "HPS_v2.1_compressed.pt", tiny_clip, fmt="hps", seed=3)
    stand_in("hps-v2.1", ckpt)
    scorer = hps.load_hps("v2.1", arch=tiny_clip)                    # found through the asset manifest
    images = _images(len(PROMPTS))
    value = hps.score_pairs(images, PROMPTS, scorer, batch_size=2)
    direct = _direct_hps(ckpt, tiny_clip, images, PROMPTS)
    assert value.value == pytest.approx(direct.mean(), rel=1e-6, abs=1e-6)
    assert value.protocol["hps_version"] == "v2.1" and value.protocol["scale"] == 100.0
    assert value.protocol["name"] == "hpsv2-pairs-v2.1" and value.protocol["num_samples"] == 5
    cos = scorer.cosine(images, PROMPTS)
    assert np.all(np.abs(cos) <= 1.0) and np.allclose(100 * cos, direct, rtol=0, atol=rounding_atol(float(np.abs(direct).max()), *SCORE))


def test_hps_transform_is_not_open_clips_default(tiny_clip):
    # HPS resizes the float tensor (after ToTensor); open_clip resizes the PIL image first.
    _, _, preprocess = open_clip.create_model_and_transforms(tiny_clip, pretrained=None)
    image = Image.fromarray(_images(1, 45, 61)[0])
    assert not torch.allclose(hps.hps_transform(32)(image), preprocess(image), atol=1e-3)


def test_hps_benchmark_layout_and_versions(tiny_clip, tmp_path):
    ckpt20 = write_open_clip(tmp_path / "HPS_v2_compressed.pt", tiny_clip, fmt="hps", seed=1)
    ckpt21 = write_open_clip(tmp_path / "HPS_v2.1_compressed.pt", tiny_clip, fmt="hps", seed=2)
    prompts = {style: [f"{style} {p}" for p in PROMPTS[:3]] for style in hps.HPS_STYLES}
    images = {style: _images(3, seed=i) for i, style in enumerate(hps.HPS_STYLES)}
    root = hps.write_benchmark_layout(tmp_path / "bench", images, prompts)
    assert sorted(p.name for p in (root / "anime").iterdir()) == ["00000.jpg", "00001.jpg", "00002.jpg"]

    scorer = hps.load_hps("v2.0", arch=tiny_clip, checkpoint=ckpt20)
    values = hps.evaluate_benchmark(root, scorer, prompts)
    for style in hps.HPS_STYLES:
        decoded = [np.asarray(Image.open(root / style / f"{i:05d}.jpg").convert("RGB")) for i in range(3)]
        expected = _direct_hps(ckpt20, tiny_clip, decoded, prompts[style]).mean()
        assert values[f"hps_{style}"].value == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert values["hps"].value == pytest.approx(np.mean([values[f"hps_{s}"].value for s in hps.HPS_STYLES]))
    p = values["hps"].protocol
    assert p["name"] == "hpsv2-benchmark-v2.0" and p["hps_version"] == "v2.0" and p["prompts_per_style"] == 3
    assert p["image_format"] == "jpg-q75"

    v21 = hps.evaluate_benchmark(root, hps.load_hps("v2.1", arch=tiny_clip, checkpoint=ckpt21), prompts)
    assert v21["hps"].protocol["name"] == "hpsv2-benchmark-v2.1"
    assert v21["hps"].value != values["hps"].value

    (root / "photo" / "00001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 3 images missing"):
        hps.evaluate_benchmark(root, scorer, prompts)


def test_hps_refuses_wrong_checkpoints(tiny_clip, tmp_path):
    with pytest.raises(ValueError, match="allowed v2.0, v2.1"):
        hps.load_hps("v2", arch=tiny_clip, checkpoint=tmp_path / "x.pt")
    other = register_open_clip_config(tmp_path / "cfg", "softdimo-tiny-clip-wide",
                                      {**TINY_OPEN_CLIP, "embed_dim": 48})
    wrong = write_open_clip(tmp_path / "wrong.pt", other, fmt="hps")
    with pytest.raises(Exception, match="size mismatch|not an HPS checkpoint"):
        hps.load_hps("v2.1", arch=tiny_clip, checkpoint=wrong)
    plain = write_open_clip(tmp_path / "plain.pt", tiny_clip, fmt="clip")
    with pytest.raises(KeyError, match="no 'state_dict'"):
        hps.load_hps("v2.1", arch=tiny_clip, checkpoint=plain)


def test_clip_score_equals_direct_computation(tiny_clip, tmp_path):
    weights = write_open_clip(tmp_path / "clip.pt", tiny_clip, fmt="clip", seed=5)
    protocol = clip_score.CLIPScoreProtocol("test-clip", tiny_clip, None, "A photo depicts ", 24, None)
    images = _images(len(PROMPTS), 30, 44)
    value = clip_score.clip_score(images, PROMPTS, protocol, weights=weights, batch_size=2)

    model, _, preprocess = open_clip.create_model_and_transforms(tiny_clip, pretrained=str(weights))
    model.eval()
    pixels = []
    for im in images:
        pil = Image.fromarray(im).crop((7, 0, 37, 30)).resize((24, 24), Image.LANCZOS)   # centre square, Lanczos
        pixels.append(preprocess(pil))
    tokens = open_clip.get_tokenizer(tiny_clip)(["A photo depicts " + p for p in PROMPTS])
    with torch.no_grad():
        cos = F.cosine_similarity(model.encode_image(torch.stack(pixels)), model.encode_text(tokens), dim=1)
    assert value.value == pytest.approx(cos.double().mean().item(), rel=1e-6, abs=1e-7)
    assert value.protocol["scale"] == 1.0 and value.protocol["prefix"] == "A photo depicts "
    with pytest.raises(ValueError, match="needs exactly 30000"):
        clip_score.clip_score(images, PROMPTS, "coco30k-clipscore-gigagan", weights=weights)


# GigaGAN splices the prefix tokens after the start token of the tokenised caption and truncates to
# 77 with an end token; tokenising the prefixed caption with truncation gives the same ids.
@pytest.mark.parametrize("caption", ["a cat", " ".join(["word"] * 90)])
def test_prefix_tokens_equal_gigagan_splice(caption):
    tok = open_clip.get_tokenizer("ViT-B-32")
    tokens = tok([caption])
    prefix = tok(["A photo depicts "])[:, 1:4]
    spliced = torch.cat([tokens[:, :1], prefix, tokens[:, 1:]], dim=1)[:, :77]
    last = spliced[:, 76:77].clone()
    last[last > 0] = 49407
    spliced = torch.cat([spliced[:, :76], last], dim=1)
    assert torch.equal(spliced, tok(["A photo depicts " + caption]))


def _floats(images: list[np.ndarray]) -> torch.Tensor:
    # HWC uint8 -> [B, 3, H, W] in [0, 1], what ToTensor gives and decode_soft returns.
    return torch.stack([TF.to_tensor(Image.fromarray(im)) for im in images])


def test_hps_reward_equals_the_metric_and_is_differentiable(tiny_clip, tmp_path):
    ckpt = write_open_clip(tmp_path / "HPS_v2.1_compressed.pt", tiny_clip, fmt="hps", seed=4)
    scorer = hps.load_hps("v2.1", arch=tiny_clip, checkpoint=ckpt)
    images = _images(len(PROMPTS), 40, 52)
    pixels = _floats(images).requires_grad_(True)
    reward = hps.HPSReward(scorer)
    values = reward(pixels, Condition("text", {"ids": torch.zeros(len(PROMPTS))}, PROMPTS))
    metric = 100 * scorer.cosine(images, PROMPTS)
    assert np.allclose(values.detach().double().numpy(), metric, rtol=0, atol=rounding_atol(float(np.abs(metric).max()), *SCORE))
    values.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in scorer.model.parameters())     # the reward model is frozen


def test_clip_score_reward_equals_the_metric_at_model_size(tiny_clip, tmp_path):
    weights = write_open_clip(tmp_path / "clip.pt", tiny_clip, fmt="clip", seed=6)
    clip = clip_score.load_clip(tiny_clip, weights)
    size = clip.model.visual.preprocess_cfg["size"][0]
    images = _images(len(PROMPTS), size, size)             # no resize in either path
    protocol = clip_score.CLIPScoreProtocol("test-clip", tiny_clip, None, "A photo depicts ", None, None)
    metric = clip_score.clip_score(images, PROMPTS, protocol, weights=weights)
    pixels = _floats(images).requires_grad_(True)
    reward = clip_score.CLIPScoreReward(clip, "A photo depicts ")
    values = reward.score(pixels, PROMPTS)
    assert values.mean().item() == pytest.approx(100 * metric.value, abs=1e-4)
    values.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs the captions"):
        reward(pixels, Condition("text", {"ids": torch.zeros(len(PROMPTS))}))
