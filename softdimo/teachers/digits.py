"""The `digits` teacher: a class-conditional MaskGIT over scikit-learn's 8x8 digits (mini scale).

Tokens are the 64 pixels quantised to `levels` intensity levels (softdimo/data/digits.py); the
"tokenizer decoder" maps a level k to the intensity k / (levels - 1), so `decode_soft` is the
expected intensity under the token distribution. The network is a SmallMDM trained once per
(configuration, seed) and cached on disk under its content hash, with its training log.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from softdimo.data import digits as data
from softdimo.params import param
from softdimo.teachers.base import Condition, ImageNoise, TokenLayout
from softdimo.teachers.cache import cached_network, network_entry
from softdimo.teachers.small_mdm import (ClassPrefix, SmallMDM, SmallMDMConfig, encode_labels, maskgit_sample,
                                         train_mdm)

CODE_VERSION = "digits-teacher-2"   # bump when training code changes what a config produces

#----------------------------------------------------------------------------


# Configuration of the digits teacher (grid keys `teacher.*`).
@dataclass(frozen=True)
class DigitsConfig(SmallMDMConfig):
    levels: int = param(4, lo=2, hi=17, help="intensity levels per pixel token")


# The digits world without a trained network: token layout, conditions, decoder, real data.
# Reference baselines (real images, marginals) need only this, so they never train a teacher.
class DigitsWorld:
    name = "digits"
    condition_kind = "class"

    def __init__(self, config: DigitsConfig):
        self.config = config
        self.layout = TokenLayout(positions=data.SIDE * data.SIDE, groups=1, classes=config.levels,
                                  mask_id=config.levels, image_shape=(1, data.SIDE, data.SIDE))
        self.levels = data.level_values(config.levels)
        self.info: dict[str, Any] = {}

    def encode_condition(self, raw: Sequence[Any]) -> Condition:
        return encode_labels(raw)

    def sample_conditions(self, n: int, generator: torch.Generator) -> list[Any]:
        return torch.randint(data.NUM_CLASSES, (n,), generator=generator, device=generator.device).tolist()

    def eval_conditions(self, n: int) -> list[Any]:
        return [i % data.NUM_CLASSES for i in range(n)]

    def decode(self, tokens: Tensor, cond: Condition | None = None) -> Tensor:
        return self.levels.to(tokens.device)[tokens[..., 0]].view(-1, 1, data.SIDE, data.SIDE)

    def decode_soft(self, probs: Tensor, cond: Condition | None = None) -> Tensor:
        return (probs[..., 0, :] @ self.levels.to(probs.device)).view(-1, 1, data.SIDE, data.SIDE)

    def real_tokens(self) -> tuple[Tensor, list[Any]]:
        tokens, labels = data.split_tokens("train", self.config.levels)
        return tokens[..., None], labels.tolist()


# A trained digits MDM in its world: adds the frozen network and the MaskGIT sampler (`Teacher`).
class DigitsTeacher(DigitsWorld):
    def __init__(self, config: DigitsConfig, network: SmallMDM, info: dict[str, Any]):
        super().__init__(config)
        self.network = network.eval().requires_grad_(False)
        self.info = info

    def sample(self, cond: Condition, steps: int, cfg: float, noise: ImageNoise,
               temperature: float = 1.0, choice_temperature: float = 0.0) -> Tensor:
        return maskgit_sample(self.network, cond, steps, cfg, noise, temperature, choice_temperature)


# A freshly initialised digits network for a configuration (seeded by `config.seed`).
def new_network(config: DigitsConfig) -> SmallMDM:
    torch.manual_seed(config.seed)
    layout = DigitsWorld(config).layout
    return SmallMDM(layout, config.arch((data.SIDE, data.SIDE)), ClassPrefix(data.NUM_CLASSES, config.d_model))


# Train a digits teacher from scratch; returns the network and the per-step log.
def train_teacher(config: DigitsConfig, log: Callable[[str], None] = lambda s: None
                  ) -> tuple[SmallMDM, list[dict]]:
    network = new_network(config)
    tokens, labels = data.split_tokens("train", config.levels)
    tokens = tokens[..., None]

    def batches(step: int, g: torch.Generator) -> tuple[Tensor, list]:
        idx = torch.randint(tokens.shape[0], (config.batch_size,), generator=g)
        return tokens[idx], labels[idx].tolist()

    history = train_mdm(network, batches, encode_labels, config.train_settings(), seed=config.seed, log=log)
    return network, history


# The cache entry (under the cache root) that holds the trained teacher of a configuration.
def cache_entry(config: DigitsConfig) -> str:
    return network_entry("digits", config, CODE_VERSION)


# The cached teacher of a configuration, trained on first use (under a file lock).
def build_digits_teacher(config: DigitsConfig, cache_root: Path,
                         log: Callable[[str], None] = lambda s: None) -> DigitsTeacher:
    network, info = cached_network("digits", config, CODE_VERSION, cache_root, train_teacher, new_network, log)
    return DigitsTeacher(config, network, info)
