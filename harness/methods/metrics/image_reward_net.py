"""ImageReward's network (THUDM/ImageReward, `ImageReward` with BLIP's `vit.py` and `med.py`),
written for this harness with the released checkpoint's parameter names: BLIP's ViT image encoder,
BLIP's "med" BERT text encoder with cross-attention to the image tokens, and the MLP head with
ImageReward's fixed reward normalisation. harness/methods/metrics/image_reward.py loads and scores it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE_REWARD_MEAN = 0.16717362830052426      # ImageReward's fixed reward normalisation
IMAGE_REWARD_STD = 1.0333394966054072
IMAGE_REWARD_SIZE = 224
HEAD_WIDTHS = (1024, 128, 64, 16, 1)         # the MLP after the [CLS] feature

#----------------------------------------------------------------------------
# Configuration.


# BLIP's image encoder; ImageReward uses ViT 'large' (not stored in any released file).
@dataclass(frozen=True)
class BLIPVisionConfig:
    width: int = 1024
    depth: int = 24
    heads: int = 16
    patch: int = 16
    image_size: int = IMAGE_REWARD_SIZE
    mlp_ratio: float = 4.0


# The text encoder's fields of `med_config.json` (a transformers BertConfig with BLIP's additions).
@dataclass(frozen=True)
class MedBertConfig:
    hidden_size: int
    num_attention_heads: int
    num_hidden_layers: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    layer_norm_eps: float

    # Read `med_config.json`, refusing settings the ImageReward text path does not use.
    @classmethod
    def from_json(cls, path: Path) -> "MedBertConfig":
        cfg = json.loads(Path(path).read_text())
        fixed = {"hidden_act": "gelu", "position_embedding_type": "absolute", "add_cross_attention": True}
        for key, value in fixed.items():
            if cfg.get(key, value) != value:
                raise ValueError(f"{path}: {key} = {cfg[key]!r}; ImageReward's text encoder needs {value!r}")
        missing = [f for f in cls.__dataclass_fields__ if f not in cfg]
        if missing:
            raise KeyError(f"{path}: missing {', '.join(missing)}; expected BLIP's med_config.json")
        return cls(**{f: cfg[f] for f in cls.__dataclass_fields__})


#----------------------------------------------------------------------------
# The network (parameter names as in the released checkpoint).


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


# ViT self-attention with a fused qkv projection: softmax(q k^T / sqrt(d)) v, then `proj`.
class _ViTAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class _ViTMlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


# Pre-LayerNorm transformer block of BLIP's ViT.
class _ViTBlock(nn.Module):
    def __init__(self, cfg: BLIPVisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.attn = _ViTAttention(cfg.width, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.mlp = _ViTMlp(cfg.width, int(cfg.width * cfg.mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, cfg: BLIPVisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, cfg.patch, stride=cfg.patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


# BLIP's ViT: normalised pixels [B, 3, S, S] -> tokens [B, 1 + (S/patch)^2, width] ([CLS] first).
class BLIPVisionTransformer(nn.Module):
    def __init__(self, cfg: BLIPVisionConfig):
        super().__init__()
        if cfg.image_size % cfg.patch:
            raise ValueError(f"image size {cfg.image_size} is not a multiple of the patch size {cfg.patch}")
        self.cfg = cfg
        self.patch_embed = _PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, (cfg.image_size // cfg.patch) ** 2 + 1, cfg.width))
        self.blocks = nn.ModuleList(_ViTBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)

    def forward(self, pixels: Tensor) -> Tensor:
        if pixels.shape[-2:] != (self.cfg.image_size, self.cfg.image_size):
            raise ValueError(f"ImageReward's ViT takes {self.cfg.image_size}x{self.cfg.image_size} pixels, "
                             f"got {tuple(pixels.shape[-2:])}")
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# Post-LayerNorm residual output of a BERT sub-layer: LayerNorm(dense(h) + residual).
class _DenseNorm(nn.Module):
    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _QKV(nn.Module):
    def __init__(self, width: int, context_width: int):
        super().__init__()
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(context_width, width)
        self.value = nn.Linear(context_width, width)


# BERT attention block: softmax(q k^T / sqrt(d) + mask) v over `context` (itself, or the image).
class _BertAttention(nn.Module):
    def __init__(self, cfg: MedBertConfig, context_width: int):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.self = _QKV(cfg.hidden_size, context_width)
        self.output = _DenseNorm(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, h: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        q = _split_heads(self.self.query(h), self.heads)
        k = _split_heads(self.self.key(context), self.heads)
        v = _split_heads(self.self.value(context), self.heads)
        return self.output(_merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), h)


class _Intermediate(nn.Module):
    def __init__(self, cfg: MedBertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, h: Tensor) -> Tensor:
        return F.gelu(self.dense(h))


# One "multimodal" med-BERT layer: self-attention, cross-attention to the image, feed-forward.
class _BertLayer(nn.Module):
    def __init__(self, cfg: MedBertConfig, image_width: int):
        super().__init__()
        self.attention = _BertAttention(cfg, cfg.hidden_size)
        self.crossattention = _BertAttention(cfg, image_width)
        self.intermediate = _Intermediate(cfg)
        self.output = _DenseNorm(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, h: Tensor, text_mask: Tensor, image: Tensor) -> Tensor:
        h = self.attention(h, h, text_mask)
        h = self.crossattention(h, image, None)
        return self.output(self.intermediate(h), h)


class _BertEmbeddings(nn.Module):
    def __init__(self, cfg: MedBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(positions)[None])


class _BertLayers(nn.Module):
    def __init__(self, cfg: MedBertConfig, image_width: int):
        super().__init__()
        self.layer = nn.ModuleList(_BertLayer(cfg, image_width) for _ in range(cfg.num_hidden_layers))


# BLIP's med BERT in its multimodal mode: token ids [B, T] (+ mask) and image tokens -> [B, T, width].
class MedBertEncoder(nn.Module):
    def __init__(self, cfg: MedBertConfig, image_width: int):
        super().__init__()
        self.embeddings = _BertEmbeddings(cfg)
        self.encoder = _BertLayers(cfg, image_width)

    def forward(self, ids: Tensor, attention_mask: Tensor, image: Tensor) -> Tensor:
        h = self.embeddings(ids)
        mask = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -10000.0   # BLIP's padding mask
        for layer in self.encoder.layer:
            h = layer(h, mask, image)
        return h


class _BLIP(nn.Module):
    def __init__(self, vision: BLIPVisionConfig, text: MedBertConfig):
        super().__init__()
        self.visual_encoder = BLIPVisionTransformer(vision)
        self.text_encoder = MedBertEncoder(text, vision.width)


class _Head(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        dims = (width, *HEAD_WIDTHS)
        linears = [nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])]
        # Released indices 0, 2, 4, 6, 7: Dropout sat at 1, 3, 5 (inactive at evaluation).
        self.layers = nn.Sequential(linears[0], nn.Identity(), linears[1], nn.Identity(), linears[2],
                                    nn.Identity(), linears[3], linears[4])


# ImageReward: normalised pixels [B, 3, 224, 224] and prompt tokens -> normalised reward [B].
class ImageRewardNet(nn.Module):
    def __init__(self, vision: BLIPVisionConfig, text: MedBertConfig):
        super().__init__()
        self.blip = _BLIP(vision, text)
        self.mlp = _Head(text.hidden_size)

    def forward(self, pixels: Tensor, ids: Tensor, attention_mask: Tensor) -> Tensor:
        image = self.blip.visual_encoder(pixels)
        cls = self.blip.text_encoder(ids, attention_mask, image)[:, 0]
        return ((self.mlp.layers(cls) - IMAGE_REWARD_MEAN) / IMAGE_REWARD_STD).squeeze(-1)
