"""PickScore v1 (Kirstain et al., 2023, arXiv 2305.01569; github yuvalkirstain/PickScore) from local
files: the released CLIP-H/14 (`yuvalkirstain/PickScore_v1`, a transformers `CLIPModel`) loaded
strictly with transformers, prompts tokenised by the released `tokenizer.json` of its processor
(`laion/CLIP-ViT-H-14-laion2B-s32B-b79K`) through the `tokenizers` library, and

    PickScore(image, prompt) = exp(logit_scale) * <f_img / |f_img|, f_txt / |f_txt|>

(~20-23 for good generations; the upstream README's softmax over several images gives the
preference probabilities, not a per-image score).

Preprocessing. The metric (PIL image in) reproduces the CLIP image processor of the transformers
release PickScore pinned (4.27, PIL-based; transformers 5 defaults to a torchvision "fast"
processor whose resampling differs, so the processor class is not used): RGB, PIL bicubic resize of
the shorter side to 224 (the longer to int(224 * long / short)), centre crop 224 with the offset
floored, /255, OpenAI mean / std. The reward (float tensors in [0, 1]) does the same on tensors
(bicubic, antialiased), so gradients reach the pixels; it equals the metric on 224 x 224 images.
Prompts are truncated to 77 tokens and padded with <|endoftext|> (the model's causal text tower
pools the first end token, so padding never changes a score). fp32, as upstream.

Parity with the README's scoring code (transformers 4.27.3) is tested against stored outputs of a
tiny configuration (tests/fixtures/parity/pickscore/).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from harness.contracts.entries import MetricValue
from harness.methods.metrics.preprocess import OPENAI_MEAN, OPENAI_STD, center_crop, open_image, resize_shorter
from harness.store import assets
from harness.store.assets import Asset
from softdimo.teachers.weights import CheckpointError, load_strict, read_state_dict

PICKSCORE_SIZE = 224
PICKSCORE_TOKENS = 77
END_TOKEN = "<|endoftext|>"
PICKSCORE_PREPROCESS = "rgb>pil_resize_shorter(224,bicubic)>center_crop(224,floor)>rescale(1/255)>normalize(openai)"

_HF = "{HF_HUB_CACHE}"
PICKSCORE_ASSETS = (
    Asset("pickscore-v1", "pickscore/PickScore_v1/model.safetensors",
          "https://huggingface.co/yuvalkirstain/PickScore_v1/resolve/main/model.safetensors",
          sha256="ef31ef6fc5ff4d9bb90dd232df4e145887ba62c5a03aa2841415f8c25f18d52e",
          env_var="SOFTDIMO_PICKSCORE",
          search=(_HF + "/models--yuvalkirstain--PickScore_v1/snapshots/*/model.safetensors",),
          description="PickScore v1 weights (transformers CLIPModel, CLIP-H/14; sha256 from the hub's LFS pointer)"),
    Asset("pickscore-v1-config", "pickscore/PickScore_v1/config.json",
          "https://huggingface.co/yuvalkirstain/PickScore_v1/resolve/main/config.json",
          env_var="SOFTDIMO_PICKSCORE_CONFIG",
          search=(_HF + "/models--yuvalkirstain--PickScore_v1/snapshots/*/config.json",),
          description="PickScore v1 model configuration (CLIPConfig; no published sha256 found)"),
    Asset("clip-vit-h-14-laion2b-tokenizer", "pickscore/CLIP-ViT-H-14-laion2B-s32B-b79K/tokenizer.json",
          "https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K/resolve/main/tokenizer.json",
          env_var="SOFTDIMO_PICKSCORE_TOKENIZER",
          search=(_HF + "/models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K/snapshots/*/tokenizer.json",),
          description="the CLIP BPE tokenizer of PickScore's processor (laion CLIP-ViT-H-14; no published "
                      "sha256 found)"),
)
for _asset in PICKSCORE_ASSETS:
    assets.manifest.register(_asset.name, _asset)
ASSET_NAMES = tuple(a.name for a in PICKSCORE_ASSETS)

#----------------------------------------------------------------------------
# Preprocessing and tokens.


# The metric's transform of one PIL image: the PIL-based CLIP image processor (see the module doc).
def pickscore_transform(image: Image.Image, size: int = PICKSCORE_SIZE) -> Tensor:
    import torchvision.transforms.functional as TF
    image = image.convert("RGB")
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_long = int(size * long / short)
    image = image.resize((size, new_long) if w <= h else (new_long, size), Image.BICUBIC)
    pixels = torch.from_numpy((np.asarray(image, dtype=np.float64) * (1 / 255)).astype(np.float32))
    return TF.normalize(center_crop(pixels.permute(2, 0, 1), size, "floor"), OPENAI_MEAN, OPENAI_STD)


# The reward's transform of float images [B, 3, H, W] in [0, 1]: the same steps on tensors.
def pickscore_pixels(images: Tensor, size: int = PICKSCORE_SIZE) -> Tensor:
    import torchvision.transforms.functional as TF
    return TF.normalize(center_crop(resize_shorter(images, size), size, "floor"), OPENAI_MEAN, OPENAI_STD)


# The released `tokenizer.json`, truncating to 77 tokens and padding with the end token.
def clip_tokenizer(path: Path, max_tokens: int = PICKSCORE_TOKENS) -> Any:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(path))
    end = tok.token_to_id(END_TOKEN)
    if end is None:
        raise ValueError(f"{path}: no {END_TOKEN} token; expected the CLIP BPE tokenizer.json")
    tok.enable_truncation(max_tokens)
    tok.enable_padding(pad_id=end, pad_token=END_TOKEN)
    return tok


#----------------------------------------------------------------------------
# The scorer.


# A PickScore model ready to score (image, prompt) pairs.
@dataclass
class PickScoreScorer:
    model: Any                       # transformers CLIPModel
    tokenizer: Any
    device: torch.device
    files: dict[str, Path]
    sha256: dict[str, str] = field(default_factory=dict)

    # Unit-norm text features [B, D] of prompts.
    def text_features(self, prompts: Sequence[str]) -> Tensor:
        enc = self.tokenizer.encode_batch([str(p) for p in prompts])
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long, device=self.device)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long, device=self.device)
        pooled = self.model.text_model(input_ids=ids, attention_mask=mask).pooler_output
        return F.normalize(self.model.text_projection(pooled), dim=-1)

    # Unit-norm image features [B, D] of normalised pixels [B, 3, 224, 224] (differentiable).
    def image_features(self, pixels: Tensor) -> Tensor:
        pooled = self.model.vision_model(pixel_values=pixels.to(self.device)).pooler_output
        return F.normalize(self.model.visual_projection(pooled), dim=-1)

    # PickScore of matched image / text features: exp(logit_scale) * cosine.
    def from_features(self, f_img: Tensor, f_txt: Tensor) -> Tensor:
        return self.model.logit_scale.exp() * (f_img * f_txt).sum(-1)

    # PickScore (float64) of images (PIL, HWC uint8 or paths) with their prompts: the metric path.
    @torch.no_grad()
    def score(self, images: Sequence[Image.Image | np.ndarray | Path], prompts: Sequence[str],
              batch_size: int = 32) -> np.ndarray:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        out = []
        for s in range(0, len(images), batch_size):
            batch = range(s, min(s + batch_size, len(images)))
            pixels = torch.stack([pickscore_transform(open_image(images[i])) for i in batch])
            out.append(self.from_features(self.image_features(pixels), self.text_features(prompts[s:s + batch_size]))
                       .double().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)

    # Protocol fields of scores from this model.
    def describe(self) -> dict[str, Any]:
        import transformers
        return {"model": "PickScore_v1", **{f"{k}_sha256": v for k, v in self.sha256.items()},
                "weights": self.files["weights"].name, "preprocess": PICKSCORE_PREPROCESS,
                "max_tokens": PICKSCORE_TOKENS, "scale": "exp(logit_scale)", "precision": "fp32",
                "implementation": f"harness on transformers {transformers.__version__} CLIPModel"}


# Load PickScore from its assets (or explicit files: weights, config.json, tokenizer.json).
def load_pickscore(device: torch.device | str = "cpu", weights: Path | None = None, config: Path | None = None,
                   tokenizer: Path | None = None) -> PickScoreScorer:
    files = {"weights": weights or assets.resolve("pickscore-v1"),
             "config": config or assets.resolve("pickscore-v1-config"),
             "tokenizer": tokenizer or assets.resolve("clip-vit-h-14-laion2b-tokenizer")}
    for role, path in files.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"PickScore {role}: {path} does not exist")
    keys = tuple((role, str(Path(p).resolve()), Path(p).stat().st_mtime_ns) for role, p in files.items())
    return _load_pickscore(str(device), keys)


@lru_cache(maxsize=2)
def _load_pickscore(device: str, keys: tuple) -> PickScoreScorer:
    from transformers import CLIPConfig, CLIPModel
    files = {role: Path(path) for role, path, _ in keys}
    config = CLIPConfig.from_json_file(str(files["config"]))
    with torch.device(device):
        model = CLIPModel(config)
    state = _position_ids_as_model_has_them(read_state_dict(files["weights"], "PickScore weights"),
                                            set(model.state_dict()), files["weights"])
    load_strict(model, state, f"PickScore weights {files['weights']} (config {files['config']})")
    model = model.to(device).float().eval().requires_grad_(False)
    return PickScoreScorer(model, clip_tokenizer(files["tokenizer"]), torch.device(device), files,
                           {role: assets.sha256_file(p) for role, p in files.items()})


# Older transformers saved the `*.position_ids` buffers (0..n-1); newer ones do not keep them in
# the state dict. Keep them where this transformers' model has them, drop them (checked) otherwise.
def _position_ids_as_model_has_them(state: dict[str, Tensor], model_keys: set[str], path: Path) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        if key.endswith(".position_ids") and key not in model_keys:
            if not torch.equal(value.flatten(), torch.arange(value.numel(), dtype=value.dtype)):
                raise CheckpointError(f"{path}: {key} is not 0..{value.numel() - 1}")
            continue
        out[key] = value
    return out


#----------------------------------------------------------------------------
# Metric and reward.


# Mean PickScore of (image, prompt) pairs; protocol "pickscore-pairs-v1".
def score_pairs(images: Sequence[Any], prompts: Sequence[str], scorer: PickScoreScorer,
                batch_size: int = 32) -> MetricValue:
    return pairs_value(scorer.score(images, prompts, batch_size), scorer)


# The metric (the mean) of every pair's score, with its protocol fields.
def pairs_value(values: np.ndarray, scorer: PickScoreScorer) -> MetricValue:
    return MetricValue(float(values.mean()), True, {
        "name": "pickscore-pairs-v1", "metric": "pickscore", **scorer.describe(), "num_samples": len(values)})


# The PickScore reward: images [B, 3, H, W] in [0, 1] (straight from `decode_soft`) with their
# prompts, through the tensor transform (`pickscore_pixels`); differentiable in the images.
class PickScoreReward:
    def __init__(self, scorer: PickScoreScorer) -> None:
        self.scorer = scorer
        self._text: dict[str, Tensor] = {}

    def __call__(self, images: Tensor, cond: Any) -> Tensor:
        if not cond.raw:
            raise ValueError("the pickscore reward needs the prompts (Condition.raw) of the images")
        return self.score(images, [str(p) for p in cond.raw])

    # Reward of images against prompt strings (one per image).
    def score(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        f_img = self.scorer.image_features(pickscore_pixels(images.to(self.scorer.device)))
        return self.scorer.from_features(f_img, self._text_features(prompts))

    def _text_features(self, prompts: Sequence[str]) -> Tensor:
        missing = sorted({p for p in prompts if p not in self._text})
        if missing:
            with torch.no_grad():
                self._text.update(zip(missing, self.scorer.text_features(missing)))
        return torch.stack([self._text[p] for p in prompts])
