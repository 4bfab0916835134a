"""The `maskbit` teacher: MaskBit (Weber et al., TMLR 2024), class-conditional ImageNet 256x256.

Token layout: 256 positions x 2 bit groups x 2^(N/2) classes, mask value 2^(N/2), for the released
bit widths N = 10..18 (docs/maskbit.md). The network is our `LFQBert`, the decoder our VQGAN+/LFQ
tokenizer; both load the released files strictly (`maskbit_generator.py`, `maskbit_tokenizer.py`).
Soft embeddings (Soft-Di[M]O Eq. 3) are expected +-1 bits per group, projected by the affine input
projection (exact) or fed to the decoder (a relaxation); a uniform group has expected bits 0, the
mask encoding, so `near_uniform_fraction` measures how often a soft token looks masked.

The sampler is MaskBit's (docs/maskbit.md, "Sampler"): arccos schedule over the 512 slots, categorical draws,
confidence = log p + annealed Gumbel noise, CFG with cosine guidance annealing. CFG weights follow
the harness convention z = z_u + w (z_c - z_u); MaskBit's guidance scale g is w - 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softdimo.params import param
from softdimo.teachers.base import Condition, ImageNoise, TokenLayout, guided_logits
from softdimo.teachers.class_conditioned import ClassConditioned
from softdimo.teachers.maskbit_generator import (MASKBIT_GENERATOR_RENAMES, LFQBert, LFQBertArch,
                                                 expected_bits, near_uniform_fraction, split_groups,
                                                 token_bits)
from softdimo.teachers.maskbit_tokenizer import (LookupFreeQuantizer, MaskBitTokenizer, TokenizerArch,
                                                 bits_to_latent)
from softdimo.teachers.weights import CheckpointError, load_strict, read_state_dict, rename_prefixes

MASKBIT_BITS = (10, 12, 14, 16, 18)
SIZES = ("full", "tiny")
GUIDANCE_ANNEALING = ("cosine", "linear", "none")

#----------------------------------------------------------------------------
# Configuration.


# Configuration of the MaskBit teacher (grid keys `teacher.*`).
@dataclass(frozen=True)
class MaskBitConfig:
    bits: int = param(14, choices=MASKBIT_BITS, help="bits per token N (two groups of N/2)")
    size: str = param("full", choices=SIZES,
                      help="full: the released architecture; tiny: the parity-fixture size (tests)")
    generator_weights: str = param("", help="asset name, or a file path (absolute or relative to the "
                                   "asset root); empty = maskbit_generator_{bits}bit (tiny: random)")
    tokenizer_weights: str = param("", help="asset name or file path; empty = maskbit_tokenizer_{bits}bit "
                                   "(tiny: random)")
    real_tokens: str = param("", help="asset name or path of a safetensors file of real tokens "
                             "[N,L,2] and labels [N] (GAN real branch); empty = none")
    init_seed: int = param(0, lo=0, help="seed of the random weights of a tiny teacher without files")
    guidance_annealing: str = param("cosine", choices=GUIDANCE_ANNEALING,
                                    help="sampler CFG schedule (released: cosine)")
    scale_pow: float = param(0.0, lo=0.0, help="exponent of the cosine guidance annealing; "
                             "0 = the released value for this bit width")


# The network architecture of a size and bit width.
def generator_arch(size: str, bits: int) -> LFQBertArch:
    if size == "full":
        return LFQBertArch(bits=bits)
    if size == "tiny":
        return LFQBertArch(bits=bits, image_size=16, input_stride=4, hidden=64, depth=2, heads=4,
                           mlp=256, num_classes=10)
    raise ValueError(f"unknown MaskBit size {size!r}; allowed: {', '.join(SIZES)}")


# The tokenizer architecture of a size and bit width.
def tokenizer_arch(size: str, bits: int) -> TokenizerArch:
    if size == "full":
        return TokenizerArch(bits=bits)
    if size == "tiny":
        return TokenizerArch(bits=bits, hidden=32, channel_mult=(1, 1, 2))
    raise ValueError(f"unknown MaskBit size {size!r}; allowed: {', '.join(SIZES)}")


#----------------------------------------------------------------------------
# The released sampler settings (configs of markweberdev/maskbit and its README's FID; docs/maskbit.md).


# One row of the released settings: MaskBit's guidance scale g (w = 1 + g), choice temperature,
# cosine-annealing exponent, and the FID the README reports for it.
@dataclass(frozen=True)
class ReleasedSampler:
    steps: int
    guidance_scale: float
    randomize_temperature: float
    scale_pow: float
    readme_fid: float

    @property
    def cfg(self) -> float:        # the harness's CFG weight w
        return 1.0 + self.guidance_scale


RELEASED_SAMPLERS: dict[tuple[int, int], ReleasedSampler] = {
    (10, 64): ReleasedSampler(64, 6.4, 10.5, 2.5, 1.68),
    (12, 64): ReleasedSampler(64, 7.1, 8.2, 3.0, 1.65),
    (14, 64): ReleasedSampler(64, 7.1, 7.8, 3.0, 1.62),
    (14, 128): ReleasedSampler(128, 7.1, 9.0, 3.0, 1.56),
    (14, 256): ReleasedSampler(256, 5.8, 10.3, 3.0, 1.52),
    (16, 64): ReleasedSampler(64, 6.5, 7.5, 2.5, 1.64),
    (18, 64): ReleasedSampler(64, 5.7, 8.5, 2.5, 1.67),
}


# The released sampler settings of a bit width and step count.
def released_sampler(bits: int, steps: int = 64) -> ReleasedSampler:
    if (bits, steps) not in RELEASED_SAMPLERS:
        rows = ", ".join(f"{b}-bit/{s} steps" for b, s in RELEASED_SAMPLERS)
        raise KeyError(f"no released MaskBit sampler settings for {bits}-bit/{steps} steps; known: {rows}")
    return RELEASED_SAMPLERS[(bits, steps)]


#----------------------------------------------------------------------------
# Sampling (markweberdev/maskbit `modeling/modules/sampling.py`; docs/maskbit.md, "Sampler").


# CFG weight w_i of step i: 1 + g * a(i) with g = cfg - 1 and a(i) = (1 - cos(pi (i/T)^scale_pow)) / 2
# (cosine), i / T (linear) or 1 (none); so w_0 = 1 under cosine annealing.
def guidance_weight(i: int, steps: int, cfg: float, annealing: str, scale_pow: float) -> float:
    if annealing == "none":
        a = 1.0
    elif annealing == "linear":
        a = i / steps
    elif annealing == "cosine":
        a = (1.0 - math.cos(math.pi * (i / steps) ** scale_pow)) / 2.0
    else:
        raise ValueError(f"unknown guidance annealing {annealing!r}; "
                         f"allowed: {', '.join(GUIDANCE_ANNEALING)}")
    return 1.0 + (cfg - 1.0) * a


# Slots re-masked after step i of T: floor(arccos((i+1)/T) / (pi/2) * slots), clamped to
# [1, n_masked - 1] where n_masked is the number masked before the step.
def remask_count(i: int, steps: int, slots: int, n_masked: int) -> int:
    ratio = math.acos(min((i + 1) / steps, 1.0)) / (math.pi / 2)
    return max(0, min(max(math.floor(ratio * slots), 1), n_masked - 1))


# MaskBit's K-step sampler from an all-masked grid. Each step draws every slot from
# softmax(z / temperature) (z guided with weight `guidance_weight`), keeps known slots, and re-masks
# the `remask_count` lowest confidences log p + choice_temperature (1 - (i+1)/T) Gumbel. The last
# step's full draw is returned. Noise comes from per-image streams; `trace` (a list) receives the
# token grid after every step.
@torch.no_grad()
def maskbit_sample(network: nn.Module, cond: Condition, steps: int, cfg: float, noise: ImageNoise,
                   temperature: float = 1.0, choice_temperature: float = 0.0,
                   annealing: str = "cosine", scale_pow: float = 3.0,
                   trace: list[Tensor] | None = None) -> Tensor:
    layout: TokenLayout = network.layout
    b, shape = len(noise), (layout.positions, layout.groups)
    if cond.batch_size != b:
        raise ValueError(f"{cond.batch_size} conditions for {b} noise streams")
    tokens = torch.full((b, *shape), layout.mask_id, dtype=torch.long, device=noise.device)
    draw = tokens
    for i in range(steps):
        masked = tokens == layout.mask_id
        w = guidance_weight(i, steps, cfg, annealing, scale_pow)
        logits = guided_logits(network, network.embed(tokens), cond, w).logits.float()
        logp = F.log_softmax(logits / temperature, dim=-1)
        draw = (logp + noise.gumbel(*shape, layout.classes)).argmax(dim=-1)
        draw = torch.where(masked, draw, tokens)
        if i == steps - 1:
            if trace is not None:
                trace.append(draw.clone())
            break
        conf = logp.gather(-1, draw[..., None])[..., 0]
        conf = conf + choice_temperature * (1.0 - (i + 1) / steps) * noise.gumbel(*shape)
        conf = torch.where(masked, conf, torch.full_like(conf, math.inf)).view(b, -1)
        k = remask_count(i, steps, layout.slots, int(masked[0].sum()))
        remask = torch.zeros_like(conf, dtype=torch.bool)
        remask.scatter_(1, conf.topk(k, dim=1, largest=False).indices, True)
        tokens = torch.where(remask.view_as(draw), torch.full_like(draw, layout.mask_id), draw)
        if trace is not None:
            trace.append(tokens.clone())
    return draw


#----------------------------------------------------------------------------
# The teacher.


# MaskBit as a `Teacher`: frozen LFQBert, tokenizer (decoder and encoder), class conditions with
# the null class `num_classes` (`ClassConditioned`), MaskBit's sampler, and optionally tokenised
# real images.
class MaskBitTeacher(ClassConditioned):
    name = "maskbit"
    condition_kind = "class"

    def __init__(self, config: MaskBitConfig, network: LFQBert, tokenizer: MaskBitTokenizer,
                 real_tokens_path: Path | None = None, info: dict[str, Any] | None = None):
        if tokenizer.arch.bits != network.arch.bits:
            raise ValueError(f"tokenizer has {tokenizer.arch.bits} bits, generator {network.arch.bits}")
        self.config = config
        self.network = network.eval().requires_grad_(False)
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.layout = network.layout
        self.num_classes = network.arch.num_classes
        self.scale_pow = config.scale_pow or released_sampler(config.bits).scale_pow
        self.real_tokens_path = real_tokens_path
        self.info = dict(info or {})

    @property
    def device(self) -> torch.device:
        return self.network.input_proj.weight.device

    # Move the network and the tokenizer (e.g. to the job's accelerator).
    def to(self, device: torch.device | str) -> "MaskBitTeacher":
        self.network.to(device)
        self.tokenizer.to(device)
        return self

    # Hard group tokens [B, L, 2] -> images [B, 3, H, W] in [0, 1] (masked groups decode as bits 0).
    def decode(self, tokens: Tensor, cond: Condition | None = None) -> Tensor:
        dtype = self.tokenizer.decoder.conv_in.weight.dtype
        return self._decode_bits(token_bits(tokens, self.network.arch.group_bits, dtype))

    # Group distributions [B, L, 2, C] -> images: the expected +-1 bits fed to the decoder (a
    # relaxation: the decoder is nonlinear). Differentiable in `probs`.
    def decode_soft(self, probs: Tensor, cond: Condition | None = None) -> Tensor:
        return self._decode_bits(expected_bits(probs.to(self.tokenizer.decoder.conv_in.weight.dtype)))

    def _decode_bits(self, bits: Tensor) -> Tensor:
        return self.tokenizer.decode(bits_to_latent(bits)).clamp(0.0, 1.0)

    # Scalars a training loop can log about generator distributions [B, L, 2, C]: the fraction of
    # groups whose expected bits are within `tol` of the mask encoding 0 (docs/maskbit.md, mask caveat).
    def soft_diagnostics(self, probs: Tensor, tol: float = 0.1) -> dict[str, float]:
        return {"near_uniform_groups": near_uniform_fraction(probs, tol)}

    # Images [B, 3, H, W] in [0, 1] -> hard group tokens [B, L, 2] (the tokenizer's encoder).
    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        dtype = self.tokenizer.encoder.conv_in.weight.dtype
        _, indices = self.tokenizer.encode(images.to(self.device, dtype))
        return split_groups(indices.flatten(1), self.network.arch.bits)

    # MaskBit's sampler (see `maskbit_sample`) with this teacher's guidance annealing.
    def sample(self, cond: Condition, steps: int, cfg: float, noise: ImageNoise,
               temperature: float = 1.0, choice_temperature: float = 0.0) -> Tensor:
        return maskbit_sample(self.network, cond.to(self.device), steps, cfg, noise, temperature,
                              choice_temperature, self.config.guidance_annealing, self.scale_pow)

    # The released sampler settings for this bit width (`sample.steps`, `sample.cfg`, ...).
    def released_sampler(self, steps: int = 64) -> ReleasedSampler:
        return released_sampler(self.config.bits, steps)


#----------------------------------------------------------------------------
# Building and loading.


# The generator of `arch` with the weights of a released (or fixture) file, strictly loaded.
def load_generator(path: str | Path, arch: LFQBertArch) -> LFQBert:
    state = rename_prefixes(read_state_dict(path), MASKBIT_GENERATOR_RENAMES, str(path))
    with torch.device("meta"):
        network = LFQBert(arch)
    load_strict(network, state, f"MaskBit generator file {path}", assign=True)
    _check_buffer(network.bits_to_indices, (2 ** torch.arange(arch.group_bits)).int(),
                  "bits_to_indices", path)
    return network


# The tokenizer of `arch` with the weights of a released (or fixture) file, strictly loaded.
def load_tokenizer(path: str | Path, arch: TokenizerArch) -> MaskBitTokenizer:
    state = read_state_dict(path)
    with torch.device("meta"):
        tokenizer = MaskBitTokenizer(arch)
    load_strict(tokenizer, state, f"MaskBit tokenizer file {path}", assign=True)
    canonical = LookupFreeQuantizer(arch.bits)
    _check_buffer(tokenizer.quantize.bits_to_indices, canonical.bits_to_indices, "quantize.bits_to_indices",
                  path)
    _check_buffer(tokenizer.quantize.codebook, canonical.codebook, "quantize.codebook", path)
    return tokenizer


def _check_buffer(value: Tensor, expected: Tensor, key: str, path: str | Path) -> None:
    if not torch.equal(value.cpu(), expected):
        raise CheckpointError(f"MaskBit file {path}: buffer {key!r} differs from the LFQ bit layout "
                              f"(least significant bit first); not a MaskBit checkpoint of this width?")


# Seeded random generator and tokenizer of a configuration (tiny teachers without weight files).
def random_modules(config: MaskBitConfig) -> tuple[LFQBert, MaskBitTokenizer]:
    g = torch.Generator().manual_seed(config.init_seed)
    network = LFQBert(generator_arch(config.size, config.bits)).init_weights(g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed + 1)
        tokenizer = MaskBitTokenizer(tokenizer_arch(config.size, config.bits))
    return network, tokenizer


# A MaskBit teacher from weight files (None: seeded random weights, tiny size only).
def build_maskbit_teacher(config: MaskBitConfig, generator_path: str | Path | None,
                          tokenizer_path: str | Path | None, real_tokens_path: str | Path | None = None,
                          device: torch.device | str = "cpu") -> MaskBitTeacher:
    if generator_path is None or tokenizer_path is None:
        if config.size != "tiny":
            raise ValueError("a full-size MaskBit teacher needs generator and tokenizer weight files")
        network, tokenizer = random_modules(config)
    if generator_path is not None:
        network = load_generator(generator_path, generator_arch(config.size, config.bits))
    if tokenizer_path is not None:
        tokenizer = load_tokenizer(tokenizer_path, tokenizer_arch(config.size, config.bits))
    info = {"bits": config.bits, "size": config.size,
            "generator": str(generator_path) if generator_path else f"random(seed={config.init_seed})",
            "tokenizer": str(tokenizer_path) if tokenizer_path else f"random(seed={config.init_seed + 1})",
            "generator_params": sum(p.numel() for p in network.parameters()),
            "tokenizer_params": sum(p.numel() for p in tokenizer.parameters())}
    teacher = MaskBitTeacher(config, network, tokenizer,
                             Path(real_tokens_path) if real_tokens_path else None, info)
    return teacher.to(device)
