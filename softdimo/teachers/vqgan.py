"""The taming-transformers VQGAN (Esser et al., CVPR 2021) that MaskGIT tokenises with, reimplemented.

Released model: ImageNet f16 with a 1024-entry codebook (`vqgan_imagenet_f16_1024`, the
`pretrained_maskgit/VQGAN/last.ckpt` of Halton-MaskGIT v1.0; `model.yaml`: ch 128, ch_mult
[1, 1, 2, 2, 4], 2 residual blocks per level, attention at resolution 16, z_channels = embed_dim =
256). Images are in [-1, 1]; 256x256 becomes 16x16 codes. Parameter names equal the released
Lightning `state_dict` (without its training-only `loss.*` entries), so it loads strictly.

Blocks: GroupNorm(32, eps 1e-6) and swish everywhere; a residual block is
x' = skip(x) + conv2(swish(norm2(conv1(swish(norm1(x)))))) with skip = 1x1 `nin_shortcut` when the
channel count changes; attention is single-head over all positions with 1x1 q, k, v, proj_out;
downsampling pads 0 before / 1 after and convolves with stride 2; upsampling is nearest x2 then
a 3x3 convolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from softdimo.teachers.maskbit_tokenizer import bits_to_latent, group_norm  # bits_to_latent: [B, L, E] -> [B, E, h, w]

#----------------------------------------------------------------------------


# Architecture of the VQGAN; the released one is `VQGANArch()`.
@dataclass(frozen=True)
class VQGANArch:
    codebook_size: int = 1024                       # n_embed
    embed_dim: int = 256                            # codebook vector width
    z_channels: int = 256                           # encoder output / decoder input channels
    hidden: int = 128                               # ch
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # per level; len - 1 downsamplings
    num_res_blocks: int = 2                         # per encoder level (decoder: one more)
    attn_resolutions: tuple[int, ...] = (16,)       # feature-map sides that get attention
    resolution: int = 256                           # image side
    image_channels: int = 3

    @property
    def downsampling(self) -> int:                  # pixels per token per side
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def grid(self) -> int:                          # tokens per side
        return self.resolution // self.downsampling


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


# Residual block (no timestep input); dropout p = 0 as released.
class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = _conv3(cin, cout)
        self.norm2 = group_norm(cout)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = _conv3(cout, cout)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


# Single-head self-attention over the h*w positions, scale 1/sqrt(channels), residual.
class AttnBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v)[:, 0]          # [B, hw, c]
        return x + self.proj_out(a.transpose(1, 2).reshape(b, c, h, w))


# Stride-2 3x3 convolution after zero padding of 0 before and 1 after (key `conv`).
class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


# Nearest-neighbour x2 upsampling, then a 3x3 convolution (key `conv`).
class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# One resolution level: residual blocks `block.{j}`, each followed by `attn.{j}` when the level
# has attention, then an optional `downsample` or `upsample`.
class Level(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int, attention: bool, resample: str | None):
        super().__init__()
        self.block = nn.ModuleList([ResnetBlock(cin if j == 0 else cout, cout) for j in range(blocks)])
        self.attn = nn.ModuleList([AttnBlock(cout) for _ in range(blocks)] if attention else [])
        if resample == "down":
            self.downsample = Downsample(cout)
        elif resample == "up":
            self.upsample = Upsample(cout)

    def forward(self, x: Tensor) -> Tensor:
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[j](x)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


# The middle: residual block, attention, residual block.
class MidBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


# Encoder: conv_in, levels `down.{i}` (all but the last downsample), mid, norm, 3x3 conv_out.
class Encoder(nn.Module):
    def __init__(self, arch: VQGANArch):
        super().__init__()
        mult, n = (1,) + tuple(arch.channel_mult), len(arch.channel_mult)
        self.conv_in = _conv3(arch.image_channels, arch.hidden)
        self.down = nn.ModuleList([
            Level(arch.hidden * mult[i], arch.hidden * mult[i + 1], arch.num_res_blocks,
                  arch.resolution // 2 ** i in arch.attn_resolutions, "down" if i < n - 1 else None)
            for i in range(n)])
        top = arch.hidden * mult[-1]
        self.mid = MidBlock(top)
        self.norm_out = group_norm(top)
        self.conv_out = _conv3(top, arch.z_channels)

    def forward(self, images: Tensor) -> Tensor:
        x = self.conv_in(images)
        for level in self.down:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(self.mid(x))))


# Decoder: conv_in, mid, levels `up.{i}` run from the coarsest (i = n-1) to i = 0 (all but level 0
# upsample), norm, 3x3 conv_out. Returns unclamped images in about [-1, 1].
class Decoder(nn.Module):
    def __init__(self, arch: VQGANArch):
        super().__init__()
        mult, n = tuple(arch.channel_mult), len(arch.channel_mult)
        top = arch.hidden * mult[-1]
        self.conv_in = _conv3(arch.z_channels, top)
        self.mid = MidBlock(top)
        self.up = nn.ModuleList([
            Level(arch.hidden * mult[min(i + 1, n - 1)], arch.hidden * mult[i], arch.num_res_blocks + 1,
                  arch.grid * 2 ** (n - 1 - i) in arch.attn_resolutions, "up" if i > 0 else None)
            for i in range(n)])
        self.norm_out = group_norm(arch.hidden * mult[0])
        self.conv_out = _conv3(arch.hidden * mult[0], arch.image_channels)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


# The codebook (key `embedding`): nearest-vector quantisation and (expected) code lookup.
class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, embed_dim)

    # Latents [B, E, h, w] -> (nearest codebook vectors [B, E, h, w], indices [B, h, w]), by
    # squared Euclidean distance (first index on ties).
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        flat = z.permute(0, 2, 3, 1)
        table = self.embedding.weight
        d = flat.pow(2).sum(-1, keepdim=True) + table.pow(2).sum(-1) - 2.0 * flat @ table.T
        indices = d.argmin(-1)
        return self.embedding(indices).permute(0, 3, 1, 2), indices


# The VQGAN: encoder, quant_conv, codebook, post_quant_conv, decoder (released key names).
class VQGAN(nn.Module):
    def __init__(self, arch: VQGANArch):
        super().__init__()
        self.arch = arch
        self.encoder = Encoder(arch)
        self.decoder = Decoder(arch)
        self.quantize = VectorQuantizer(arch.codebook_size, arch.embed_dim)
        self.quant_conv = nn.Conv2d(arch.z_channels, arch.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(arch.embed_dim, arch.z_channels, 1)

    # Images [B, 3, H, W] in [-1, 1] -> (codebook vectors [B, E, h, w], codes [B, h, w]).
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.quantize(self.quant_conv(self.encoder(images)))

    # Codebook-space latents [B, E, h, w] -> unclamped images in about [-1, 1].
    def decode(self, latent: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(latent))

    # Codes [B, L] in [0, C), raster order -> latents [B, E, sqrt(L), sqrt(L)].
    def codes_to_latent(self, codes: Tensor) -> Tensor:
        return bits_to_latent(self.quantize.embedding(codes))

    # Code distributions [B, L, C] -> expected codebook vectors p C as latents [B, E, h, w].
    def probs_to_latent(self, probs: Tensor) -> Tensor:
        table = self.quantize.embedding.weight
        return bits_to_latent(probs.to(table.dtype) @ table)
