"""TTEO and best-of-N: weights untouched, reward raised, plain sampling recovered, determinism, the
selection of `sum` as the running best it always was, the choices logged."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness.contracts.entries import RunContext
from harness.methods.students import build_rewards, selector, summed_reward
from softdimo.config import SampleConfig
from softdimo.refine.best_of_n import TTSCost, TTSSettings, sample_test_time
from softdimo.refine.selection import SelectionLog, Selector
from softdimo.refine.tteo import optimise_embeddings
from softdimo.teachers.base import ImageNoise
from softdimo.teachers.digits import DigitsTeacher
from softdimo.train import generate, input_embeddings
from tests.float_tolerance import assert_parity

LABELS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 7]
R_INIT, SIGMA = 0.3, 0.1


@pytest.fixture()
def setup(tiny_teacher: DigitsTeacher, tmp_path: Path):
    generator = copy.deepcopy(tiny_teacher.network)           # a trainable copy: params require grad
    generator.requires_grad_(True)
    reward = summed_reward(build_rewards(["digits_reward"], tiny_teacher, RunContext(tmp_path, tmp_path)))
    return generator, tiny_teacher, tiny_teacher.encode_condition(LABELS), reward


def _selector(teacher: DigitsTeacher, tmp_path: Path, combine: str = "sum") -> Selector:
    sample = SampleConfig(best_of_n=2, select_reward=("digits_reward",), select_combine=combine)
    return selector(sample, teacher, RunContext(tmp_path, tmp_path))


def _soft_reward(generator, teacher, cond, e, reward) -> torch.Tensor:
    with torch.no_grad():
        return reward(teacher.decode_soft(F.softmax(generator(e, cond).logits, -1), cond), cond)


def test_tteo_leaves_weights_untouched_and_raises_the_reward(setup) -> None:
    generator, teacher, cond, reward = setup
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    e0 = input_embeddings(generator, ImageNoise(0, range(len(LABELS))), R_INIT, SIGMA)
    e = optimise_embeddings(generator, teacher, cond, e0, reward, steps=4, lr=0.2, proximity=0.0)
    assert all(torch.equal(before[k], v) for k, v in generator.state_dict().items())
    assert all(p.grad is None for p in generator.parameters())
    assert not torch.equal(e, e0)
    r0, r1 = _soft_reward(generator, teacher, cond, e0, reward), _soft_reward(generator, teacher, cond, e, reward)
    assert r1.mean() > r0.mean() + 0.1


def test_proximity_keeps_embeddings_closer(setup) -> None:
    generator, teacher, cond, reward = setup
    e0 = input_embeddings(generator, ImageNoise(1, range(len(LABELS))), R_INIT, SIGMA)
    free = optimise_embeddings(generator, teacher, cond, e0, reward, steps=4, lr=0.2, proximity=0.0)
    held = optimise_embeddings(generator, teacher, cond, e0, reward, steps=4, lr=0.2, proximity=1.0)
    assert (held - e0).norm() < 0.9 * (free - e0).norm()


def test_tteo_is_per_image(setup) -> None:
    generator, teacher, cond, reward = setup
    e0 = input_embeddings(generator, ImageNoise(2, range(len(LABELS))), R_INIT, SIGMA)
    full = optimise_embeddings(generator, teacher, cond, e0, reward, steps=2, lr=0.2, proximity=0.1)
    part = optimise_embeddings(generator, teacher, cond.index(slice(3, 6)), e0[3:6], reward, steps=2, lr=0.2,
                               proximity=0.1)
    # Another batch, other kernel paths: 2 steps, each a forward through the tiny generator (12
    # reductions, MLP over 64 units) and the digits reward (5, convolutions over 144 terms) and back.
    assert_parity(part, full[3:6], (2 * 3 * 17, 144))


def test_plain_settings_reproduce_one_step_sampling(setup) -> None:
    generator, teacher, cond, reward = setup
    noise = lambda: ImageNoise(3, range(len(LABELS)))                     # noqa: E731
    plain, _ = generate(generator, cond, noise(), R_INIT, SIGMA)
    same = sample_test_time(generator, teacher, cond, noise(), R_INIT, SIGMA, 1.0, TTSSettings())
    assert torch.equal(plain, same)


def test_best_of_n_is_monotone_and_deterministic(setup, tmp_path: Path) -> None:
    generator, teacher, cond, reward = setup
    noise = lambda: ImageNoise(4, range(len(LABELS)))                     # noqa: E731
    select = _selector(teacher, tmp_path)

    def score(n: int, steps: int = 0) -> tuple[torch.Tensor, torch.Tensor, TTSCost]:
        cost = TTSCost()
        tokens = sample_test_time(generator, teacher, cond, noise(), R_INIT, SIGMA, 1.0,
                                  TTSSettings(steps=steps, best_of_n=n, proximity=0.1), reward, select, cost)
        return tokens, reward(teacher.decode(tokens, cond), cond), cost

    t1, s1, _ = score(1)
    t4, s4, c4 = score(4)
    t4b, _, _ = score(4)
    t16, s16, _ = score(16)
    assert torch.equal(t4, t4b)
    assert (s4 >= s1).all() and (s16 >= s4).all() and s16.mean() > s1.mean()
    assert c4.generator_forwards == 4 * len(LABELS) and c4.reward_calls == 4 * len(LABELS)
    _, s4_tteo, c4_tteo = score(4, steps=2)
    assert c4_tteo.generator_forwards == 4 * 3 * len(LABELS) and c4_tteo.generator_backwards == 4 * 2 * len(LABELS)
    assert c4_tteo.images == len(LABELS) and c4_tteo.per_image()["generator_forwards"] == 12


# `sum` keeps what best-of-N always kept: the running best of the summed reward over the candidates,
# each drawn alone from its own stream, a later one replacing the best only when strictly higher.
def test_sum_selection_is_the_running_best(setup, tmp_path: Path) -> None:
    generator, teacher, cond, reward = setup
    noise = ImageNoise(5, range(len(LABELS)))
    best, best_score = None, None
    for j in range(4):
        noise_j = noise if j == 0 else noise.fork(f"best-of-n candidate {j}")
        tokens = sample_test_time(generator, teacher, cond, noise_j, R_INIT, SIGMA, 1.0, TTSSettings())
        score = reward(teacher.decode(tokens, cond), cond)
        if best is None:
            best, best_score = tokens, score
        else:
            better = score > best_score
            best = torch.where(better.view(-1, 1, 1), tokens, best)
            best_score = torch.where(better, score, best_score)
    log = SelectionLog()
    chosen = sample_test_time(generator, teacher, cond, ImageNoise(5, range(len(LABELS))), R_INIT, SIGMA, 1.0,
                              TTSSettings(best_of_n=4), select=_selector(teacher, tmp_path), log=log)
    assert torch.equal(chosen, best)
    assert torch.equal(log.tensors()["combined"], best_score) and len(set(log.tensors()["index"].tolist())) > 1


# The log holds, per image in sampling order, the candidate kept and each reward's raw score of it
# (that of the image returned). With one reward, zscore (an increasing map per condition) keeps the
# candidates sum keeps, and the kept one's standardised score is >= 0.
def test_the_selection_log_holds_the_chosen_candidates(setup, tmp_path: Path) -> None:
    generator, teacher, cond, reward = setup
    logs, chosen = {}, {}
    for combine in ("sum", "zscore"):
        logs[combine] = SelectionLog()
        for part in (slice(0, 5), slice(5, len(LABELS))):              # two batches, appended in order
            idx = range(len(LABELS))[part]
            chosen.setdefault(combine, []).append(sample_test_time(
                generator, teacher, cond.index(part), ImageNoise(6, idx), R_INIT, SIGMA, 1.0,
                TTSSettings(best_of_n=3), select=_selector(teacher, tmp_path, combine), log=logs[combine]))
    for combine, log in logs.items():
        t = log.tensors()
        assert set(t) == {"index", "combined", "digits_reward"} and t["index"].shape == (len(LABELS),)
        tokens = torch.cat(chosen[combine])
        torch.testing.assert_close(t["digits_reward"], reward(teacher.decode(tokens, cond), cond))
    assert (logs["zscore"].tensors()["combined"] >= 0).all()                 # the best of a standardised set
    assert torch.equal(logs["sum"].tensors()["index"], logs["zscore"].tensors()["index"])  # one reward: one order


def test_missing_rewards_are_refused(setup) -> None:
    generator, teacher, cond, _ = setup
    with pytest.raises(ValueError, match="needs a reward"):
        sample_test_time(generator, teacher, cond, ImageNoise(0, range(len(LABELS))), R_INIT, SIGMA, 1.0,
                         TTSSettings(steps=1))
    with pytest.raises(ValueError, match="selection score"):
        sample_test_time(generator, teacher, cond, ImageNoise(0, range(len(LABELS))), R_INIT, SIGMA, 1.0,
                         TTSSettings(best_of_n=2))
