"""HPS v2 / v2.1 (Human Preference Score, tgxs002/HPSv2) on open_clip, from local files.

The `hpsv2` wheel is not used: it pins pytest==7.2.0 and protobuf<4 at run time, lacks its BPE
vocabulary file, vendors an old open_clip and downloads the 3.9 GB laion ViT-H-14 weights on every
first use only to overwrite them. Its scoring path is small and is reproduced here
on `open_clip_torch`: build open_clip `ViT-H-14` without pretrained weights, load the HPS
checkpoint's `state_dict` (v2.0 `HPS_v2_compressed.pt` or v2.1 `HPS_v2.1_compressed.pt`; the key
names of the vendored and the released open_clip agree), and score

    HPS(image, prompt) = 100 * <f_img / |f_img|, f_txt / |f_txt|>

The x100 is the benchmark convention (`evaluate_benchmark_all`: per-style means of 10 chunks of
80, i.e. the mean over 800 images, times 100; ~27-31); `hpsv2.score` returns the raw cosine
(~0.27-0.31). Images go through HPS's own validation transform (its model factory is called with
`light_augmentation=True`, which selects a resize-longest-and-pad transform), not open_clip's:
RGB -> ToTensor -> resize the LONGER side to 224 (bicubic, on the float tensor) -> pad the shorter
side with zeros (black), centred -> Normalize (OpenAI mean/std); nothing is cropped. On CUDA the
forward runs under fp16 autocast, as HPS does; on CPU in fp32. Parity with HPS's own `score`
(tgxs002/HPSv2) is tested against stored outputs (tests/fixtures/parity/hps/).

The benchmark layout is `<root>/<style>/<idx:05d>.jpg` for the 4 styles (anime, concept-art,
paintings, photo; 800 prompts each). The upstream evaluator skips missing images with a print;
here every style must be complete.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from harness.contracts.entries import MetricValue
from harness.methods.metrics.preprocess import OPENAI_MEAN, OPENAI_STD
from harness.store import assets
from softdimo.files import atomic_write
from softdimo.teachers.weights import load_weights_only, read_state_dict

HPS_ARCH = "ViT-H-14"
HPS_VERSIONS = {"v2.0": "hps-v2.0", "v2.1": "hps-v2.1"}          # version -> checkpoint asset
BENCHMARK_PROTOCOLS = {f"hpsv2-benchmark-{v}": v for v in HPS_VERSIONS}   # protocol -> HPS version
HPS_STYLES = ("anime", "concept-art", "paintings", "photo")
HPS_SCALE = 100.0
HPS_JPEG_QUALITY = 75            # PIL's default, as the HPS README's generation loop saves .jpg
HPS_PREPROCESS = "rgb>to_tensor>resize_longer(bicubic,antialias)>pad_center(0)>normalize(openai)"

# The HPS checkpoints (sha256 from the LFS pointers of xswu/HPSv2 commit 697403c7) and the benchmark
# prompts (plain git files: no sha256 published; protocols record the digest).
HPS_ASSETS = assets.declare(
    assets.Asset("hps-v2.0", "hpsv2/HPS_v2_compressed.pt", "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2_compressed.pt",
                 sha256="07cb0d20626232204ca3a6ec53ff5984e7e53212a8a7b0e0ec2bac1bdaf125a1",
                 env_var="SOFTDIMO_HPS_V20",
                 search=("{HPS_ROOT}/HPS_v2_compressed.pt",
                         assets.HF_HUB + "/models--xswu--HPSv2/snapshots/*/HPS_v2_compressed.pt"),
                 description="HPS v2.0 checkpoint ({'state_dict'} of open_clip ViT-H-14)"),
    assets.Asset("hps-v2.1", "hpsv2/HPS_v2.1_compressed.pt",
                 "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2.1_compressed.pt",
                 sha256="c57a38fb4a2f7e7c15bf00da2ea377cdf165448b4dd1052a484c215a998c9837",
                 env_var="SOFTDIMO_HPS_V21",
                 search=("{HPS_ROOT}/HPS_v2.1_compressed.pt",
                         assets.HF_HUB + "/models--xswu--HPSv2/snapshots/*/HPS_v2.1_compressed.pt"),
                 description="HPS v2.1 checkpoint ({'state_dict'} of open_clip ViT-H-14)"),
    *(assets.Asset(f"hps-benchmark-{style}", f"hpsv2/benchmark/{style}.json",
                   f"https://huggingface.co/datasets/zhwang/HPDv2/resolve/main/benchmark/{style}.json",
                   search=(f"{{HPS_ROOT}}/datasets/benchmark/{style}.json",
                           assets.HF_HUB + f"/datasets--zhwang--HPDv2/snapshots/*/benchmark/{style}.json"),
                   description=f"HPS v2 benchmark prompts, style {style} (800 prompts)")
      for style in ("anime", "concept-art", "paintings", "photo")),
)

#----------------------------------------------------------------------------
# The scorer.


# HPS's validation transform on float images [..., 3, H, W] in [0, 1] (hpsv2's `ResizeMaxSize` then
# `Normalize`): the longer side is resized to `size` (the shorter to round(side * scale)) and the
# shorter one padded with zeros, centred (the extra pixel of an odd margin goes right / bottom).
# HPS skips the pad when the longer side is already `size`; the harness pads, as the model needs
# square input.
def hps_pixels(x: Tensor, size: int) -> Tensor:
    import torchvision.transforms.functional as TF
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    new_h, new_w = round(h * scale), round(w * scale)
    if (new_h, new_w) != (h, w):
        x = TF.resize(x, [new_h, new_w], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    pad_h, pad_w = size - new_h, size - new_w
    x = TF.pad(x, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0.0)
    return TF.normalize(x, OPENAI_MEAN, OPENAI_STD)


# HPS's validation transform of one PIL image: RGB, ToTensor, `hps_pixels`.
def hps_transform(size: int) -> Any:
    import torchvision.transforms.functional as TF
    return lambda im: hps_pixels(TF.to_tensor(im.convert("RGB")), size)


# An HPS model ready to score (image, prompt) pairs.
@dataclass
class HPSScorer:
    version: str
    arch: str
    checkpoint: Path
    checkpoint_sha256: str
    model: torch.nn.Module
    tokenizer: Any
    transform: Any
    device: torch.device

    # Raw cosine similarities (float64) of images (PIL, HWC uint8 or paths) with their prompts.
    @torch.no_grad()
    def cosine(self, images: Sequence[Image.Image | np.ndarray | Path], prompts: Sequence[str],
               batch_size: int = 20) -> np.ndarray:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        out = []
        for s in range(0, len(images), batch_size):
            batch = [images[i] for i in range(s, min(s + batch_size, len(images)))]
            pixels = torch.stack([self.transform(_pil(im)) for im in batch]).to(self.device)
            tokens = self.tokenizer(list(prompts[s:s + batch_size])).to(self.device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
                f_img = self.model.encode_image(pixels, normalize=True)
                f_txt = self.model.encode_text(tokens, normalize=True)
            out.append((f_img.float() * f_txt.float()).sum(-1).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)

    # Protocol fields of scores from this model.
    def describe(self) -> dict[str, Any]:
        return {"hps_version": self.version, "arch": self.arch, "checkpoint": self.checkpoint.name,
                "checkpoint_sha256": self.checkpoint_sha256, "scale": HPS_SCALE,
                "preprocess": HPS_PREPROCESS,
                "precision": "amp-fp16" if self.device.type == "cuda" else "fp32",
                "implementation": f"harness on open_clip {_open_clip_version()}"}


# Load HPS `version` ("v2.0" or "v2.1") from its checkpoint asset (or an explicit file).
def load_hps(version: str, device: torch.device | str = "cpu", arch: str = HPS_ARCH,
             checkpoint: Path | None = None) -> HPSScorer:
    if version not in HPS_VERSIONS:
        raise ValueError(f"HPS version {version!r}: allowed {', '.join(HPS_VERSIONS)} (their scores are "
                         f"not comparable; always name one)")
    path = Path(checkpoint) if checkpoint is not None else assets.resolve(HPS_VERSIONS[version])
    return _load_hps(version, str(device), arch, str(path.resolve()), path.stat().st_mtime_ns)


@lru_cache(maxsize=2)
def _load_hps(version: str, device: str, arch: str, path: str, mtime_ns: int) -> HPSScorer:
    import open_clip
    model = open_clip.create_model(arch, pretrained=None, device="cpu")
    state = _load_state_dict(Path(path))
    missing, unexpected = _key_mismatch(model, state)
    if missing or unexpected:
        raise ValueError(f"{path}: not an HPS checkpoint of open_clip {arch!r}: missing keys {missing[:5]}, "
                         f"unexpected keys {unexpected[:5]}")
    model.load_state_dict(state, strict=True)
    model = model.to(device).eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return HPSScorer(version, arch, Path(path), assets.sha256_file(Path(path)), model,
                     open_clip.get_tokenizer(arch), hps_transform(size), torch.device(device))


# The `state_dict` of an HPS checkpoint ({"state_dict": ...}, read weights-only: a file holding
# anything but tensors, containers and numbers is refused), or of its safetensors conversion; a
# "module." prefix is removed.
def _load_state_dict(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        state = read_state_dict(path, "HPS checkpoint")
    else:
        ckpt = load_weights_only(path, "HPS checkpoint")
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
            keys = list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
            raise KeyError(f"{path}: no 'state_dict' (found {keys}); expected an HPS checkpoint")
        state = ckpt["state_dict"]
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _key_mismatch(model: torch.nn.Module, state: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    own = set(model.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)


#----------------------------------------------------------------------------
# Benchmark prompts, layout and scores.


# The benchmark prompts of one style (a JSON list, from the asset `hps-benchmark-<style>`).
def benchmark_prompts(style: str) -> list[str]:
    if style not in HPS_STYLES:
        raise ValueError(f"HPS style {style!r}: allowed {', '.join(HPS_STYLES)}")
    path = assets.resolve(f"hps-benchmark-{style}")
    prompts = json.loads(path.read_text())
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{path}: expected a JSON list of prompt strings")
    return prompts


# Write images (HWC uint8, in prompt order) of each style as <root>/<style>/<idx:05d>.jpg.
def write_benchmark_layout(root: Path, images: dict[str, Sequence[np.ndarray]],
                           prompts: dict[str, Sequence[str]]) -> Path:
    root = Path(root)
    for style, style_images in images.items():
        if style not in HPS_STYLES:
            raise ValueError(f"HPS style {style!r}: allowed {', '.join(HPS_STYLES)}")
        if len(style_images) != len(prompts[style]):
            raise ValueError(f"style {style}: {len(style_images)} images for {len(prompts[style])} prompts")
        (root / style).mkdir(parents=True, exist_ok=True)
        for idx, image in enumerate(style_images):
            atomic_write(root / style / f"{idx:05d}.jpg",
                         lambda tmp: Image.fromarray(image).save(tmp, quality=HPS_JPEG_QUALITY))
    return root


# Score a benchmark folder: per-style means and their average (the "Avg" column), all x100.
def evaluate_benchmark(root: Path, scorer: HPSScorer, prompts: dict[str, Sequence[str]] | None = None,
                       batch_size: int = 20) -> dict[str, MetricValue]:
    root = Path(root)
    prompts = prompts or {style: benchmark_prompts(style) for style in HPS_STYLES}
    per_style: dict[str, float] = {}
    for style in HPS_STYLES:
        files = [root / style / f"{i:05d}.jpg" for i in range(len(prompts[style]))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{root / style}: {len(missing)} of {len(files)} images missing "
                                    f"(first {missing[0]}); the HPS benchmark needs one <idx:05d>.jpg per prompt")
        cos = scorer.cosine(files, prompts[style], batch_size)
        per_style[style] = float(HPS_SCALE * cos.mean())
    counts = {style: len(prompts[style]) for style in HPS_STYLES}
    base = {"name": f"hpsv2-benchmark-{scorer.version}", **scorer.describe(),
            "styles": list(HPS_STYLES), "prompts_per_style": counts["anime"] if len(set(counts.values())) == 1
            else counts, "prompts_sha256": _prompts_digest(prompts), "image_format": f"jpg-q{HPS_JPEG_QUALITY}"}
    out = {f"hps_{style}": MetricValue(v, True, {**base, "metric": f"hps_{style}"}) for style, v in per_style.items()}
    out["hps"] = MetricValue(float(np.mean(list(per_style.values()))), True,
                             {**base, "metric": "hps", "average": "mean of the 4 style means"})
    return out


# Mean HPS (x100) of arbitrary (image, prompt) pairs; protocol "hpsv2-pairs-<version>".
def score_pairs(images: Sequence[np.ndarray], prompts: Sequence[str], scorer: HPSScorer,
                batch_size: int = 20) -> MetricValue:
    cos = scorer.cosine(images, prompts, batch_size)
    return MetricValue(float(HPS_SCALE * cos.mean()), True, {
        "name": f"hpsv2-pairs-{scorer.version}", **scorer.describe(), "metric": "hps",
        "num_samples": len(images), "prompts_sha256": _prompts_digest({"all": prompts})})


def _prompts_digest(prompts: dict[str, Sequence[str]]) -> str:
    return hashlib.sha256(json.dumps({k: list(v) for k, v in prompts.items()}, sort_keys=True).encode()).hexdigest()


def _pil(image: Image.Image | np.ndarray | Path) -> Image.Image:
    if isinstance(image, Path):
        with Image.open(image) as im:
            return im.convert("RGB")
    return image if isinstance(image, Image.Image) else Image.fromarray(image)


def _open_clip_version() -> str:
    import open_clip
    return open_clip.__version__


#----------------------------------------------------------------------------
# Reward (differentiable; registry.rewards "hps_v2").


# The HPS reward: HPS x100 of images [B, 3, H, W] in [0, 1] (straight from `decode_soft`) with
# their prompts, through HPS's own transform applied to the float tensor (which is where HPS
# applies it: after ToTensor), so it equals the metric on the same pixels and stays differentiable.
class HPSReward:
    def __init__(self, scorer: HPSScorer) -> None:
        self.scorer = scorer
        self.scorer.model.requires_grad_(False)
        size = scorer.model.visual.image_size
        self.size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self._text: dict[str, Tensor] = {}

    def __call__(self, images: Tensor, cond: Any) -> Tensor:
        if not cond.raw:
            raise ValueError("the hps_v2 reward needs the prompts (Condition.raw) of the images")
        return self.score(images, [str(p) for p in cond.raw])

    # Reward of images against prompt strings (one per image).
    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        x = hps_pixels(images.to(self.scorer.device), self.size)
        f_img = self.scorer.model.encode_image(x, normalize=True)
        return HPS_SCALE * (f_img.float() * self._text_features(prompts)).sum(-1)

    def _text_features(self, prompts: Sequence[str]) -> Tensor:
        missing = sorted({p for p in prompts if p not in self._text})
        if missing:
            with torch.no_grad():
                tokens = self.scorer.tokenizer(missing).to(self.scorer.device)
                feats = self.scorer.model.encode_text(tokens, normalize=True).float()
            self._text.update(zip(missing, feats))
        return torch.stack([self._text[p] for p in prompts])
