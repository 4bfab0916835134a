"""Best-of-N one-step sampling, optionally with TTEO on every candidate (Soft-Di[M]O's test-time
scaling, arXiv 2509.22925), and its cost.

Candidate j of image i draws from its own stream (candidate 0 = the plain sample's stream, so N = 1
is plain sampling and the candidates of N are among those of any larger N), is optionally
TTEO-optimised (`softdimo/refine/tteo.py`), then drawn as hard tokens; every reward model of the
selection scores each candidate's hard-decoded image, and the candidate with the highest combined
score is kept (the earliest on ties; the combine rules are `softdimo/refine/selection.py`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from softdimo.refine.selection import SelectionLog, Selector, best_candidates
from softdimo.refine.tteo import optimise_embeddings
from softdimo.teachers.base import Condition, ImageNoise, Teacher
from softdimo.train import draw_tokens, input_embeddings

RewardFn = Callable[[Tensor, Condition], Tensor]

#----------------------------------------------------------------------------


# Work of one-step sampling with test-time scaling (TTS: TTEO and best-of-N), summed over images.
@dataclass
class TTSCost:
    images: int = 0
    generator_forwards: int = 0        # one-step generator evaluations (the plain sample counts 1)
    generator_backwards: int = 0       # backward passes through generator and decoder (TTEO)
    decoder_calls: int = 0             # soft decodes (TTEO) plus hard decodes scored for selection
    reward_calls: int = 0              # reward-model evaluations (TTEO objective and selection)
    seconds: float = 0.0

    # k TTEO steps on b images: each a generator forward and backward, a soft decode and a reward.
    def count_tteo(self, b: int, k: int) -> None:
        self.generator_forwards += b * k
        self.generator_backwards += b * k
        self.decoder_calls += b * k
        self.reward_calls += b * k

    def per_image(self) -> dict[str, float]:
        n = max(self.images, 1)
        return {k: v / n for k, v in asdict(self).items() if k != "images"}


# Settings of test-time scaling (the `sample.tteo_*` and `sample.best_of_n` fields).
@dataclass(frozen=True)
class TTSSettings:
    steps: int = 0                     # TTEO SGD iterations; 0 = off
    lr: float = 0.2                    # SGD learning rate (paper 0.2)
    proximity: float = 0.0             # mu of the proximity term
    best_of_n: int = 1                 # candidates per condition
    chunk: int = 500                   # images per TTEO batch (memory only)


# One candidate: input embedding from `noise`, optional TTEO, final hard draw from the same stream.
def _candidate(network: nn.Module, teacher: Teacher, cond: Condition, noise: ImageNoise, r_init: float,
               sigma_init: float, temperature: float, settings: TTSSettings, tteo_reward: RewardFn | None,
               cost: TTSCost) -> Tensor:
    e = input_embeddings(network, noise, r_init, sigma_init)
    if settings.steps > 0:
        parts = []
        for s in range(0, e.shape[0], settings.chunk):
            sl = slice(s, s + settings.chunk)
            parts.append(optimise_embeddings(network, teacher, cond.index(sl), e[sl], tteo_reward, settings.steps,
                                             settings.lr, settings.proximity, temperature))
        cost.count_tteo(e.shape[0], settings.steps)
        e = torch.cat(parts)
    with torch.no_grad():
        logits = network(e, cond).logits / temperature
    cost.generator_forwards += e.shape[0]
    return draw_tokens(logits, noise)


# Best-of-N (with optional TTEO) one-step samples for a batch of conditions -> hard tokens [B, L, G].
# With a `log`, what was chosen for each image is appended to it.
def sample_test_time(network: nn.Module, teacher: Teacher, cond: Condition, noise: ImageNoise, r_init: float,
                     sigma_init: float, temperature: float, settings: TTSSettings,
                     tteo_reward: RewardFn | None = None, select: Selector | None = None,
                     cost: TTSCost | None = None, log: SelectionLog | None = None) -> Tensor:
    if settings.steps > 0 and tteo_reward is None:
        raise ValueError("TTEO (steps > 0) needs a reward to maximise")
    if settings.best_of_n > 1 and select is None:
        raise ValueError("best-of-N (best_of_n > 1) needs a selection score")
    cost = cost if cost is not None else TTSCost()
    start = time.perf_counter()
    candidates: list[Tensor] = []
    scores: dict[str, list[Tensor]] = {}
    for j in range(settings.best_of_n):
        noise_j = noise if j == 0 else noise.fork(f"best-of-n candidate {j}")
        tokens = _candidate(network, teacher, cond, noise_j, r_init, sigma_init, temperature, settings,
                            tteo_reward, cost)
        candidates.append(tokens)
        if settings.best_of_n == 1:
            break
        with torch.no_grad():
            for name, s in select.score(teacher.decode(tokens, cond), cond).items():
                scores.setdefault(name, []).append(s)
        cost.decoder_calls += tokens.shape[0]
        cost.reward_calls += tokens.shape[0]
    best = candidates[0]
    if settings.best_of_n > 1:
        stacked = {name: torch.stack(s) for name, s in scores.items()}
        combined = select.combined(stacked)
        index = best_candidates(combined)
        best = torch.stack(candidates)[index, torch.arange(best.shape[0], device=index.device)]
        if log is not None:
            log.add(index, stacked, combined)
    cost.images += best.shape[0]
    cost.seconds += time.perf_counter() - start
    return best
