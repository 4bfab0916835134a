"""Best-of-N's selection rule: the scores the reward models give the N candidates of each condition,
combined into one score per candidate; the candidate with the highest combined score is kept.

- `sum`: the rewards summed in their native units (R_i / unit_i, as TTEO ascends them).
- `zscore`: each reward standardised across the N candidates of the same condition,
  z_i = (R_i - mean_N R_i) / std_N R_i (population std, in float64), then summed with equal weights.
  The paper's composite (CLIP, ImageReward, HPS, PickScore) mixes rewards on incompatible scales
  (100 x cosine, ~N(0, 1), ~20) and its weighting is not published; standardising per condition
  makes each reward count by how it ranks that condition's candidates, whatever its scale or its
  offset for that prompt. A reward that scores every candidate of a condition alike (std 0: the
  differences from the mean are exactly 0 in float64) adds 0 to each; `STD_EPS` guards the division.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from softdimo.config import COMBINES
from softdimo.teachers.base import Condition

RewardFn = Callable[[Tensor, Condition], Tensor]
STD_EPS = 1e-12

#----------------------------------------------------------------------------


# The selection score of best-of-N: reward models by name, their native-unit factors 1 / unit_i
# (`sum`) and how their scores combine (`COMBINES`).
@dataclass(frozen=True)
class Selector:
    rewards: Mapping[str, RewardFn]
    weights: Sequence[float]
    combine: str = "sum"

    def __post_init__(self) -> None:
        if self.combine not in COMBINES:
            raise ValueError(f"unknown combine {self.combine!r}; allowed: {', '.join(COMBINES)}")
        if len(self.weights) != len(self.rewards):
            raise ValueError(f"{len(self.weights)} weights for {len(self.rewards)} rewards")

    # Each reward's raw score of the images [B], by name.
    def score(self, images: Tensor, cond: Condition) -> dict[str, Tensor]:
        return {name: fn(images, cond) for name, fn in self.rewards.items()}

    # The combined score [N, B] of N candidates of B conditions from each reward's scores [N, B].
    def combined(self, scores: Mapping[str, Tensor]) -> Tensor:
        if self.combine == "zscore":
            return sum(standardised(s) for s in scores.values())
        total = None
        for s, w in zip(scores.values(), self.weights):
            total = w * s if total is None else total + w * s
        return total


# Scores [N, B] standardised over the N candidates of each condition (float64; 0 where std is 0).
def standardised(scores: Tensor) -> Tensor:
    s = scores.double()
    std, mean = torch.std_mean(s, dim=0, correction=0, keepdim=True)
    return (s - mean) / std.clamp_min(STD_EPS)


# The candidate kept per condition [B] from combined scores [N, B]: the highest, the earliest on
# ties; a score that is not a number never displaces an earlier candidate.
def best_candidates(combined: Tensor) -> Tensor:
    index = torch.zeros(combined.shape[1], dtype=torch.long, device=combined.device)
    best = combined[0]
    for j in range(1, combined.shape[0]):
        better = combined[j] > best
        index = torch.where(better, j, index)
        best = torch.where(better, combined[j], best)
    return index


# What best-of-N chose for each image, in sampling order (on the CPU): the candidate's index, each
# reward's raw score of it and its combined score.
@dataclass
class SelectionLog:
    index: list[Tensor] = field(default_factory=list)
    rewards: dict[str, list[Tensor]] = field(default_factory=dict)
    combined: list[Tensor] = field(default_factory=list)

    # Keep the chosen candidates `index` [B] of one batch, given every candidate's scores [N, B].
    def add(self, index: Tensor, scores: Mapping[str, Tensor], combined: Tensor) -> None:
        rows = torch.arange(index.shape[0], device=index.device)
        self.index.append(index.cpu())
        for name, s in scores.items():
            self.rewards.setdefault(name, []).append(s[index, rows].detach().cpu())
        self.combined.append(combined[index, rows].detach().cpu())

    # The whole log as one tensor per field: `index`, `combined` and each reward's name, [images].
    def tensors(self) -> dict[str, Tensor]:
        return {"index": torch.cat(self.index), "combined": torch.cat(self.combined),
                **{name: torch.cat(parts) for name, parts in self.rewards.items()}}
