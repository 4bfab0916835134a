"""ImageReward v1.0 (Xu et al., NeurIPS 2023; github THUDM/ImageReward) from local files: the
harness's own implementation of its scoring path, loading the released `ImageReward.pt` strictly.

The `image-reward` package (PyPI 1.5) is not used: it requires `clip` from a GitHub archive URL
(not installable from a package index), fairscale, diffusers, accelerate and datasets; its BLIP
text encoder imports helpers that current transformers releases no longer export
(`transformers.modeling_utils.apply_chunking_to_forward`, ...); and building a model downloads
`med_config.json` and the `bert-base-uncased` tokenizer from the Hugging Face hub. Its scoring path
is small and is reproduced here in plain torch:

    ImageReward(image, prompt) = (MLP(BERT_x(prompt; ViT(image))[CLS]) - 0.16717362830052426) / 1.0333394966054072

- ViT: BLIP's ViT-L/16 (width 1024, depth 24, 16 heads, LayerNorm eps 1e-6, exact GELU, fused qkv
  with bias), all 197 output tokens (final LayerNorm applied).
- BERT_x: BLIP's "med" BERT (`med_config.json`: width 768, 12 layers, 12 heads, no token-type
  embeddings, LayerNorm eps 1e-12), each layer self-attention (bidirectional, padding masked with
  -10000), then cross-attention to the image tokens (keys / values projected from width 1024),
  then the feed-forward block; post-LayerNorm residuals throughout.
- MLP: five Linear layers 768 -> 1024 -> 128 -> 64 -> 16 -> 1 with no activation between them
  (the released head; its Dropout layers are inactive at evaluation), then ImageReward's fixed
  mean / std normalisation.
- Tokens: bert-base-uncased WordPiece (lower case, accents stripped, CJK characters split), `[DEC]`
  and `[ENC]` added as ids 30522 / 30523, padded and truncated to 35 tokens ([CLS] ... [SEP]).

Preprocessing. The metric (PIL image in, as `ImageReward.score`): torchvision Resize(224, bicubic)
of the PIL image (shorter side), CenterCrop(224), RGB, ToTensor, OpenAI mean / std. The reward
(float tensors in [0, 1], as ImageReward's own ReFL fine-tuning feeds `score_gard`): the same
Resize / CenterCrop / Normalize on the tensor (bicubic, antialiased), so gradients reach the pixels;
it equals the metric on 224 x 224 images and differs slightly after a resize (PIL vs tensor
resampling). Both run in fp32, as upstream does.

Parity with THUDM/ImageReward's `score`, `inference_rank` and `score_gard` is tested against stored
outputs of a tiny configuration (tests/fixtures/parity/image_reward/).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from harness.contracts.entries import MetricValue
from harness.methods.metrics.image_reward_net import (IMAGE_REWARD_MEAN, IMAGE_REWARD_SIZE, IMAGE_REWARD_STD,
                                             BLIPVisionConfig, ImageRewardNet, MedBertConfig)
from harness.methods.metrics.preprocess import OPENAI_MEAN, OPENAI_STD, center_crop, open_image, resize_shorter
from harness.store import assets
from harness.store.assets import Asset
from softdimo.teachers.weights import CheckpointError, build_uninitialised, load_strict, read_state_dict

IMAGE_REWARD_TOKENS = 35                     # prompts are padded / truncated to 35 tokens
ADDED_TOKENS = ("[DEC]", "[ENC]")            # BLIP's tokenizer adds these after the vocabulary
IMAGE_REWARD_PREPROCESS = "pil_resize_shorter(224,bicubic)>center_crop(224,round)>rgb>to_tensor>normalize(openai)"
# Keys of the released checkpoint the score does not read: BLIP's contrastive projections and
# the position-id buffer of old transformers releases (checked to be 0..n-1).
UNUSED_KEYS = ("blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight", "blip.text_proj.bias",
               "blip.text_encoder.embeddings.position_ids")

IMAGE_REWARD_ASSETS = (
    Asset("image-reward-v1.0", "image_reward/ImageReward.pt",
          "https://huggingface.co/THUDM/ImageReward/resolve/main/ImageReward.pt (the image-reward "
          "package keeps it in ~/.cache/ImageReward/)",
          sha256="d71dc8d4912bc633c06ab8ef1ef6a81e8199d4369f14b47b29baf1d19de561f6",
          env_var="SOFTDIMO_IMAGE_REWARD",
          search=("{HF_HUB_CACHE}/models--THUDM--ImageReward/snapshots/*/ImageReward.pt",),
          description="ImageReward v1.0 checkpoint (state dict of BLIP ViT-L + med BERT + MLP head; sha256 from "
                      "the hub's LFS pointer)"),
    Asset("image-reward-med-config", "image_reward/med_config.json",
          "https://huggingface.co/THUDM/ImageReward/resolve/main/med_config.json (the image-reward "
          "package keeps it in ~/.cache/ImageReward/)",
          env_var="SOFTDIMO_IMAGE_REWARD_MED_CONFIG",
          search=("{HF_HUB_CACHE}/models--THUDM--ImageReward/snapshots/*/med_config.json",),
          description="BLIP 'med' BERT configuration of ImageReward's text encoder (no published sha256 "
                      "found)"),
    Asset("bert-base-uncased-vocab", "image_reward/bert-base-uncased/vocab.txt",
          "https://huggingface.co/google-bert/bert-base-uncased/resolve/main/vocab.txt",
          env_var="SOFTDIMO_BERT_BASE_UNCASED_VOCAB",
          search=("{HF_HUB_CACHE}/models--bert-base-uncased/snapshots/*/vocab.txt",
                  "{HF_HUB_CACHE}/models--google-bert--bert-base-uncased/snapshots/*/vocab.txt"),
          description="bert-base-uncased WordPiece vocabulary (30522 tokens), ImageReward's tokenizer (no published "
                      "sha256 found)"),
)
for _asset in IMAGE_REWARD_ASSETS:
    assets.manifest.register(_asset.name, _asset)
ASSET_NAMES = tuple(a.name for a in IMAGE_REWARD_ASSETS)

#----------------------------------------------------------------------------
# Preprocessing and tokens.


# The metric's transform of one PIL image (ImageReward.score): Resize / CenterCrop on the PIL image.
def image_reward_transform(size: int = IMAGE_REWARD_SIZE) -> Any:
    from torchvision import transforms as T
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      lambda im: im.convert("RGB"), T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])


# The reward's transform of float images [B, 3, H, W] in [0, 1] (ReFL's): the same steps on tensors.
def image_reward_pixels(images: Tensor, size: int = IMAGE_REWARD_SIZE) -> Tensor:
    import torchvision.transforms.functional as TF
    return TF.normalize(center_crop(resize_shorter(images, size), size), OPENAI_MEAN, OPENAI_STD)


# BLIP's tokenizer from a bert-base-uncased `vocab.txt`: lower case, accents stripped, [DEC] and
# [ENC] added after the vocabulary, padded / truncated to 35 tokens.
def bert_tokenizer(vocab: Path, max_tokens: int = IMAGE_REWARD_TOKENS) -> Any:
    from tokenizers import BertWordPieceTokenizer
    tok = BertWordPieceTokenizer(str(vocab), lowercase=True)
    size = tok.get_vocab_size(with_added_tokens=False)
    tok.add_special_tokens(list(ADDED_TOKENS))
    ids = [tok.token_to_id(t) for t in ADDED_TOKENS]
    if ids != [size, size + 1] or tok.token_to_id("[PAD]") is None:
        raise ValueError(f"{vocab}: not a BERT WordPiece vocabulary ([PAD] id {tok.token_to_id('[PAD]')}, "
                         f"added tokens at {ids}, expected {[size, size + 1]})")
    tok.enable_truncation(max_tokens)
    tok.enable_padding(length=max_tokens, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    return tok


#----------------------------------------------------------------------------
# The scorer.


# An ImageReward model ready to score (image, prompt) pairs.
@dataclass
class ImageRewardScorer:
    net: ImageRewardNet
    tokenizer: Any
    device: torch.device
    files: dict[str, Path]
    sha256: dict[str, str] = field(default_factory=dict)

    # Token ids and attention masks [B, 35] of prompts.
    def tokens(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        enc = self.tokenizer.encode_batch([str(p) for p in prompts])
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long, device=self.device)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long, device=self.device)
        return ids, mask

    # Rewards [B] of normalised pixels [B, 3, 224, 224] with their prompts (differentiable).
    def reward(self, pixels: Tensor, prompts: Sequence[str]) -> Tensor:
        if pixels.shape[0] != len(prompts):
            raise ValueError(f"{pixels.shape[0]} images but {len(prompts)} prompts")
        ids, mask = self.tokens(prompts)
        return self.net(pixels.to(self.device), ids, mask)

    # ImageReward (float64) of images (PIL, HWC uint8 or paths) with their prompts: the metric path.
    @torch.no_grad()
    def score(self, images: Sequence[Image.Image | np.ndarray | Path], prompts: Sequence[str],
              batch_size: int = 16) -> np.ndarray:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        transform = image_reward_transform(self.net.blip.visual_encoder.cfg.image_size)
        out = []
        for s in range(0, len(images), batch_size):
            pixels = torch.stack([transform(open_image(images[i])) for i in range(s, min(s + batch_size, len(images)))])
            out.append(self.reward(pixels, prompts[s:s + batch_size]).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)

    # Protocol fields of scores from this model.
    def describe(self) -> dict[str, Any]:
        return {"model": "ImageReward-v1.0", **{f"{k}_sha256": v for k, v in self.sha256.items()},
                "checkpoint": self.files["checkpoint"].name, "preprocess": IMAGE_REWARD_PREPROCESS,
                "max_tokens": IMAGE_REWARD_TOKENS, "normalisation": [IMAGE_REWARD_MEAN, IMAGE_REWARD_STD],
                "precision": "fp32", "implementation": "harness (own BLIP / med-BERT, THUDM/ImageReward parity)"}


# Load ImageReward from its assets (or explicit files); `vision` is BLIP's ViT-L unless a test says.
def load_image_reward(device: torch.device | str = "cpu", checkpoint: Path | None = None,
                      med_config: Path | None = None, vocab: Path | None = None,
                      vision: BLIPVisionConfig = BLIPVisionConfig()) -> ImageRewardScorer:
    files = {"checkpoint": checkpoint or assets.resolve("image-reward-v1.0"),
             "med_config": med_config or assets.resolve("image-reward-med-config"),
             "vocab": vocab or assets.resolve("bert-base-uncased-vocab")}
    for role, path in files.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"ImageReward {role}: {path} does not exist")
    keys = tuple((role, str(Path(p).resolve()), Path(p).stat().st_mtime_ns) for role, p in files.items())
    return _load_image_reward(str(device), keys, vision)


@lru_cache(maxsize=2)
def _load_image_reward(device: str, keys: tuple, vision: BLIPVisionConfig) -> ImageRewardScorer:
    files = {role: Path(path) for role, path, _ in keys}
    text = MedBertConfig.from_json(files["med_config"])
    tokenizer = bert_tokenizer(files["vocab"])
    if tokenizer.get_vocab_size() != text.vocab_size:
        raise ValueError(f"{files['vocab']}: {tokenizer.get_vocab_size()} tokens with [DEC] / [ENC], but "
                         f"{files['med_config']} has vocab_size {text.vocab_size}")
    net = build_uninitialised(lambda: ImageRewardNet(vision, text))
    load_strict(net, _checkpoint_state(files["checkpoint"]), f"ImageReward checkpoint {files['checkpoint']}")
    net = net.to(device).eval().requires_grad_(False)
    return ImageRewardScorer(net, tokenizer, torch.device(device), files,
                             {role: assets.sha256_file(p) for role, p in files.items()})


# The checkpoint's tensors without the keys the score does not read (UNUSED_KEYS).
def _checkpoint_state(path: Path) -> dict[str, Tensor]:
    state = read_state_dict(path, "ImageReward checkpoint")
    ids = state.get("blip.text_encoder.embeddings.position_ids")
    if ids is not None and not torch.equal(ids.flatten(), torch.arange(ids.numel(), dtype=ids.dtype)):
        raise CheckpointError(f"{path}: blip.text_encoder.embeddings.position_ids is not 0..{ids.numel() - 1}")
    return {k: v for k, v in state.items() if k not in UNUSED_KEYS}


#----------------------------------------------------------------------------
# Metric and reward.


# Mean ImageReward of (image, prompt) pairs; protocol "imagereward-pairs-v1.0".
def score_pairs(images: Sequence[Any], prompts: Sequence[str], scorer: ImageRewardScorer,
                batch_size: int = 16) -> MetricValue:
    return pairs_value(scorer.score(images, prompts, batch_size), scorer)


# The metric (the mean) of every pair's score, with its protocol fields.
def pairs_value(values: np.ndarray, scorer: ImageRewardScorer) -> MetricValue:
    return MetricValue(float(values.mean()), True, {
        "name": "imagereward-pairs-v1.0", "metric": "image_reward", **scorer.describe(), "num_samples": len(values)})


# The ImageReward reward: images [B, 3, H, W] in [0, 1] (straight from `decode_soft`) with their
# prompts, through the tensor transform (`image_reward_pixels`); differentiable in the images.
class ImageRewardReward:
    def __init__(self, scorer: ImageRewardScorer) -> None:
        self.scorer = scorer
        self.size = scorer.net.blip.visual_encoder.cfg.image_size

    def __call__(self, images: Tensor, cond: Any) -> Tensor:
        if not cond.raw:
            raise ValueError("the image_reward reward needs the prompts (Condition.raw) of the images")
        return self.score(images, [str(p) for p in cond.raw])

    # Reward of images against prompt strings (one per image).
    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        return self.scorer.reward(image_reward_pixels(images.to(self.scorer.device), self.size), prompts)
