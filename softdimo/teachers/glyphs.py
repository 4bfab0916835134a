"""The `glyphs` teacher: a class-conditional MaskGIT over the codes of a learned VQ tokenizer of the
procedural glyphs world (softdimo/data/glyphs.py), the mini-scale analogue of a VQGAN-based
ImageNet teacher (MaskGIT, MaskBit).

Two models, each trained here once per configuration and cached under its content hash:
- the tokenizer (softdimo/teachers/small_vq.py): 32x32 RGB images <-> an 8x8 grid of codes from a
  learned codebook of `teacher.codebook_size` vectors, with a learned convolutional decoder. The
  training split's tokens (the GAN's real data and the reference rungs') are cached with it;
- the MDM (a SmallMDM, softdimo/teachers/small_mdm.py) trained by MaskGIT's masked cross-entropy
  on those tokens, the class as a prefix token with label dropout for CFG.

`decode_soft(p)` feeds the expected codebook vectors sum_j p_j c_j to the learned decoder (as the
paper-scale VQGAN teachers do): it is the decoder's image of a soft token, exact on one-hot p.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from softdimo.data import glyphs as data
from softdimo.params import param
from softdimo.teachers.base import Condition, ImageNoise, TokenLayout
from softdimo.teachers.cache import cached_network, network_entry
from softdimo.teachers.class_conditioned import ClassConditioned, save_real_tokens, tokenize_images
from softdimo.teachers.small_mdm import (ClassPrefix, SmallMDM, SmallMDMConfig, encode_labels, maskgit_sample,
                                         train_mdm)
from softdimo.teachers.small_vq import SmallVQ, SmallVQArch, VQTrainSettings, train_vq

TOKENIZER_VERSION = f"glyphs-tokenizer-1/{data.WORLD_VERSION}"   # bump when tokenizer training changes
CODE_VERSION = "glyphs-teacher-1"          # bump when MDM training changes what a config produces
GRID = data.SIDE // 4                      # tokens per side (one per 4x4-pixel patch)

#----------------------------------------------------------------------------


# Configuration of the glyphs world (grid keys `teacher.*`): the tokenizer's fields, and the MDM's
# (the mini teachers' shared ones, `SmallMDMConfig`, trained 2,000 steps here).
@dataclass(frozen=True)
class GlyphsConfig(SmallMDMConfig):
    codebook_size: int = param(128, lo=2, help="codes in the tokenizer's learned codebook (C)")
    latent_dim: int = param(16, lo=1, help="dimension of a codebook vector")
    tokenizer_channels: int = param(24, lo=2, help="tokenizer width (half of it at full resolution; even)")
    tokenizer_steps: int = param(800, lo=1, help="tokenizer training steps (batch 64)")
    tokenizer_lr: float = param(2e-3, lo=0.0, help="tokenizer Adam peak learning rate")
    tokenizer_seed: int = param(0, lo=0, help="tokenizer training seed")
    train_steps: int = param(2000, lo=1, help="MDM MaskGIT training steps")


# The tokenizer's part of a configuration (what its cache key hashes).
@dataclass(frozen=True)
class TokenizerConfig:
    codebook_size: int
    latent_dim: int
    channels: int
    steps: int
    lr: float
    seed: int
    batch_size: int = 64
    warmup_steps: int = 50


def tokenizer_config(config: GlyphsConfig) -> TokenizerConfig:
    if config.tokenizer_channels % 2:
        raise ValueError(f"teacher.tokenizer_channels must be even, got {config.tokenizer_channels}")
    return TokenizerConfig(config.codebook_size, config.latent_dim, config.tokenizer_channels,
                           config.tokenizer_steps, config.tokenizer_lr, config.tokenizer_seed)


def _new_tokenizer(config: TokenizerConfig) -> SmallVQ:
    torch.manual_seed(config.seed)
    return SmallVQ(SmallVQArch(image_channels=3, channels=config.channels, latent_dim=config.latent_dim,
                               codebook_size=config.codebook_size))


# Train the tokenizer on the training split; returns it and its per-step log.
def train_tokenizer(config: TokenizerConfig, log: Callable[[str], None] = lambda s: None
                    ) -> tuple[SmallVQ, list[dict]]:
    vq = _new_tokenizer(config)
    images, _ = data.load_split("train")

    def batches(step: int, g: torch.Generator) -> Tensor:
        return images[torch.randint(images.shape[0], (config.batch_size,), generator=g)].float() / 255

    settings = VQTrainSettings(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                               warmup_steps=config.warmup_steps)
    return vq, train_vq(vq, batches, settings, seed=config.seed, log=log)


# A trained tokenizer with its cache directory (weights, training log, the splits' tokens).
@dataclass
class CachedTokenizer:
    vq: SmallVQ
    directory: Path
    info: dict[str, Any]

    @property
    def real_tokens_path(self) -> Path:
        return self.directory / "train_tokens.safetensors"


# Beside a freshly trained tokenizer's weights in its cache entry: the training split's tokens, and
# its reconstruction error and codes in use on the test split (for the entry's summary).
def _tokenize_splits(vq: SmallVQ, directory: Path) -> dict[str, Any]:
    world = _TokenizerOnly(vq)
    train_images, train_labels = data.split_images("train")
    save_real_tokens(directory / "train_tokens.safetensors", tokenize_images(world, train_images, 500),
                     train_labels.tolist())
    test_images, _ = data.split_images("test")
    test_tokens = tokenize_images(world, test_images, 500)
    with torch.no_grad():
        recon_mse = ((world.decode(test_tokens) - test_images) ** 2).mean().item()
    return {"test_recon_mse": recon_mse, "test_codes_used": int(test_tokens.unique().numel())}


# The cached tokenizer of a configuration, trained on first use (under a file lock); the cache also
# holds the training split's tokens and the tokenizer's reconstruction error on the test split.
def build_tokenizer(config: TokenizerConfig, cache_root: Path,
                    log: Callable[[str], None] = lambda s: None) -> CachedTokenizer:
    vq, info = cached_network("glyphs-tokenizer", config, TOKENIZER_VERSION, cache_root, train_tokenizer,
                              _new_tokenizer, log, extra=_tokenize_splits)
    return CachedTokenizer(vq.eval().requires_grad_(False), Path(info["cache_dir"]), info)


#----------------------------------------------------------------------------
# The world (tokenizer, conditions, real data) and the teacher (the world plus the MDM).


class _TokenizerOnly:
    # Encode / decode through a tokenizer (token tensors [B, L, 1] <-> images [B, 3, 32, 32]).
    vq: SmallVQ

    def __init__(self, vq: SmallVQ):
        self.vq = vq

    @property
    def device(self) -> torch.device:
        return self.vq.codebook.device

    # Images [B, 3, 32, 32] in [0, 1] -> tokens [B, 64, 1] (the encoder and the nearest codes).
    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        return self.vq.encode(images.to(self.device)).flatten(1)[..., None]

    # Hard tokens [B, 64, 1] -> images in [0, 1]; mask ids decode as the last code (clamped).
    def decode(self, tokens: Tensor, cond: Condition | None = None) -> Tensor:
        codes = tokens[..., 0].clamp(0, self.vq.arch.codebook_size - 1).view(-1, GRID, GRID)
        return self.vq.decode(self.vq.codes_to_latent(codes)).clamp(0.0, 1.0)

    # Code distributions [B, 64, 1, C] -> the decoder's image of the expected codebook vectors
    # sum_j p_j c_j, clamped to [0, 1]; differentiable in `probs`, equal to `decode` on one-hot p.
    def decode_soft(self, probs: Tensor, cond: Condition | None = None) -> Tensor:
        p = probs[..., 0, :].reshape(-1, GRID, GRID, probs.shape[-1])
        return self.vq.decode(self.vq.probs_to_latent(p)).clamp(0.0, 1.0)


# The glyphs world without the MDM: token layout, conditions, tokenizer, real training tokens.
# Reference rungs (real tokens, marginals) need only this, so they never train an MDM.
class GlyphsWorld(_TokenizerOnly, ClassConditioned):
    name = "glyphs"
    condition_kind = "class"
    num_classes = data.NUM_CLASSES

    def __init__(self, config: GlyphsConfig, tokenizer: CachedTokenizer):
        super().__init__(tokenizer.vq)
        self.config = config
        self.layout = glyphs_layout(config)
        self.real_tokens_path = tokenizer.real_tokens_path
        self.info: dict[str, Any] = {"tokenizer": tokenizer.info}


# A trained glyphs MDM in its world: adds the frozen network and the MaskGIT sampler (`Teacher`).
class GlyphsTeacher(GlyphsWorld):
    def __init__(self, config: GlyphsConfig, tokenizer: CachedTokenizer, network: SmallMDM,
                 info: dict[str, Any]):
        super().__init__(config, tokenizer)
        self.network = network.eval().requires_grad_(False)
        self.info = {**info, "tokenizer": tokenizer.info}

    def sample(self, cond: Condition, steps: int, cfg: float, noise: ImageNoise,
               temperature: float = 1.0, choice_temperature: float = 0.0) -> Tensor:
        return maskgit_sample(self.network, cond, steps, cfg, noise, temperature, choice_temperature)


# 64 positions (8x8), one slot each, C = codebook size, mask id C, 3x32x32 images.
def glyphs_layout(config: GlyphsConfig) -> TokenLayout:
    return TokenLayout(positions=GRID * GRID, groups=1, classes=config.codebook_size,
                       mask_id=config.codebook_size, image_shape=(3, data.SIDE, data.SIDE))


# A freshly initialised glyphs MDM for a configuration (seeded by `config.seed`).
def new_network(config: GlyphsConfig) -> SmallMDM:
    torch.manual_seed(config.seed)
    return SmallMDM(glyphs_layout(config), config.arch((GRID, GRID)), ClassPrefix(data.NUM_CLASSES, config.d_model))


# Train the MDM from scratch on the tokenizer's tokens of the training split.
def train_teacher(config: GlyphsConfig, real_tokens: tuple[Tensor, list[Any]],
                  log: Callable[[str], None] = lambda s: None) -> tuple[SmallMDM, list[dict]]:
    network = new_network(config)
    tokens, raw_labels = real_tokens
    labels = torch.as_tensor(raw_labels)

    def batches(step: int, g: torch.Generator) -> tuple[Tensor, list]:
        idx = torch.randint(tokens.shape[0], (config.batch_size,), generator=g)
        return tokens[idx], labels[idx].tolist()

    return network, train_mdm(network, batches, encode_labels, config.train_settings(), seed=config.seed, log=log)


# The cache entry (under the cache root) that holds the trained MDM of a configuration.
def cache_entry(config: GlyphsConfig) -> str:
    return network_entry("glyphs", config, CODE_VERSION)


# The world of a configuration: its cached tokenizer (trained on first use), no MDM.
def build_glyphs_world(config: GlyphsConfig, cache_root: Path,
                       log: Callable[[str], None] = lambda s: None) -> GlyphsWorld:
    return GlyphsWorld(config, build_tokenizer(tokenizer_config(config), cache_root, log))


# The cached teacher of a configuration: the tokenizer, then the MDM, each trained on first use.
# The MDM's cache key covers the whole configuration (so it changes with the tokenizer's).
def build_glyphs_teacher(config: GlyphsConfig, cache_root: Path,
                         log: Callable[[str], None] = lambda s: None) -> GlyphsTeacher:
    tokenizer = build_tokenizer(tokenizer_config(config), cache_root, log)

    def train(cfg: GlyphsConfig, train_log: Callable[[str], None]) -> tuple[SmallMDM, list[dict]]:
        return train_teacher(cfg, GlyphsWorld(cfg, tokenizer).real_tokens(), train_log)

    network, info = cached_network("glyphs", config, CODE_VERSION, cache_root, train, new_network, log)
    return GlyphsTeacher(config, tokenizer, network, info)
