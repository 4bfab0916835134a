"""Best-of-N's combine rules: zscore picks what a hand computation picks, rewards that do not separate
a condition's candidates add nothing, ties keep the earliest, sum is the native-unit sum."""
from __future__ import annotations

import statistics

import pytest
import torch

from softdimo.refine.selection import Selector, best_candidates, standardised

# Three candidates (rows) of three conditions (columns), scored by a reward on a large scale and one
# on a small scale. Condition 0: `big` prefers candidate 1, `small` candidate 2; condition 1: `big`
# scores every candidate alike; condition 2: both rewards score all candidates alike.
BIG = [[10.0, 5.0, 7.0], [40.0, 5.0, 7.0], [20.0, 5.0, 7.0]]
SMALL = [[0.5, 0.2, 0.3], [0.1, 0.7, 0.3], [0.9, 0.7, 0.3]]


def _scores() -> dict[str, torch.Tensor]:
    return {"big": torch.tensor(BIG), "small": torch.tensor(SMALL)}


def _z(column: list[float]) -> list[float]:
    mean, std = statistics.fmean(column), statistics.pstdev(column)
    return [(x - mean) / std if std else 0.0 for x in column]


def test_zscore_picks_the_hand_computed_candidate() -> None:
    combined = Selector({"big": None, "small": None}, [1.0, 1.0], "zscore").combined(_scores())
    for c in range(3):
        columns = [[row[c] for row in table] for table in (BIG, SMALL)]
        hand = [a + b for a, b in zip(*map(_z, columns))]
        torch.testing.assert_close(combined[:, c], torch.tensor(hand, dtype=torch.float64))
    # Condition 0 by hand: z_big = (-1.069, 1.336, -0.267), z_small = (0, -1.225, 1.225): candidate 2
    # (sum keeps candidate 1, whose big score outweighs the small reward in native units).
    assert best_candidates(combined).tolist() == [2, 1, 0]
    summed = Selector({"big": None, "small": None}, [1.0, 1.0], "sum").combined(_scores())
    assert best_candidates(summed).tolist() == [1, 1, 0]


def test_a_reward_that_scores_all_candidates_alike_adds_zero() -> None:
    z = standardised(torch.tensor(BIG))
    assert z.dtype == torch.float64 and torch.isfinite(z).all()
    assert torch.equal(z[:, 1:], torch.zeros(3, 2, dtype=torch.float64))
    # float32 scores that are not exact in binary: their float64 mean is exact, the differences 0.
    assert torch.equal(standardised(torch.full((5, 1), 0.1)), torch.zeros(5, 1, dtype=torch.float64))


def test_ties_keep_the_earliest_candidate_and_nan_never_displaces() -> None:
    assert best_candidates(torch.tensor([[1.0, 2.0], [1.0, 3.0], [0.5, 3.0]])).tolist() == [0, 1]
    assert best_candidates(torch.tensor([[1.0], [float("nan")], [2.0]])).tolist() == [2]


def test_sum_weighs_each_reward_by_its_native_unit() -> None:
    combined = Selector({"big": None, "small": None}, [0.01, 1.0], "sum").combined(_scores())
    assert torch.equal(combined, 0.01 * torch.tensor(BIG) + torch.tensor(SMALL))


def test_an_unknown_combine_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown combine 'zcore'; allowed: sum, zscore"):
        Selector({}, [], "zcore")
