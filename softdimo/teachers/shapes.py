"""The `shapes` teacher: a text-conditioned MaskGIT over the layout tokens of the shapes world
(mini-scale text-to-image; softdimo/data/shapes.py).

The prompt's words enter as prefix tokens (`TextPrefix`); prompt dropout to the all-<null> prompt
trains the unconditional branch for CFG. The fixed renderer is the tokenizer decoder: `decode`
renders hard layout tokens and `decode_soft` is the expected rendering sum_j p_j patch_j, exactly
the soft path of Soft-Di[M]O. Training data are fresh scenes every step (unlimited); the network
is trained once per (configuration, seed) and cached under its content hash with its log.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from softdimo.data import shapes as world
from softdimo.params import param
from softdimo.teachers.base import Condition, ImageNoise, TokenLayout
from softdimo.teachers.cache import cached_network, network_entry
from softdimo.teachers.small_mdm import SmallMDM, SmallMDMConfig, TextPrefix, maskgit_sample, train_mdm

CODE_VERSION = f"shapes-teacher-1/{world.WORLD_VERSION}"  # bump when training changes its output
REAL_SCENES = 5000          # size of the fixed "real" set (GAN real branch)
REAL_SEED = 20250901        # seed of that set

#----------------------------------------------------------------------------


# Configuration of the shapes teacher (grid keys `teacher.*`).
@dataclass(frozen=True)
class ShapesConfig(SmallMDMConfig):
    train_steps: int = param(3000, lo=1, help="MaskGIT training steps (fresh scenes each step)")
    loss_positions: str = param("all", choices=("masked", "all"),
                                help="slots in the loss: masked only, or all (visible ones predict themselves)")


# Prompts as a text `Condition` (word ids [B, PROMPT_LEN]).
def encode_prompts(raw: Sequence[Any]) -> Condition:
    prompts = [str(r) for r in raw]
    return Condition("text", {"tokens": world.tokenize(prompts)}, prompts)


def _seed_from(generator: torch.Generator) -> int:
    return int(torch.randint(2 ** 62, (1,), generator=generator, device=generator.device))


@lru_cache(maxsize=1)
def _real_set() -> tuple[Tensor, tuple[str, ...]]:
    tokens, prompts = world.sample_batch(REAL_SCENES, REAL_SEED)
    return tokens[..., None], tuple(prompts)


# A trained shapes MDM with its renderer, prompts and sampler (implements `Teacher`).
class ShapesTeacher:
    name = "shapes"
    condition_kind = "text"

    def __init__(self, config: ShapesConfig, network: SmallMDM, info: dict[str, Any]):
        self.config = config
        self.network = network.eval().requires_grad_(False)
        self.layout = network.layout
        self.info = info

    def encode_condition(self, raw: Sequence[Any]) -> Condition:
        return encode_prompts(raw)

    # n training prompts, tasks uniform, drawn from the run's generator.
    def sample_conditions(self, n: int, generator: torch.Generator) -> list[Any]:
        return world.sample_prompts(n, _seed_from(generator))

    # The first n evaluation prompts: balanced over the six tasks, deterministic.
    def eval_conditions(self, n: int) -> list[Any]:
        return world.eval_prompts(n)

    def decode(self, tokens: Tensor, cond: Condition | None = None) -> Tensor:
        return world.render(tokens[..., 0])

    def decode_soft(self, probs: Tensor, cond: Condition | None = None) -> Tensor:
        return world.render_soft(probs[..., 0, :])

    def sample(self, cond: Condition, steps: int, cfg: float, noise: ImageNoise,
               temperature: float = 1.0, choice_temperature: float = 0.0) -> Tensor:
        return maskgit_sample(self.network, cond, steps, cfg, noise, temperature, choice_temperature)

    # A fixed set of REAL_SCENES real scenes [N, 16, 1] with their prompts.
    def real_tokens(self) -> tuple[Tensor, list[Any]]:
        tokens, prompts = _real_set()
        return tokens.clone(), list(prompts)

    # A real scene for each prompt, drawn from each image's own stream: tokens [B, 16, 1].
    def real_tokens_for(self, prompts: Sequence[str], noise: ImageNoise) -> Tensor:
        seeds = noise.randint(2 ** 62, 1)[:, 0].tolist()
        layouts = [world.sample_layout(world.parse_prompt(p), random.Random(s)) for p, s in zip(prompts, seeds)]
        return torch.tensor(layouts, dtype=torch.long, device=noise.device)[..., None]


# The token layout of the shapes world: 16 cells, 17 values, mask id 17, 16x16 RGB images.
def shapes_layout() -> TokenLayout:
    return TokenLayout(positions=world.POSITIONS, groups=1, classes=world.NUM_TOKENS,
                       mask_id=world.NUM_TOKENS, image_shape=(3, world.SIDE, world.SIDE))


# A freshly initialised shapes network for a configuration (seeded by `config.seed`).
def new_network(config: ShapesConfig) -> SmallMDM:
    torch.manual_seed(config.seed)
    prefix = TextPrefix(len(world.VOCAB), world.PROMPT_LEN, config.d_model, world.WORD_ID[world.NULL])
    return SmallMDM(shapes_layout(), config.arch((world.GRID, world.GRID)), prefix)


# Train a shapes teacher from scratch on fresh scenes; returns the network and the per-step log.
def train_teacher(config: ShapesConfig, log: Callable[[str], None] = lambda s: None
                  ) -> tuple[SmallMDM, list[dict]]:
    network = new_network(config)

    def batches(step: int, g: torch.Generator) -> tuple[Tensor, list]:
        tokens, prompts = world.sample_batch(config.batch_size, _seed_from(g))
        return tokens[..., None], prompts

    history = train_mdm(network, batches, encode_prompts, config.train_settings(config.loss_positions),
                        seed=config.seed, log=log)
    return network, history


# The cache entry (under the cache root) that holds the trained teacher of a configuration.
def cache_entry(config: ShapesConfig) -> str:
    return network_entry("shapes", config, CODE_VERSION)


# The cached teacher of a configuration, trained on first use (under a file lock).
def build_shapes_teacher(config: ShapesConfig, cache_root: Path,
                         log: Callable[[str], None] = lambda s: None) -> ShapesTeacher:
    network, info = cached_network("shapes", config, CODE_VERSION, cache_root, train_teacher, new_network, log)
    return ShapesTeacher(config, network, info)
