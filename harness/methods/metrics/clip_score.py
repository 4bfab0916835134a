"""CLIP score: the mean cosine similarity of image and caption embeddings of a named open_clip model
whose weights are a local file (open_clip's `pretrained=<file>`; nothing is downloaded).

The named protocols follow the scripts the papers used. Di[M]O's text-to-image CLIP score is
GigaGAN's `gigagan_eval_clip.py` (shipped in yuanzhi-zhu/DiMO, `evaluation/`): open_clip ViT-g-14
(laion2b_s12b_b42k); each image centre-cropped to its short edge and resized to 256 with Lanczos,
then open_clip's own preprocessing; each caption prefixed with "A photo depicts " (GigaGAN splices
the prefix tokens after the start token and truncates to 77, which is what tokenising the prefixed
caption with truncation gives); raw cosine, not x100 and not clipped at 0 (values ~0.3). Its COCO
number is over 30k images. Parity with that script is tested against stored outputs
(tests/fixtures/parity/clip_score/).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from harness.contracts.entries import MetricValue
from harness.contracts.registry import Registry
from harness.store import assets
from softdimo.teachers.weights import load_strict, read_state_dict

# The CLIP model of GigaGAN's CLIP score (Di[M]O's COCO evaluation); sha256 from the hub's LFS pointer.
CLIP_ASSETS = assets.declare(
    assets.Asset("clip-vit-g-14-laion2b-s12b-b42k", "open_clip/ViT-g-14-laion2b_s12b_b42k.bin",
                 "https://huggingface.co/laion/CLIP-ViT-g-14-laion2B-s12B-b42K/resolve/main/open_clip_pytorch_model.bin",
                 sha256="6aac683f899159946bc4ca15228bb7016f3cbb1a2c51f365cba0b23923f344da",
                 env_var="SOFTDIMO_CLIP_VIT_G_14",
                 search=(assets.HF_HUB + "/models--laion--CLIP-ViT-g-14-laion2B-s12B-b42K/snapshots/*/"
                         "open_clip_pytorch_model.bin",),
                 description="open_clip ViT-g-14 (laion2b_s12b_b42k): the CLIP score of GigaGAN / Di[M]O's COCO eval"),
)

#----------------------------------------------------------------------------
# Protocols.


# One CLIP-score protocol: the model, its weights asset, the caption prefix, the image resize.
@dataclass(frozen=True)
class CLIPScoreProtocol:
    name: str
    arch: str                        # open_clip architecture name
    weights_asset: str | None        # asset of the weights file; None = the caller passes a file
    prefix: str = ""                 # prepended to every caption
    resize: int | None = None        # centre-crop the long edge away, Lanczos-resize to this size first
    num_samples: int | None = None   # exact count required; None = any (recorded)
    description: str = ""


CLIP_PROTOCOLS: Registry[CLIPScoreProtocol] = Registry("CLIP-score protocol")
for _p in (
    CLIPScoreProtocol("coco30k-clipscore-gigagan", "ViT-g-14", "clip-vit-g-14-laion2b-s12b-b42k",
                      "A photo depicts ", 256, 30_000,
                      description="Di[M]O / GigaGAN COCO CLIP score: 30k images, ViT-g-14, 256 px"),
    CLIPScoreProtocol("clipscore-gigagan", "ViT-g-14", "clip-vit-g-14-laion2b-s12b-b42k",
                      "A photo depicts ", 256, None,
                      description="the GigaGAN CLIP score on any number of images (count recorded)"),
):
    CLIP_PROTOCOLS.register(_p.name, _p)


#----------------------------------------------------------------------------
# Scoring.


# An open_clip model with its validation preprocessing and tokenizer.
@dataclass
class CLIPModel:
    arch: str
    weights: Path
    weights_sha256: str
    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any
    device: torch.device


# Load open_clip `arch` with weights from a local file (a state dict, or a checkpoint holding one
# under "state_dict"), read weights-only here and loaded strictly (open_clip is never given the path:
# before 2.27 it calls torch.load with torch's default, a full unpickle before torch 2.6).
def load_clip(arch: str, weights: Path, device: torch.device | str = "cpu") -> CLIPModel:
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"CLIP weights {weights} not found")
    return _load_clip(arch, str(weights.resolve()), str(device), weights.stat().st_mtime_ns)


@lru_cache(maxsize=2)
def _load_clip(arch: str, weights: str, device: str, mtime_ns: int) -> CLIPModel:
    import open_clip
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
    state = read_state_dict(weights, f"open_clip {arch} weights", key="state_dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    load_strict(model, state, weights)
    return CLIPModel(arch, Path(weights), assets.sha256_file(Path(weights)), model.to(device).float().eval(),
                     preprocess, open_clip.get_tokenizer(arch), torch.device(device))


# Per-image cosine similarities (float64) of images (HWC uint8 or PIL) with their captions.
@torch.no_grad()
def clip_cosines(clip: CLIPModel, images: Sequence[np.ndarray | Image.Image], captions: Sequence[str],
                 prefix: str = "", resize: int | None = None, batch_size: int = 64) -> np.ndarray:
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    out = []
    for s in range(0, len(images), batch_size):
        pils = [_resize(images[i], resize) for i in range(s, min(s + batch_size, len(images)))]
        pixels = torch.stack([clip.preprocess(im) for im in pils]).to(clip.device)
        tokens = clip.tokenizer([prefix + c for c in captions[s:s + batch_size]]).to(clip.device)
        f_img = clip.model.encode_image(pixels)
        f_txt = clip.model.encode_text(tokens)
        out.append(torch.nn.functional.cosine_similarity(f_img, f_txt, dim=1).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


# The CLIP score of (image, caption) pairs under a protocol; `weights` overrides the asset.
def clip_score(images: Sequence[np.ndarray | Image.Image], captions: Sequence[str],
               protocol: CLIPScoreProtocol | str, weights: Path | None = None,
               device: torch.device | str = "cpu", batch_size: int = 64) -> MetricValue:
    protocol = CLIP_PROTOCOLS.get(protocol) if isinstance(protocol, str) else protocol
    if protocol.num_samples is not None and len(images) != protocol.num_samples:
        raise ValueError(f"{len(images)} images, but protocol {protocol.name!r} needs exactly {protocol.num_samples}")
    if weights is None:
        if protocol.weights_asset is None:
            raise ValueError(f"protocol {protocol.name!r} names no weights asset: pass a weights file")
        weights = assets.resolve(protocol.weights_asset)
    clip = load_clip(protocol.arch, weights, device)
    return clip_score_value(clip_cosines(clip, images, captions, protocol.prefix, protocol.resize, batch_size),
                            protocol, clip)


# The CLIP score (the mean) of every pair's cosine under a protocol, with its protocol fields.
def clip_score_value(cosines: np.ndarray, protocol: CLIPScoreProtocol, clip: CLIPModel) -> MetricValue:
    return MetricValue(float(cosines.mean()), True, {
        "name": protocol.name, "metric": "clip_score", "arch": protocol.arch, "weights": clip.weights.name,
        "weights_sha256": clip.weights_sha256, "prefix": protocol.prefix, "resize": protocol.resize,
        "scale": 1.0, "num_samples": len(cosines), "implementation": f"harness on open_clip {_open_clip_version()}"})


# GigaGAN's image preparation: centre-crop to the short edge, Lanczos resize to `size`.
def _resize(image: np.ndarray | Image.Image, size: int | None) -> Image.Image:
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    im = im.convert("RGB")
    if size is None:
        return im
    side = min(im.size)
    left, top = round((im.width - side) / 2.0), round((im.height - side) / 2.0)
    return im.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)


def _open_clip_version() -> str:
    import open_clip
    return open_clip.__version__


#----------------------------------------------------------------------------
# Reward (differentiable; registry.rewards "clip_score").


# The CLIP-score reward: 100 x the cosine of images [B, 3, H, W] in [0, 1] (straight from
# `decode_soft`) with their prefixed captions, through open_clip's resize / centre crop /
# normalisation done on tensors (bicubic, antialiased) so gradients reach the pixels. The metric's
# PIL Lanczos pre-resize is not differentiable and is left out; the reward ranks, the metric reports.
class CLIPScoreReward:
    def __init__(self, clip: CLIPModel, prefix: str = "", scale: float = 100.0) -> None:
        self.clip, self.prefix, self.scale = clip, prefix, scale
        self.clip.model.requires_grad_(False)
        cfg = clip.model.visual.preprocess_cfg
        self.size, self.mean, self.std = int(cfg["size"][0]), cfg["mean"], cfg["std"]
        self._text: dict[str, torch.Tensor] = {}

    def __call__(self, images: torch.Tensor, cond: Any) -> torch.Tensor:
        if not cond.raw:
            raise ValueError("the clip_score reward needs the captions (Condition.raw) of the images")
        return self.score(images, [str(c) for c in cond.raw])

    # Reward of images against caption strings (one per image).
    def score(self, images: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        import torchvision.transforms.functional as TF
        x = TF.resize(images.to(self.clip.device), self.size, interpolation=TF.InterpolationMode.BICUBIC,
                      antialias=True)
        x = TF.normalize(TF.center_crop(x, self.size), self.mean, self.std)
        f_img = torch.nn.functional.normalize(self.clip.model.encode_image(x), dim=-1)
        return self.scale * (f_img * self._text_features(captions)).sum(-1)

    def _text_features(self, captions: Sequence[str]) -> torch.Tensor:
        missing = sorted({c for c in captions if c not in self._text})
        if missing:
            with torch.no_grad():
                tokens = self.clip.tokenizer([self.prefix + c for c in missing]).to(self.clip.device)
                feats = torch.nn.functional.normalize(self.clip.model.encode_text(tokens), dim=-1)
            self._text.update(zip(missing, feats))
        return torch.stack([self._text[c] for c in captions])


# Build the reward under a named protocol's model (weights from its asset) and caption prefix.
def build_clip_reward(protocol: str, device: torch.device | str = "cpu") -> CLIPScoreReward:
    proto = CLIP_PROTOCOLS.get(protocol)
    return CLIPScoreReward(load_clip(proto.arch, assets.resolve(proto.weights_asset), device), proto.prefix)
