"""What text-to-image teachers (MaskGen, Meissonic) share: prompts read from the files their
configuration names (`teacher.train_prompts`, `teacher.eval_prompts`), drawn for distillation and
cycled for evaluation, no real data; and, in their networks, the text encoding of the null prompt
(CFG's unconditional branch, condition dropout), kept as non-persistent buffers so that dropped
rows need no second encoding pass and deep copies of the network (theta, psi) carry it along."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from softdimo.params import param

#----------------------------------------------------------------------------


# Prompts of a text file, one per non-empty line; errors name the config key and the file.
def read_prompts(path: str, key: str) -> list[str]:
    if not path:
        raise ValueError(f"{key} is not set: give a text file with one prompt per line")
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{key}: prompt file {file} does not exist")
    prompts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{key}: prompt file {file} has no prompts")
    return prompts


# The prompt files of a text-to-image teacher's configuration (grid keys `teacher.*`).
@dataclass(frozen=True)
class PromptFiles:
    train_prompts: str = param("", help="text file, one prompt per line: distillation conditions")
    eval_prompts: str = param("", help="text file, one prompt per line: evaluation conditions")


# Mixin for a text-to-image `Teacher` with `name` and a `config` holding `PromptFiles`: the prompt
# half of the protocol (data-free: no real tokens).
class TextConditioned:
    name: str
    config: PromptFiles

    # The prompts of a batch of raw conditions, which must all be strings.
    def prompts_of(self, raw: Sequence[Any]) -> list[str]:
        prompts = list(raw)
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad:
            raise TypeError(f"{self.name} conditions are prompts (str); got {bad[:3]!r}")
        return prompts

    # The prompts of `teacher.<which>`, read once.
    def _prompt_list(self, which: str) -> list[str]:
        read = self.__dict__.setdefault("_prompts", {})
        if which not in read:
            read[which] = read_prompts(getattr(self.config, which), f"teacher.{which}")
        return read[which]

    # n distillation prompts drawn uniformly (with replacement) from `teacher.train_prompts`.
    def sample_conditions(self, n: int, generator: torch.Generator) -> list[Any]:
        prompts = self._prompt_list("train_prompts")
        idx = torch.randint(len(prompts), (n,), generator=generator, device=generator.device)
        return [prompts[i] for i in idx.tolist()]

    # The first n evaluation prompts of `teacher.eval_prompts`, cycling (prompt i mod count).
    def eval_conditions(self, n: int) -> list[Any]:
        prompts = self._prompt_list("eval_prompts")
        return [prompts[i % len(prompts)] for i in range(n)]

    # Data-free teacher: no real tokens.
    def real_tokens(self) -> tuple[Tensor, list[Any]] | None:
        return None

#----------------------------------------------------------------------------


# Mixin for a text-conditioned `nn.Module` network: the null prompt's encoding (`null_prompt` names
# it in errors) and the rows of a batch that use it. Call `_register_null_text()` in `__init__`.
class NullText:
    null_prompt: str
    null_text_seq: Tensor | None
    null_text_pooled: Tensor | None

    def _register_null_text(self) -> None:
        self.register_buffer("null_text_seq", None, persistent=False)       # type: ignore[attr-defined]
        self.register_buffer("null_text_pooled", None, persistent=False)    # type: ignore[attr-defined]

    # Store the encoding of the null prompt: seq [T, text_dim], pooled [pooled_dim].
    def set_null_condition(self, seq: Tensor, pooled: Tensor) -> None:
        self.null_text_seq = seq.detach().reshape(1, *seq.shape[-2:]).clone()
        self.null_text_pooled = pooled.detach().reshape(1, pooled.shape[-1]).clone()

    # The text features seq [B, T, text_dim] and pooled [B, pooled_dim] with the null prompt's in the
    # `drop` rows ([B] bool, or None: none).
    def with_null_text(self, seq: Tensor, pooled: Tensor, drop: Tensor | None) -> tuple[Tensor, Tensor]:
        if drop is None or not bool(drop.any()):
            return seq, pooled
        if self.null_text_seq is None or self.null_text_pooled is None:
            raise RuntimeError(f"{type(self).__name__} has no null ({self.null_prompt}) encoding; call "
                               f"set_null_condition before dropping conditions")
        seq = torch.where(drop[:, None, None], self.null_text_seq.to(seq.dtype), seq)
        pooled = torch.where(drop[:, None], self.null_text_pooled.to(pooled.dtype), pooled)
        return seq, pooled
