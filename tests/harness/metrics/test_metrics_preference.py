"""ImageReward and PickScore as metrics and differentiable rewards: the reward equals the metric on
images at the model's input size and passes gradients; missing files are named with their source;
the registered entries load from the asset manifest; the paper-scale reward grids name them. The
tiny parity-fixture models stand in for the released files (tests/fixtures/parity/)."""
from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from harness import run
from harness.contracts import registry
from harness.contracts.entries import EvalInput, RunContext
from harness.grid import load_grid
from harness.methods.metrics import image_reward, pickscore
from harness.store import assets
from softdimo.teachers.base import Condition
from softdimo.teachers.weights import CheckpointError
from tests.float_tolerance import rounding_atol, rounding_close
from tests.scorer_parity import PARITY, SCORE, float_images, load_state, parity_inputs, write_clip_tokenizer_json

ABLATIONS = Path(__file__).resolve().parents[3] / "ablations"
IR = PARITY / "image_reward"
TINY_VISION = image_reward.BLIPVisionConfig(**json.loads((IR / "tiny_config.json").read_text())["vision"])


# The tiny models placed in an empty asset root under the released files' names.
@pytest.fixture()
def preference_assets(isolated_assets: Path, monkeypatch: pytest.MonkeyPatch, stand_in) -> Path:
    asset_root = isolated_assets
    ir, ps = asset_root / "image_reward", asset_root / "pickscore"
    (ir / "bert-base-uncased").mkdir(parents=True)
    torch.save(load_state(IR / "image_reward_tiny_state_dict.safetensors"), ir / "ImageReward.pt")
    shutil.copy(IR / "med_config_tiny.json", ir / "med_config.json")
    shutil.copy(IR / "vocab_tiny.txt", ir / "bert-base-uncased" / "vocab.txt")
    (ps / "PickScore_v1").mkdir(parents=True)
    save_file(load_state(PARITY / "pickscore" / "pickscore_tiny_state_dict.safetensors"),
              str(ps / "PickScore_v1" / "model.safetensors"))
    shutil.copy(PARITY / "pickscore" / "config.json", ps / "PickScore_v1" / "config.json")
    write_clip_tokenizer_json(ps / "CLIP-ViT-H-14-laion2B-s32B-b79K" / "tokenizer.json")
    stand_in("image-reward-v1.0", ir / "ImageReward.pt")                  # the released files' hashes are published
    stand_in("pickscore-v1", ps / "PickScore_v1" / "model.safetensors")
    monkeypatch.setattr(image_reward, "load_image_reward",            # the tiny ViT instead of ViT-L
                        functools.partial(image_reward.load_image_reward, vision=TINY_VISION))
    return asset_root


def _square_inputs(n: int = 3) -> tuple[list[np.ndarray], list[str]]:
    _, images, prompts = parity_inputs()
    rng = np.random.default_rng(0)
    arrays = [np.array(images[0])] + [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(n - 1)]
    return arrays, prompts[:n]


def _floats(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255.0 for a in arrays])


@pytest.mark.parametrize("name", ["image_reward", "pickscore"])
def test_reward_equals_metric_at_model_size_and_is_differentiable(name, preference_assets):
    scorer = (image_reward.load_image_reward() if name == "image_reward" else pickscore.load_pickscore())
    reward = registry.rewards.get(name).build(None, RunContext(preference_assets, preference_assets))
    arrays, prompts = _square_inputs()
    pixels = _floats(arrays).requires_grad_(True)
    values = reward(pixels, Condition("text", {"ids": torch.zeros(len(prompts))}, prompts))
    metric = torch.from_numpy(scorer.score(arrays, prompts))
    torch.testing.assert_close(values.detach().double(), metric, **rounding_close(metric, *SCORE))
    values.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    model = scorer.net if name == "image_reward" else scorer.model
    assert all(not p.requires_grad for p in model.parameters())           # the reward model is frozen
    with pytest.raises(ValueError, match="needs the prompts"):
        reward(pixels, Condition("text", {"ids": torch.zeros(len(prompts))}))


@pytest.mark.parametrize("name", ["image_reward", "pickscore"])
def test_registered_metric_reads_the_assets(name, preference_assets, tmp_path):
    arrays, prompts = _square_inputs()
    images = _floats(arrays)
    inp = EvalInput(None, None, images, prompts, None)
    values = registry.metrics.get(name).compute(inp, RunContext(tmp_path, tmp_path))
    scorer = image_reward.load_image_reward() if name == "image_reward" else pickscore.load_pickscore()
    value = values[name]
    assert value.value == pytest.approx(float(scorer.score(arrays, prompts).mean()), abs=1e-6)
    assert value.higher_is_better and value.protocol["num_samples"] == 3
    assert value.protocol["name"] == {"image_reward": "imagereward-pairs-v1.0", "pickscore": "pickscore-pairs-v1"}[name]
    assert len(value.protocol[{"image_reward": "checkpoint_sha256", "pickscore": "weights_sha256"}[name]]) == 64


@pytest.mark.parametrize("name, asset, filename, source", [
    ("image_reward", "image-reward-v1.0", "image_reward/ImageReward.pt", "huggingface.co/THUDM/ImageReward"),
    ("pickscore", "pickscore-v1", "pickscore/PickScore_v1/model.safetensors",
     "huggingface.co/yuvalkirstain/PickScore_v1"),
])
def test_missing_files_are_named_with_their_source(name, asset, filename, source, isolated_assets):
    with pytest.raises(assets.AssetError, match=f"'{asset}' is missing.*{source}.*{filename}"):
        image_reward.load_image_reward() if name == "image_reward" else pickscore.load_pickscore()
    for entry in (registry.metrics.get(name), registry.rewards.get(name)):   # checked before a grid launches
        problems = assets.check_before_launch(entry.assets)
        assert len(problems) == 3 and any(asset in p and source in p for p in problems)


def test_paper_reward_grids_name_image_reward_and_pickscore(isolated_assets):
    for name, key, rewards in (("reward_finetune", "reward.models", {"clip_score", "image_reward"}),
                               ("tteo_best_of_n", "sample.select_reward", {"image_reward", "pickscore"})):
        grid = load_grid(ABLATIONS / f"{name}.yaml", scale="paper")
        assert all(rewards <= set(dict(s.params)[key]) for s in grid.specs if key in dict(s.params))
        problems = "\n".join(run.missing_assets(grid, grid.specs))
        assert "'image-reward-v1.0' is missing" in problems and "'bert-base-uncased-vocab' is missing" in problems
        if name == "tteo_best_of_n":
            assert "'pickscore-v1' is missing" in problems


def test_image_reward_refuses_wrong_files(tmp_path):
    cfg = json.loads((IR / "med_config_tiny.json").read_text())
    (tmp_path / "relu.json").write_text(json.dumps({**cfg, "hidden_act": "relu"}))
    with pytest.raises(ValueError, match="relu.json: hidden_act = 'relu'"):
        image_reward.MedBertConfig.from_json(tmp_path / "relu.json")
    (tmp_path / "big_vocab.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] + 1}))
    with pytest.raises(ValueError, match="vocab_tiny.txt: .* tokens with \\[DEC\\] / \\[ENC\\]"):
        image_reward.load_image_reward(checkpoint=IR / "image_reward_tiny_state_dict.safetensors",
                                       med_config=tmp_path / "big_vocab.json", vocab=IR / "vocab_tiny.txt",
                                       vision=TINY_VISION)
    state = load_state(IR / "image_reward_tiny_state_dict.safetensors")
    del state["mlp.layers.7.bias"]
    torch.save(state, tmp_path / "ImageReward.pt")
    with pytest.raises(CheckpointError, match="ImageReward.pt.*missing keys.*mlp.layers.7.bias"):
        image_reward.load_image_reward(checkpoint=tmp_path / "ImageReward.pt", med_config=IR / "med_config_tiny.json",
                                       vocab=IR / "vocab_tiny.txt", vision=TINY_VISION)


def test_pickscore_metric_and_reward_differ_only_by_resampling(preference_assets):
    # Off the model size the metric resamples the PIL image, the reward the tensor: close, not equal.
    scorer = pickscore.load_pickscore()
    _, images, prompts = parity_inputs()
    reward = pickscore.PickScoreReward(scorer)
    values = torch.stack([reward.score(x[None], [p])[0] for x, p in zip(float_images(images), prompts)])
    metric = torch.from_numpy(scorer.score(images, prompts)).float()
    assert torch.allclose(values[0], metric[0], rtol=0, atol=rounding_atol(metric[0], *SCORE))   # 224 x 224: no resampling
    assert (values[1:] - metric[1:]).abs().max() < 0.05 * metric.abs().max()
