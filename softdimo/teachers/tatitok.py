"""TA-TiTok (text-aware 1-D tokenizer) with a VQ codebook: the image decoder of MaskGen-VQ.

Own re-implementation whose `state_dict` matches the released `TATiTok` checkpoints
(`tatitok_bl128_vq`, docs/maskgen.md): `encoder.*` (ViT, optional here), `latent_tokens`,
`decoder.*` (ViT with the text tokens appended) and `quantize.embedding.weight`. A released file
may also carry `quantize.embed_prob` (a training statistic of clustering VQ); it is accepted and
dropped. Pixels are RGB in [0, 1]; the decoder output is unclamped, callers clamp.

Decoder sequence (length 1 + g^2 + N + T): [class; g^2 mask tokens] + positions, N latents
(Linear token_size -> width, + latent positions), T text tokens (Linear text_dim -> width,
+ text positions); ln_pre, pre-LN blocks (LayerNorm eps 1e-5, exact GELU), keep the g^2 patch
slots, ln_post, 1x1 conv to p*p*3 channels, unpatchify, 3x3 conv.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softdimo.teachers.weights import build_uninitialised, load_strict, read_state_dict

# Width, depth and heads of the upstream ViT size names; `tiny` exists only for tests.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (32, 2, 4), "small": (512, 8, 8), "base": (768, 12, 12), "large": (1024, 24, 16),
}

#----------------------------------------------------------------------------


# Architecture of one TA-TiTok VQ tokenizer (the `model.vq_model` keys of the upstream config).
@dataclass(frozen=True)
class TATiTokArch:
    image_size: int = 256
    encoder_size: str = "base"
    decoder_size: str = "large"
    encoder_patch: int = 16
    decoder_patch: int = 16
    num_latent_tokens: int = 128
    token_size: int = 64
    codebook_size: int = 8192
    use_l2_norm: bool = False
    text_dim: int = 768
    text_context_length: int = 77

    # Read the upstream nested config (`config.json` / infer YAML as a dict).
    @classmethod
    def from_upstream(cls, config: Mapping[str, Any]) -> "TATiTokArch":
        vq = config["model"]["vq_model"]
        if vq.get("quantize_mode", "vq") != "vq":
            raise ValueError(f"only the VQ variant of TA-TiTok is a discrete tokenizer; got "
                             f"quantize_mode={vq['quantize_mode']!r}")
        if vq.get("is_legacy", True):
            raise ValueError("is_legacy=True TA-TiTok decoders are not supported (released "
                             "tatitok_*_vq models use is_legacy: False)")
        return cls(image_size=config["dataset"]["preprocessing"]["crop_size"],
                   encoder_size=vq["vit_enc_model_size"], decoder_size=vq["vit_dec_model_size"],
                   encoder_patch=vq["vit_enc_patch_size"], decoder_patch=vq["vit_dec_patch_size"],
                   num_latent_tokens=vq["num_latent_tokens"], token_size=vq["token_size"],
                   codebook_size=vq["codebook_size"], use_l2_norm=vq.get("use_l2_norm", False),
                   text_dim=vq.get("text_embed_dim", 768),
                   text_context_length=vq.get("text_context_length", 77))


# Released `tatitok_bl128_vq` (configs/infer/TA-TiTok/tatitok_bl128_vq.yaml) and the fixtures' tiny one.
TATITOK_ARCHS: dict[str, TATiTokArch] = {
    "bl128_vq": TATiTokArch(),
    "tiny": TATiTokArch(image_size=32, encoder_size="tiny", decoder_size="tiny", encoder_patch=8,
                        decoder_patch=8, num_latent_tokens=8, token_size=8, codebook_size=32,
                        text_dim=32, text_context_length=7),
}

#----------------------------------------------------------------------------


# Pre-LN ViT block with `nn.MultiheadAttention` (upstream `ResidualAttentionBlock`, mlp ratio 4).
class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(4 * width, width)),
        ]))

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


# [B, p*p*3, g, g] -> [B, 3, g*p, g*p] with channel index (p1*p + p2)*3 + c (upstream einops order).
class Unpatchify(nn.Module):
    def __init__(self, patch: int):
        super().__init__()
        self.patch = patch

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        p = self.patch
        return x.view(b, p, p, 3, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, 3, h * p, w * p)


# Image -> N latent vectors [B, token_size, 1, N] (upstream `TiTokEncoder`, non-legacy layout).
class TiTokEncoder(nn.Module):
    def __init__(self, arch: TATiTokArch):
        super().__init__()
        width, depth, heads = VIT_SIZES[arch.encoder_size]
        self.arch, self.width = arch, width
        self.grid = arch.image_size // arch.encoder_patch
        self.patch_embed = nn.Conv2d(3, width, arch.encoder_patch, stride=arch.encoder_patch)
        self.class_embedding = nn.Parameter(torch.zeros(1, width))
        self.positional_embedding = nn.Parameter(torch.zeros(self.grid ** 2 + 1, width))
        self.latent_token_positional_embedding = nn.Parameter(torch.zeros(arch.num_latent_tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(depth)])
        self.ln_post = nn.LayerNorm(width)
        self.conv_out = nn.Conv2d(width, arch.token_size, 1)

    def forward(self, pixels: Tensor, latent_tokens: Tensor) -> Tensor:
        b, n = pixels.shape[0], self.arch.num_latent_tokens
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(b, -1, -1), x], dim=1) + self.positional_embedding
        latents = latent_tokens.expand(b, -1, -1) + self.latent_token_positional_embedding
        x = self.ln_pre(torch.cat([x, latents], dim=1))
        for block in self.transformer:
            x = block(x)
        latents = self.ln_post(x[:, 1 + self.grid ** 2:])
        latents = self.conv_out(latents.transpose(1, 2)[..., None])    # [B, token_size, N, 1]
        return latents.reshape(b, self.arch.token_size, 1, n)


# Latents [B, token_size, 1, N] + text features [B, T, text_dim] -> image [B, 3, H, W] (unclamped).
class TATiTokDecoder(nn.Module):
    def __init__(self, arch: TATiTokArch):
        super().__init__()
        width, depth, heads = VIT_SIZES[arch.decoder_size]
        self.arch, self.width = arch, width
        self.grid = arch.image_size // arch.decoder_patch
        self.decoder_embed = nn.Linear(arch.token_size, width)
        self.class_embedding = nn.Parameter(torch.zeros(1, width))
        self.positional_embedding = nn.Parameter(torch.zeros(self.grid ** 2 + 1, width))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.latent_token_positional_embedding = nn.Parameter(torch.zeros(arch.num_latent_tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(depth)])
        self.ln_post = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Conv2d(width, arch.decoder_patch ** 2 * 3, 1), Unpatchify(arch.decoder_patch))
        self.conv_out = nn.Conv2d(3, 3, 3, padding=1)
        self.text_guidance_proj = nn.Linear(arch.text_dim, width)
        self.text_guidance_positional_embedding = nn.Parameter(torch.zeros(arch.text_context_length, width))

    def forward(self, z: Tensor, text: Tensor) -> Tensor:
        b, c, h, n = z.shape
        if h != 1 or n != self.arch.num_latent_tokens:
            raise ValueError(f"decoder expects latents [B, {self.arch.token_size}, 1, "
                             f"{self.arch.num_latent_tokens}], got {tuple(z.shape)}")
        latents = self.decoder_embed(z.reshape(b, c, n).transpose(1, 2))
        latents = latents + self.latent_token_positional_embedding[:n]
        queries = torch.cat([self.class_embedding.expand(b, -1, -1),
                             self.mask_token.expand(b, self.grid ** 2, -1)], dim=1)
        queries = queries + self.positional_embedding
        text = self.text_guidance_proj(text) + self.text_guidance_positional_embedding
        x = self.ln_pre(torch.cat([queries, latents, text], dim=1))
        for block in self.transformer:
            x = block(x)
        x = self.ln_post(x[:, 1:1 + self.grid ** 2])
        x = x.transpose(1, 2).reshape(b, self.width, self.grid, self.grid)
        return self.conv_out(self.ffn(x))


# Nearest-codebook vector quantiser (upstream `VectorQuantizer`, inference only).
class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, token_size: int, use_l2_norm: bool):
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, token_size)
        self.use_l2_norm = use_l2_norm

    # Codebook rows for ids [...] or the expected row for probability rows [..., K] (soft path).
    def codebook_entry(self, ids_or_probs: Tensor) -> Tensor:
        if ids_or_probs.dtype.is_floating_point:
            z = ids_or_probs @ self.embedding.weight
        else:
            z = self.embedding(ids_or_probs)
        return F.normalize(z, dim=-1) if self.use_l2_norm else z

    # Latents [B, C, 1, N] -> (quantised latents [B, C, 1, N], ids [B, 1, N]), in float32.
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = z.shape
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, c)
        table = self.embedding.weight
        if self.use_l2_norm:
            flat, table = F.normalize(flat, dim=-1), F.normalize(table, dim=-1)
        d = flat.pow(2).sum(1, keepdim=True) + table.pow(2).sum(1) - 2 * flat @ table.T
        ids = d.argmin(dim=1)
        zq = self.codebook_entry(ids).view(b, h, w, c).permute(0, 3, 1, 2)
        return zq, ids.view(b, h, w)


# The whole tokenizer; `with_encoder=False` builds the decoder side only (enough for a teacher).
class TATiTok(nn.Module):
    def __init__(self, arch: TATiTokArch, with_encoder: bool = True):
        super().__init__()
        for size in (arch.encoder_size, arch.decoder_size):
            if size not in VIT_SIZES:
                raise ValueError(f"unknown ViT size {size!r}; allowed: {', '.join(VIT_SIZES)}")
        self.arch = arch
        if with_encoder:
            self.encoder = TiTokEncoder(arch)
            self.latent_tokens = nn.Parameter(torch.zeros(arch.num_latent_tokens, VIT_SIZES[arch.encoder_size][0]))
        else:
            self.encoder = None
        self.decoder = TATiTokDecoder(arch)
        self.quantize = VectorQuantizer(arch.codebook_size, arch.token_size, arch.use_l2_norm)

    # Images in [0, 1] -> (quantised latents [B, C, 1, N], token ids [B, 1, N]).
    def encode(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        if self.encoder is None:
            raise RuntimeError("this TA-TiTok was built without its encoder (with_encoder=False)")
        return self.quantize(self.encoder(pixels, self.latent_tokens))

    # Latents [B, C, 1, N] and final-layer text features [B, T, text_dim] -> images (unclamped).
    def decode(self, z: Tensor, text: Tensor) -> Tensor:
        return self.decoder(z, text)

    # Token ids [B, N] -> images (upstream `decode_tokens`).
    def decode_tokens(self, ids: Tensor, text: Tensor) -> Tensor:
        return self.decode(self.quantize.codebook_entry(ids).transpose(1, 2)[:, :, None, :], text)

    # Token distributions [B, N, K] -> images: the expected codebook vector p @ C per position
    # (Soft-Di[M]O's Emb_Dec path, docs/paper.md) fed to the decoder.
    def decode_probs(self, probs: Tensor, text: Tensor) -> Tensor:
        return self.decode(self.quantize.codebook_entry(probs).transpose(1, 2)[:, :, None, :], text)


#----------------------------------------------------------------------------


# Build TA-TiTok and strictly load a released file (optional `quantize.embed_prob` dropped; the
# encoder keys dropped, and only those, when `with_encoder` is False).
def load_tatitok(path: str | Path, arch: TATiTokArch, with_encoder: bool = False) -> TATiTok:
    state = read_state_dict(path, "TA-TiTok tokenizer")
    state.pop("quantize.embed_prob", None)
    if not with_encoder:
        state = {k: v for k, v in state.items() if not (k.startswith("encoder.") or k == "latent_tokens")}
    model = build_uninitialised(lambda: TATiTok(arch, with_encoder))
    load_strict(model, state, f"TA-TiTok tokenizer: {path}")
    return model.eval().requires_grad_(False)

