"""Meissonic's VQ image decoder (diffusers `VQModel` with a lookup codebook), decoder side only.

Own implementation whose `state_dict` matches the decoder part of the released `vqvae/` folder of
`MeissonFlow/Meissonic`: `quantize.embedding.weight` (8192 x 64 codebook), `post_quant_conv`
(1x1), `decoder.conv_in` (3x3), `decoder.mid_block.resnets.{0,1}` (no attention:
`mid_block_add_attention` is false), `decoder.up_blocks.{i}.resnets.{j}` (`layers_per_block` + 1
per level, `conv_shortcut` where the width changes) and `decoder.up_blocks.{i}.upsamplers.0.conv`
(nearest x2 then 3x3; every level but the last), `decoder.conv_norm_out` (GroupNorm) and
`decoder.conv_out`. ResNet blocks: GroupNorm (eps 1e-6) -> SiLU -> 3x3 conv, twice, plus the
(projected) input. Images come out in [0, 1] (unclamped here; callers clamp).

The encoder (`encoder.*`, `quant_conv.*`) is not built: distillation from Meissonic is data-free,
so nothing ever encodes an image; the loader drops exactly those keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from softdimo.teachers.weights import build_uninitialised, load_strict, read_state_dict

ENCODER_PREFIXES = ("encoder.", "quant_conv.")

#----------------------------------------------------------------------------


# Architecture of the VQ decoder (the keys of the released `vqvae/config.json`).
@dataclass(frozen=True)
class VQDecoderArch:
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512, 768)
    layers_per_block: int = 2
    latent_channels: int = 64
    codebook_size: int = 8192
    norm_groups: int = 32

    @property
    def scale_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    # Read an upstream `vqvae/config.json` (as a dict); refuses variants the released model lacks.
    @classmethod
    def from_upstream(cls, config: Mapping[str, Any]) -> "VQDecoderArch":
        wrong = {k: config.get(k) for k, v in (("norm_type", "group"), ("mid_block_add_attention", False),
                                               ("lookup_from_codebook", True), ("act_fn", "silu"))
                 if config.get(k, v) != v}
        if config.get("vq_embed_dim") not in (None, config["latent_channels"]):
            wrong["vq_embed_dim"] = config["vq_embed_dim"]
        if set(config.get("up_block_types", ["UpDecoderBlock2D"])) != {"UpDecoderBlock2D"}:
            wrong["up_block_types"] = config["up_block_types"]
        if wrong:
            raise ValueError(f"unsupported VQModel settings for the Meissonic decoder: {wrong}")
        return cls(block_out_channels=tuple(config["block_out_channels"]),
                   layers_per_block=config["layers_per_block"], latent_channels=config["latent_channels"],
                   codebook_size=config["num_vq_embeddings"], norm_groups=config["norm_num_groups"])


# Released decoder (HF `MeissonFlow/Meissonic`, vqvae/config.json) and the fixtures' tiny one.
VQ_DECODER_ARCHS: dict[str, VQDecoderArch] = {
    "full": VQDecoderArch(),
    "tiny": VQDecoderArch(block_out_channels=(8, 16, 16), layers_per_block=1, latent_channels=4,
                          codebook_size=32, norm_groups=4),
}

#----------------------------------------------------------------------------


# ResNet block (diffusers `ResnetBlock2D`, no time embedding, output scale 1).
class ResnetBlock(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, dim_in, eps=1e-6)
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, dim_out, eps=1e-6)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


# Nearest x2 upsampling then a 3x3 conv (diffusers `Upsample2D(use_conv=True)`).
class Upsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# One decoder level (`UpDecoderBlock2D`): ResNet blocks, then optionally the upsampler.
class UpBlock(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, layers: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(dim_in if i == 0 else dim_out, dim_out, groups)
                                      for i in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample(dim_out)]) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resnets:
            x = block(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


# Middle block without attention (`UNetMidBlock2D(add_attention=False)`): two ResNet blocks.
class MidBlock(nn.Module):
    def __init__(self, dim: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(dim, dim, groups), ResnetBlock(dim, dim, groups)])

    def forward(self, x: Tensor) -> Tensor:
        return self.resnets[1](self.resnets[0](x))


# Latents [B, latent_channels, h, w] -> images [B, 3, h * f, w * f] (diffusers `Decoder`).
class Decoder(nn.Module):
    def __init__(self, arch: VQDecoderArch):
        super().__init__()
        widths = list(reversed(arch.block_out_channels))
        self.conv_in = nn.Conv2d(arch.latent_channels, widths[0], 3, padding=1)
        self.mid_block = MidBlock(widths[0], arch.norm_groups)
        self.up_blocks = nn.ModuleList([
            UpBlock(widths[max(i - 1, 0)], widths[i], arch.layers_per_block + 1, arch.norm_groups,
                    upsample=i < len(widths) - 1) for i in range(len(widths))])
        self.conv_norm_out = nn.GroupNorm(arch.norm_groups, widths[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


# The codebook plus decoder; tokens are a square grid in raster order.
class VQDecoder(nn.Module):
    def __init__(self, arch: VQDecoderArch):
        super().__init__()
        self.arch = arch
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(arch.codebook_size, arch.latent_channels)
        self.post_quant_conv = nn.Conv2d(arch.latent_channels, arch.latent_channels, 1)
        self.decoder = Decoder(arch)

    # Codebook vectors [B, L, latent] -> images [B, 3, H, W] (unclamped).
    def decode_latents(self, z: Tensor) -> Tensor:
        b, length, c = z.shape
        n = int(round(length ** 0.5))
        if n * n != length:
            raise ValueError(f"{length} tokens do not form a square grid")
        z = z.transpose(1, 2).reshape(b, c, n, n)
        return self.decoder(self.post_quant_conv(z))

    # Token ids [B, L] -> images (upstream `decode(ids, force_not_quantize=True, shape=...)`).
    def decode_tokens(self, ids: Tensor) -> Tensor:
        return self.decode_latents(self.quantize.embedding(ids))

    # Token distributions [B, L, C] -> images: the expected codebook vector p @ codebook per
    # position (Soft-Di[M]O's Emb_Dec path) into the decoder.
    def decode_probs(self, probs: Tensor) -> Tensor:
        return self.decode_latents(probs @ self.quantize.embedding.weight)


# Build the decoder and strictly load a released `vqvae` file; exactly the encoder keys
# (`encoder.*`, `quant_conv.*`) are dropped, every other key must match in name and shape.
def load_vq_decoder(path: str | Path, arch: VQDecoderArch) -> VQDecoder:
    state = read_state_dict(path, "Meissonic VQ-VAE")
    state = {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIXES)}
    model = build_uninitialised(lambda: VQDecoder(arch))
    load_strict(model, state, f"Meissonic VQ-VAE: {path}")
    return model.eval().requires_grad_(False)
