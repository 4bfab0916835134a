"""Upstream parity of the scorers: HPS v2.0 / v2.1 (tgxs002/HPSv2 `score`), CLIP score (DiMO's
`gigagan_eval_clip.compute_clip_score`), ImageReward (THUDM/ImageReward `score`, `inference_rank`,
`score_gard`) and PickScore (yuvalkirstain/PickScore's README code). Each fixture holds the upstream
code's scores of fixed images and prompts under a tiny seeded model of the real architecture
family; the harness loads the same weights through its own loaders (in the released files'
formats) and must reproduce them to 1e-5 in fp32, preprocessing and tokenisation included."""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.methods.metrics import clip_score, hps, image_reward, pickscore
from tests.float_tolerance import rounding_close
from tests.scorer_parity import (GRADIENT, PARITY, PIXELS, SCORE, float_images, load_state, parity_inputs,
                                 write_clip_tokenizer_json)

HPS_ARCH, CLIP_ARCH = "hps-tiny-vit-h-14", "clipscore-tiny-vit-g-14"


@pytest.fixture(scope="module")
def inputs():
    return parity_inputs()


@pytest.fixture(scope="module", autouse=True)
def _tiny_open_clip_configs() -> None:
    open_clip.add_model_config(PARITY / "hps" / f"{HPS_ARCH}.json")
    open_clip.add_model_config(PARITY / "clip_score" / f"{CLIP_ARCH}.json")


def _close(ours, stored, shape: tuple[int, int] = SCORE) -> None:
    torch.testing.assert_close(torch.as_tensor(np.asarray(ours), dtype=torch.float64), stored.double(),
                               **rounding_close(stored.double(), *shape))


def _pixel_checks(pixels: torch.Tensor, io: dict[str, torch.Tensor]) -> None:
    # the preprocessed input the model sees: per-image channel sums and the top-left 8x8 corner
    _close(pixels.double().sum(dim=(2, 3)), io["pixels_sum"], PIXELS)
    _close(pixels[:, :, :8, :8], io["pixels_corner"], PIXELS)


#----------------------------------------------------------------------------
# HPS v2.0 / v2.1


@pytest.fixture(scope="module")
def hps_scorers(tmp_path_factory) -> dict[str, hps.HPSScorer]:
    out = {}
    for version in hps.HPS_VERSIONS:
        path = tmp_path_factory.mktemp("hps") / f"HPS_{version}_tiny.pt"     # the released {"state_dict"} format
        torch.save({"state_dict": load_state(PARITY / "hps" / f"hps_{version}_tiny_state_dict.safetensors")}, path)
        out[version] = hps.load_hps(version, arch=HPS_ARCH, checkpoint=path)
    return out


@pytest.mark.parametrize("version", ["v2.0", "v2.1"])
def test_hps_matches_upstream_score(version, hps_scorers, inputs):
    paths, images, prompts = inputs
    io = load_file(str(PARITY / "hps" / "hps_tiny_io.safetensors"))
    stored = io[f"cosine_{version.replace('.', '')}"]
    scorer = hps_scorers[version]
    _close(scorer.cosine(images, prompts, batch_size=4), stored)           # PIL images in
    _close(scorer.cosine(paths, prompts), stored)                          # image files in
    assert torch.equal(scorer.tokenizer(prompts), io["tokens"])
    _pixel_checks(torch.stack([scorer.transform(im) for im in images]), io)
    # the reward transforms the float tensor exactly where HPS does, so it meets upstream too
    reward = hps.HPSReward(scorer)
    values = torch.stack([reward.score(x[None], [p])[0] for x, p in zip(float_images(images), prompts)])
    _close(values.detach() / hps.HPS_SCALE, stored)


def test_hps_transform_pads_instead_of_cropping(hps_scorers, inputs):
    # A 61x46 image: the longer side goes to 224, 56 rows of zeros (black) are padded, 28 above.
    _, images, _ = inputs
    x = hps_scorers["v2.1"].transform(images[1])
    black = -torch.tensor(hps.OPENAI_MEAN) / torch.tensor(hps.OPENAI_STD)
    rows = round(46 * 224 / 61)
    top = (224 - rows) // 2
    assert torch.allclose(x[:, :top], black[:, None, None].expand(3, top, 224))
    assert torch.allclose(x[:, top + rows:], black[:, None, None].expand(3, 224 - top - rows, 224))
    assert not torch.allclose(x[:, top], black[:, None].expand(3, 224))


#----------------------------------------------------------------------------
# CLIP score (GigaGAN / Di[M]O)


def test_clip_score_matches_dimo_gigagan_eval(tmp_path, inputs):
    _, images, prompts = inputs
    io = load_file(str(PARITY / "clip_score" / "clip_tiny_io.safetensors"))
    weights = tmp_path / "open_clip_pytorch_model.bin"                    # open_clip's pretrained file format
    torch.save(load_state(PARITY / "clip_score" / "clip_tiny_state_dict.safetensors"), weights)
    protocol = clip_score.CLIP_PROTOCOLS.get("clipscore-gigagan")
    model = clip_score.load_clip(CLIP_ARCH, weights)
    _close(clip_score.clip_cosines(model, [np.asarray(im) for im in images], prompts, protocol.prefix,
                                   protocol.resize, batch_size=4), io["cosine"])
    tiny = clip_score.CLIPScoreProtocol("test-gigagan-tiny", CLIP_ARCH, None, protocol.prefix, protocol.resize)
    value = clip_score.clip_score(images, prompts, tiny, weights=weights)
    _close(value.value, io["mean"])
    assert torch.equal(model.tokenizer([protocol.prefix + p for p in prompts]), io["tokens"].long())
    _pixel_checks(torch.stack([model.preprocess(clip_score._resize(im, protocol.resize)) for im in images]), io)


#----------------------------------------------------------------------------
# ImageReward


@pytest.fixture(scope="module")
def ir_scorer() -> image_reward.ImageRewardScorer:
    d = PARITY / "image_reward"
    vision = image_reward.BLIPVisionConfig(**json.loads((d / "tiny_config.json").read_text())["vision"])
    return image_reward.load_image_reward(checkpoint=d / "image_reward_tiny_state_dict.safetensors",
                                          med_config=d / "med_config_tiny.json", vocab=d / "vocab_tiny.txt",
                                          vision=vision)


def test_image_reward_matches_upstream_score(ir_scorer, inputs):
    paths, images, prompts = inputs
    io = load_file(str(PARITY / "image_reward" / "image_reward_tiny_io.safetensors"))
    ids, mask = ir_scorer.tokens(prompts)
    assert torch.equal(ids, io["input_ids"]) and torch.equal(mask, io["attention_mask"])
    _pixel_checks(torch.stack([image_reward.image_reward_transform()(im) for im in images]), io)
    _close(ir_scorer.score(images, prompts, batch_size=4), io["score"])                 # ImageReward.score
    _close(ir_scorer.score(paths, prompts), io["score"])
    _close(ir_scorer.score(images, [prompts[0]] * len(images)), io["score_prompt0_all_images"])  # inference_rank


def test_image_reward_tensor_path_matches_upstream_score_gard(ir_scorer, inputs):
    _, images, prompts = inputs
    io = load_file(str(PARITY / "image_reward" / "image_reward_tiny_io.safetensors"))
    reward = image_reward.ImageRewardReward(ir_scorer)
    floats = [x.requires_grad_(True) for x in float_images(images)]
    values = torch.stack([reward.score(x[None], [p])[0] for x, p in zip(floats, prompts)])
    _close(values.detach(), io["score_gard"])
    values.sum().backward()
    _close(floats[0].grad.double().sum(dim=(1, 2)), io["grad_sum_0"], GRADIENT)   # gradients agree with upstream's too


def test_image_reward_reads_the_released_pickle_format(ir_scorer, inputs, tmp_path):
    # ImageReward.pt is a torch.save'd state dict with BLIP's unused projections and position ids.
    state = load_state(PARITY / "image_reward" / "image_reward_tiny_state_dict.safetensors")
    assert set(image_reward.UNUSED_KEYS) <= set(state)
    torch.save(state, tmp_path / "ImageReward.pt")
    d = PARITY / "image_reward"
    scorer = image_reward.load_image_reward(checkpoint=tmp_path / "ImageReward.pt",
                                            med_config=d / "med_config_tiny.json", vocab=d / "vocab_tiny.txt",
                                            vision=ir_scorer.net.blip.visual_encoder.cfg)
    _, images, prompts = inputs
    assert np.array_equal(scorer.score(images[:2], prompts[:2]), ir_scorer.score(images[:2], prompts[:2]))


#----------------------------------------------------------------------------
# PickScore


@pytest.fixture(scope="module")
def pick_scorer(tmp_path_factory) -> pickscore.PickScoreScorer:
    root = tmp_path_factory.mktemp("pickscore")
    state = load_state(PARITY / "pickscore" / "pickscore_tiny_state_dict.safetensors")
    save_file(state, str(root / "model.safetensors"))
    return pickscore.load_pickscore(weights=root / "model.safetensors", config=PARITY / "pickscore" / "config.json",
                                    tokenizer=write_clip_tokenizer_json(root / "tokenizer.json"))


def test_pickscore_matches_upstream_readme_code(pick_scorer, inputs):
    paths, images, prompts = inputs
    io = load_file(str(PARITY / "pickscore" / "pickscore_tiny_io.safetensors"))
    ids = torch.tensor([e.ids for e in pick_scorer.tokenizer.encode_batch(prompts)])
    assert torch.equal(ids, io["input_ids"])
    _pixel_checks(torch.stack([pickscore.pickscore_transform(im) for im in images]), io)
    _close(pick_scorer.score(images, prompts, batch_size=4), io["score"])
    _close(pick_scorer.score(paths, prompts), io["score"])
    scores = pick_scorer.score(images, [prompts[0]] * len(images))
    _close(scores, io["score_prompt0_all_images"])
    _close(torch.softmax(torch.from_numpy(scores), 0), io["probs_prompt0_all_images"])
