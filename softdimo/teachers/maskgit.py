"""The `maskgit` teacher: Halton-MaskGIT v1.0 (Besnier & Chen, arXiv 2310.14400), class-conditional
ImageNet 256x256, the teacher of Di[M]O's ImageNet experiments (arXiv 2503.15457).

Token layout: 256 positions x 1 group x 1024 VQGAN codes, mask id 1024. The network is our
`MaskGITTransformer` (`maskgit_transformer.py`), the tokenizer our taming VQGAN (`vqgan.py`); both
load the released files strictly (`MaskGIT_ImageNet_256.pth` entry `model_state_dict`; the VQGAN
Lightning `last.ckpt` entry `state_dict`, whose training-only `loss.*` tensors are set aside).
Soft embeddings are p E over the codebook rows of the transformer's token table (exact: the
lookup is linear); `decode_soft` feeds the expected codebook vectors p C to the decoder (a
relaxation: the decoder is nonlinear). Images are [0, 1] here and [-1, 1] inside the VQGAN.

The sampler is the released one (`MaskGIT.sample` of valeoai/Halton-MaskGIT v1.0, vendored
unchanged in function by yuanzhi-zhu/DiMO): a fixed unmasking schedule, draws from all C + 1
classes, confidence log p + annealed Gumbel noise, CFG ramped linearly over the steps.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from softdimo.params import param
from softdimo.teachers.base import Condition, ImageNoise, TokenLayout, guided_logits
from softdimo.teachers.class_conditioned import ClassConditioned
from softdimo.teachers.maskgit_transformer import MaskGITArch, MaskGITTransformer
from softdimo.teachers.vqgan import VQGAN, VQGANArch
from softdimo.teachers.weights import load_strict, read_state_dict

SIZES = ("full", "tiny")
SCHEDULES = ("arccos", "cosine", "linear", "square", "root")
RANDOMIZE = ("linear", "warm_up", "random", "none")
TRAINING_ONLY_PREFIX = "loss."     # the VQGAN checkpoint's LPIPS and discriminator (not used)

#----------------------------------------------------------------------------
# Configuration.


# Configuration of the MaskGIT teacher (grid keys `teacher.*`).
@dataclass(frozen=True)
class MaskGITConfig:
    size: str = param("full", choices=SIZES,
                      help="full: the released architecture; tiny: the parity-fixture size (tests)")
    transformer_weights: str = param("", help="asset name, or a file path (absolute or relative to the asset "
                                     "root); empty = maskgit_imagenet256 (tiny: random)")
    vqgan_weights: str = param("", help="asset name or file path; empty = maskgit_vqgan_f16_1024 (tiny: random)")
    real_tokens: str = param("", help="asset name or path of a safetensors file of real tokens [N,256,1] and "
                             "labels [N] (GAN real branch); empty = none")
    init_seed: int = param(0, lo=0, help="seed of the random weights of a tiny teacher without files")
    schedule: str = param("arccos", choices=SCHEDULES, help="sampler's unmasking schedule (released: arccos)")
    randomize: str = param("linear", choices=RANDOMIZE,
                           help="sampler's confidence noise (released: linear = Gumbel annealed to 0)")
    softmax_temperature: float = param(1.0, lo=1e-6, help="upstream `sm_temp` of the sampler: multiplies "
                                       "its logits, on top of sample.temperature (which divides them)")


# The transformer architecture of a size.
def transformer_arch(size: str) -> MaskGITArch:
    if size == "full":
        return MaskGITArch()
    if size == "tiny":
        return MaskGITArch(codebook_size=16, num_classes=10, grid=4, image_size=8, hidden=32, depth=2,
                           heads=4, mlp=64)
    raise ValueError(f"unknown MaskGIT size {size!r}; allowed: {', '.join(SIZES)}")


# The VQGAN architecture of a size.
def vqgan_arch(size: str) -> VQGANArch:
    if size == "full":
        return VQGANArch()
    if size == "tiny":
        return VQGANArch(codebook_size=16, embed_dim=6, z_channels=8, hidden=32, channel_mult=(2, 1),
                         num_res_blocks=1, attn_resolutions=(4,), resolution=8)
    raise ValueError(f"unknown MaskGIT size {size!r}; allowed: {', '.join(SIZES)}")


#----------------------------------------------------------------------------
# Released sampler settings.


# One published setting of the sampler, in upstream's terms: guidance w (final CFG weight 1 + w;
# `sample.cfg`), softmax temperature (multiplies the logits; `teacher.softmax_temperature`), Gumbel
# temperature of the confidences (`sample.choice_temperature`).
@dataclass(frozen=True)
class SamplerSettings:
    steps: int
    guidance: float
    softmax_temperature: float
    gumbel_temperature: float
    source: str

    @property
    def cfg(self) -> float:            # the harness's CFG weight at the last step
        return 1.0 + self.guidance


RELEASED_SAMPLERS: dict[str, SamplerSettings] = {
    # Di[M]O's teacher numbers: the defaults of its vendored MaskGit_src/sample.py, whose
    # `samples_50000_{K}` outputs its evaluate.sh scores (inferred; the paper gives no settings).
    "dimo_teacher": SamplerSettings(8, 4.5, 1.3, 7.0, "DiMO MaskGit_src/sample.py defaults"),
    # Halton-MaskGIT v1.0 README, ImageNet 256: FID 6.80, IS 214.0.
    "halton_readme": SamplerSettings(8, 3.0, 1.0, 4.5, "Halton-MaskGIT v1.0 README"),
    # Di[M]O's in-training teacher validation (configs/DIMO_MaskGit.yaml `sampling`).
    "dimo_validation": SamplerSettings(12, 3.0, 1.0, 4.5, "DiMO configs/DIMO_MaskGit.yaml"),
}


#----------------------------------------------------------------------------
# Sampling (Halton-MaskGIT v1.0 `MaskGIT.sample`).


# Tokens unmasked at each of `steps` steps: gamma(r) on r = linspace(1, 0, steps) normalised to
# `positions`, rounded, zeros raised to 1 and the last step absorbing the remainder (upstream's
# `adap_sche`, in float32 as upstream); one step unmasks everything.
def unmask_schedule(steps: int, mode: str, positions: int) -> list[int]:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps == 1:
        return [positions]
    r = torch.linspace(1, 0, steps)
    ratios = {"root": 1 - r ** 0.5, "linear": 1 - r, "square": 1 - r ** 2,
              "cosine": torch.cos(r * math.pi * 0.5), "arccos": torch.arccos(r) / (math.pi * 0.5)}
    if mode not in ratios:
        raise ValueError(f"unknown unmasking schedule {mode!r}; allowed: {', '.join(SCHEDULES)}")
    counts = (ratios[mode] / ratios[mode].sum() * positions).round()
    counts[counts == 0] = 1
    counts[-1] += positions - counts.sum()
    return [int(c) for c in counts]


# MaskGIT's K-step sampler from an all-masked grid. Step i of T (ratio i/(T-1), 0 when T = 1):
# logits over all C + 1 classes guided with w_i = 1 + (cfg - 1) ratio, a draw from
# softmax(z / temperature) per position, confidence log p(draw) + choice_temperature (1 - ratio)
# Gumbel ("linear"; "warm_up": uniform for the first two steps; "random": uniform; "none": log p),
# and the `unmask_schedule` count of still-masked positions with the highest confidence take
# their draw. A draw of the mask class C stays a mask token that is never predicted again, and
# the result is clamped to [0, C-1] (both as upstream). `trace` receives the tokens after each step.
@torch.no_grad()
def maskgit_sample(network: MaskGITTransformer, cond: Condition, steps: int, cfg: float, noise: ImageNoise,
                   temperature: float = 1.0, choice_temperature: float = 0.0, schedule: str = "arccos",
                   randomize: str = "linear", trace: list[Tensor] | None = None) -> Tensor:
    layout: TokenLayout = network.layout
    if randomize not in RANDOMIZE:
        raise ValueError(f"unknown randomize {randomize!r}; allowed: {', '.join(RANDOMIZE)}")
    b, n, c = len(noise), layout.positions, layout.classes
    if cond.batch_size != b:
        raise ValueError(f"{cond.batch_size} conditions for {b} noise streams")
    full_head = functools.partial(network, with_mask_class=True)
    tokens = torch.full((b, n, 1), layout.mask_id, dtype=torch.long, device=noise.device)
    masked = torch.ones(b, n, dtype=torch.bool, device=noise.device)
    remaining = n
    for i, count in enumerate(unmask_schedule(steps, schedule, n)):
        if remaining == 0:
            break
        ratio = i / (steps - 1) if steps > 1 else 0.0
        logits = guided_logits(full_head, network.embed(tokens), cond, 1.0 + (cfg - 1.0) * ratio).logits
        logp = F.log_softmax(logits[:, :, 0].float() / temperature, dim=-1)     # [B, L, C+1]
        draw = (logp + noise.gumbel(n, c + 1)).argmax(-1)
        conf = logp.gather(-1, draw[..., None])[..., 0]
        if randomize == "linear":
            conf = conf + choice_temperature * (1.0 - ratio) * noise.gumbel(n)
        elif randomize == "random" or (randomize == "warm_up" and i < 2):
            conf = noise.rand(n)
        conf = conf.masked_fill(~masked, -math.inf)
        k = min(count, remaining)
        chosen = torch.zeros_like(masked).scatter_(1, conf.topk(k, dim=1).indices, True)
        tokens = torch.where(chosen[..., None], draw[..., None], tokens)
        masked &= ~chosen
        remaining -= k
        if trace is not None:
            trace.append(tokens.clone())
    return tokens.clamp(0, c - 1)


#----------------------------------------------------------------------------
# The teacher.


# MaskGIT as a `Teacher`: frozen transformer, VQGAN (decoder and encoder), class conditions with
# the null class `num_classes` (`ClassConditioned`), the released sampler, and optionally tokenised
# real images.
class MaskGITTeacher(ClassConditioned):
    name = "maskgit"
    condition_kind = "class"

    def __init__(self, config: MaskGITConfig, network: MaskGITTransformer, vqgan: VQGAN,
                 real_tokens_path: Path | None = None, info: dict[str, Any] | None = None):
        if vqgan.arch.codebook_size != network.arch.codebook_size or vqgan.arch.grid != network.arch.grid:
            raise ValueError(f"VQGAN ({vqgan.arch.codebook_size} codes, {vqgan.arch.grid}x{vqgan.arch.grid}) "
                             f"does not match the transformer ({network.arch.codebook_size} codes, "
                             f"{network.arch.grid}x{network.arch.grid})")
        self.config = config
        self.network = network.eval().requires_grad_(False)
        self.vqgan = vqgan.eval().requires_grad_(False)
        self.layout = network.layout
        self.num_classes = network.arch.num_classes
        self.real_tokens_path = real_tokens_path
        self.info = dict(info or {})

    @property
    def device(self) -> torch.device:
        return self.network.tok_emb.weight.device

    # Move the transformer and the VQGAN (e.g. to the job's accelerator).
    def to(self, device: torch.device | str) -> "MaskGITTeacher":
        self.network.to(device)
        self.vqgan.to(device)
        return self

    # Hard tokens [B, L, 1] -> images [B, 3, H, W] in [0, 1]; mask ids decode as code C-1 (the
    # released code clamps to [0, C-1] before decoding).
    def decode(self, tokens: Tensor, cond: Condition | None = None) -> Tensor:
        codes = tokens[..., 0].clamp(0, self.layout.classes - 1)
        return _to_unit(self.vqgan.decode(self.vqgan.codes_to_latent(codes)))

    # Code distributions [B, L, 1, C] -> images: the expected codebook vectors p C fed to the
    # decoder (a relaxation: the decoder is nonlinear). Differentiable in `probs`.
    def decode_soft(self, probs: Tensor, cond: Condition | None = None) -> Tensor:
        return _to_unit(self.vqgan.decode(self.vqgan.probs_to_latent(probs[..., 0, :])))

    # Images [B, 3, H, W] in [0, 1] -> hard tokens [B, L, 1] (the VQGAN's encoder and codebook).
    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        dtype = self.vqgan.encoder.conv_in.weight.dtype
        _, codes = self.vqgan.encode(images.to(self.device, dtype) * 2.0 - 1.0)
        return codes.flatten(1)[..., None]

    # The released sampler (see `maskgit_sample`) with this teacher's schedule, randomisation and
    # softmax temperature (upstream sm_temp; the effective temperature is temperature / sm_temp).
    def sample(self, cond: Condition, steps: int, cfg: float, noise: ImageNoise,
               temperature: float = 1.0, choice_temperature: float = 0.0) -> Tensor:
        return maskgit_sample(self.network, cond.to(self.device), steps, cfg, noise,
                              temperature / self.config.softmax_temperature, choice_temperature,
                              self.config.schedule, self.config.randomize)


def _to_unit(images: Tensor) -> Tensor:
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0)


#----------------------------------------------------------------------------
# Building and loading.


# The transformer of `arch` from a released `MaskGIT_ImageNet_256.pth` (its `model_state_dict`),
# or from a flat state dict / safetensors export, strictly loaded.
def load_transformer(path: str | Path, arch: MaskGITArch) -> MaskGITTransformer:
    state = read_state_dict(path, "MaskGIT transformer", key="model_state_dict")
    with torch.device("meta"):
        network = MaskGITTransformer(arch)
    load_strict(network, state, f"MaskGIT transformer file {path}", assign=True)
    return network


# The VQGAN of `arch` from the released Lightning `last.ckpt` (its `state_dict`, less the
# training-only `loss.*` tensors), or from a flat state dict / safetensors export, strictly loaded.
def load_vqgan(path: str | Path, arch: VQGANArch) -> VQGAN:
    state = read_state_dict(path, "MaskGIT VQGAN", key="state_dict")
    state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIX)}
    with torch.device("meta"):
        vqgan = VQGAN(arch)
    load_strict(vqgan, state, f"MaskGIT VQGAN file {path}", assign=True)
    return vqgan


# Seeded random transformer and VQGAN of a configuration (tiny teachers without weight files).
def random_modules(config: MaskGITConfig) -> tuple[MaskGITTransformer, VQGAN]:
    with torch.random.fork_rng(devices=[]):        # PyTorch's default initialisation, seeded
        torch.manual_seed(config.init_seed)
        network = MaskGITTransformer(transformer_arch(config.size))
        vqgan = VQGAN(vqgan_arch(config.size))
    return network, vqgan


# A MaskGIT teacher from weight files (None: seeded random weights, tiny size only).
def build_maskgit_teacher(config: MaskGITConfig, transformer_path: str | Path | None,
                          vqgan_path: str | Path | None, real_tokens_path: str | Path | None = None,
                          device: torch.device | str = "cpu") -> MaskGITTeacher:
    if transformer_path is None or vqgan_path is None:
        if config.size != "tiny":
            raise ValueError("a full-size MaskGIT teacher needs transformer and VQGAN weight files")
        network, vqgan = random_modules(config)
    if transformer_path is not None:
        network = load_transformer(transformer_path, transformer_arch(config.size))
    if vqgan_path is not None:
        vqgan = load_vqgan(vqgan_path, vqgan_arch(config.size))
    info = {"size": config.size,
            "transformer": str(transformer_path) if transformer_path else f"random(seed={config.init_seed})",
            "vqgan": str(vqgan_path) if vqgan_path else f"random(seed={config.init_seed})",
            "transformer_params": sum(p.numel() for p in network.parameters()),
            "vqgan_params": sum(p.numel() for p in vqgan.parameters())}
    teacher = MaskGITTeacher(config, network, vqgan, Path(real_tokens_path) if real_tokens_path else None, info)
    return teacher.to(device)
