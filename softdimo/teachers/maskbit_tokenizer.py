"""MaskBit's tokenizer (VQGAN+ with lookup-free quantisation, `ConvVQModel`), reimplemented.

Images are RGB in [0, 1]. The encoder maps 256x256 to a 16x16 grid of N-channel latents; the
lookup-free quantiser keeps their signs (+-1), and the token index is sum_c [z_c > 0] 2^c. The
decoder maps +-1 latents (or, for Soft-Di[M]O, expected bits in [-1, 1]) back to images.
Parameter and buffer names equal the released `maskbit_tokenizer_{N}bit` checkpoints, which load
strictly. Two details of the released model are reproduced on purpose (docs/maskbit.md):
- every convolution pads TF-style "same": symmetric for stride 1, and 0 before / 1 after for the
  stride-2 encoder convolutions on even inputs;
- a residual block that changes the channel count returns h + nin_shortcut(h), where h is the
  block's own output, not its input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#----------------------------------------------------------------------------


# Architecture of the tokenizer; the released ones are `TokenizerArch(bits=N)`.
@dataclass(frozen=True)
class TokenizerArch:
    bits: int = 14                                  # N: latent channels = bits per token
    hidden: int = 128                               # channels of the first stage
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # per resolution; len - 1 downsamplings
    num_res_blocks: int = 2
    image_channels: int = 3

    @property
    def downsampling(self) -> int:                  # pixels per token per side
        return 2 ** (len(self.channel_mult) - 1)


# Conv2d with TensorFlow "same" padding: total pad max((ceil(i/s)-1)s + (k-1)d + 1 - i, 0),
# split floor(total/2) before and the rest after. Stride-1 odd kernels pad symmetrically, which
# the convolution does itself; other strides pad explicitly from the input size.
class Conv2dSame(nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 bias: bool = True):
        symmetric = stride == 1 and kernel_size % 2 == 1
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=(kernel_size - 1) // 2 if symmetric else 0, bias=bias)
        self.explicit_pad = not symmetric

    def forward(self, x: Tensor) -> Tensor:
        if self.explicit_pad:
            pad_h = _same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
            pad_w = _same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


# GroupNorm with 32 groups and eps 1e-6 (the VQGAN family's normalisation).
def group_norm(channels: int) -> nn.GroupNorm:
    if channels % 32:
        raise ValueError(f"GroupNorm(32) needs a multiple of 32 channels, got {channels}")
    return nn.GroupNorm(32, channels, eps=1e-6)


# Residual block: two (GroupNorm, SiLU, 3x3 conv without bias); with a channel change the skip is
# nin_shortcut applied to the block's own output (the released model's quirk).
class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = Conv2dSame(in_channels, out_channels, 3, bias=False)
        self.norm2 = group_norm(out_channels)
        self.conv2 = Conv2dSame(out_channels, out_channels, 3, bias=False)
        if in_channels != out_channels:
            self.nin_shortcut = Conv2dSame(out_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.nin_shortcut(h) if hasattr(self, "nin_shortcut") else x)


# A stage of residual blocks (in -> out, then out -> out), optionally followed by a stride-2
# 3x3 `down_conv` (encoder) or nearest x2 upsampling and a 3x3 `upsample_conv` (decoder).
class Stage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, resample: str | None):
        super().__init__()
        self.res_blocks = nn.ModuleList(
            [ResidualBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(num_blocks)])
        self.resample = resample
        if resample == "down":
            self.down_conv = Conv2dSame(out_channels, out_channels, 3, stride=2)
        elif resample == "up":
            self.upsample_conv = Conv2dSame(out_channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.res_blocks:
            x = block(x)
        if self.resample == "down":
            x = self.down_conv(x)
        elif self.resample == "up":
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


# Encoder: conv_in, one stage per resolution (all but the last downsample), mid, norm, 1x1 conv_out.
class ConvEncoder(nn.Module):
    def __init__(self, arch: TokenizerArch):
        super().__init__()
        mult = (1,) + tuple(arch.channel_mult)
        n = len(arch.channel_mult)
        self.conv_in = Conv2dSame(arch.image_channels, arch.hidden, 3, bias=False)
        self.down = nn.ModuleList([
            Stage(arch.hidden * mult[i], arch.hidden * mult[i + 1], arch.num_res_blocks,
                  "down" if i < n - 1 else None) for i in range(n)])
        top = arch.hidden * mult[-1]
        self.mid = Stage(top, top, arch.num_res_blocks, None)
        self.norm_out = group_norm(top)
        self.conv_out = Conv2dSame(top, arch.bits, 1)

    def forward(self, images: Tensor) -> Tensor:
        x = self.conv_in(images)
        for stage in self.down:
            x = stage(x)
        return self.conv_out(F.silu(self.norm_out(self.mid(x))))


# Decoder: conv_in, mid, stages `up.0..up.{n-1}` from the coarsest resolution (all but the last
# upsample), norm, 3x3 conv_out. Returns unclamped images.
class ConvDecoder(nn.Module):
    def __init__(self, arch: TokenizerArch):
        super().__init__()
        mult = tuple(arch.channel_mult) + (arch.channel_mult[-1],)
        n = len(arch.channel_mult)
        top = arch.hidden * arch.channel_mult[-1]
        self.conv_in = Conv2dSame(arch.bits, top, 3)
        self.mid = Stage(top, top, arch.num_res_blocks, None)
        self.up = nn.ModuleList([
            Stage(arch.hidden * mult[i + 1], arch.hidden * mult[i], arch.num_res_blocks,
                  "up" if i > 0 else None) for i in reversed(range(n))])
        self.norm_out = group_norm(arch.hidden * mult[0])
        self.conv_out = Conv2dSame(arch.hidden * mult[0], arch.image_channels, 3)

    # Decode latents [B, N, h, w]; `trace` (a list) collects the output of conv_in, mid and each
    # up stage, for localising a parity failure.
    def forward(self, latent: Tensor, trace: list[Tensor] | None = None) -> Tensor:
        x = self.conv_in(latent)
        stages = [self.mid, *self.up]
        if trace is not None:
            trace.append(x)
        for stage in stages:
            x = stage(x)
            if trace is not None:
                trace.append(x)
        return self.conv_out(F.silu(self.norm_out(x)))


# Lookup-free quantiser: sign(z) in {-1, +1} per channel; index = sum_c [z_c > 0] 2^c. The
# `codebook` buffer (all 2^N sign rows) exists for strict loading of the released files.
class LookupFreeQuantizer(nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits
        powers = (2 ** torch.arange(bits)).int()
        self.register_buffer("bits_to_indices", powers)
        codes = torch.arange(2 ** bits)[:, None].int()
        self.register_buffer("codebook", ((codes & powers) != 0).float() * 2.0 - 1.0)

    # Quantise latents [B, N, h, w] -> (+-1 latents [B, N, h, w], indices [B, h, w]).
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        positive = z > 0
        quantized = positive.to(z.dtype) * 2.0 - 1.0
        indices = (positive.long() * self.bits_to_indices.long()[:, None, None]).sum(dim=1)
        return quantized, indices

    # Token indices [...] -> +-1 bits [..., N], least significant first.
    def indices_to_bits(self, indices: Tensor) -> Tensor:
        return ((indices[..., None] & self.bits_to_indices) != 0).float() * 2.0 - 1.0


# The tokenizer: encoder, decoder and quantiser under the released key names.
class MaskBitTokenizer(nn.Module):
    def __init__(self, arch: TokenizerArch):
        super().__init__()
        self.arch = arch
        self.encoder = ConvEncoder(arch)
        self.decoder = ConvDecoder(arch)
        self.quantize = LookupFreeQuantizer(arch.bits)

    # Images [B, 3, H, W] in [0, 1] -> (+-1 latents [B, N, H/f, W/f], indices [B, H/f, W/f]).
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.quantize(self.encoder(images))

    # Latents [B, N, h, w] (+-1, or expected bits in [-1, 1]) -> unclamped images.
    def decode(self, latent: Tensor) -> Tensor:
        return self.decoder(latent)

    # Raster-order indices [B, L] -> latents [B, N, sqrt(L), sqrt(L)].
    def indices_to_latent(self, indices: Tensor) -> Tensor:
        return bits_to_latent(self.quantize.indices_to_bits(indices))

    # Raster-order indices [B, L] -> unclamped images.
    def decode_tokens(self, indices: Tensor) -> Tensor:
        return self.decode(self.indices_to_latent(indices).to(self.decoder.conv_in.weight.dtype))


# Per-position bits [B, L, N] in raster order -> a square latent grid [B, N, h, w].
def bits_to_latent(bits: Tensor) -> Tensor:
    b, n, c = bits.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} token positions do not form a square grid")
    return bits.transpose(1, 2).reshape(b, c, side, side).contiguous()
