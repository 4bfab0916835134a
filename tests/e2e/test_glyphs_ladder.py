"""The glyphs world's calibration ladder on every seed, at a small budget (the default tokenizer, three
800-step MDMs instead of 2,000, 1,000 samples per rung; the full-size figures are in
benchmarks/README.md). The tokenizer is not cut: at 300 steps its reconstructions of real images
alone are at FD 220, farther from the test split than the full-size teacher's samples.

Seed i pairs the MDM trained with `teacher.seed = i` (all on one tokenizer) with the reference
rungs sampled with seed i. On every seed glyphs_fd must order
real < teacher (K = 16, CFG 2) < class-conditional marginals < unconditional marginals < uniform,
and the classifier must tell real images and not tell uniform tokens.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.calibration_rungs import RUNGS, rung_metrics

SMALL_BUDGET = {"teacher": "glyphs", "teacher.train_steps": 800, "eval.samples": 1000}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ladder_orders_rungs_on_every_seed(seed: int, teacher_cache: Path, tmp_path: Path) -> None:
    ladder = {rung: rung_metrics(SMALL_BUDGET, {**cell, "seed": seed, "teacher.seed": seed}, teacher_cache,
                                 tmp_path) for rung, cell in RUNGS.items()}
    report = "\n".join(f"{r:17s} FD {m['glyphs_fd']:7.2f}  acc {m['glyphs_acc']:.3f}  "
                       f"colour {m['glyphs_colour']:.3f}" for r, m in ladder.items())
    print(report)
    fd = [ladder[r]["glyphs_fd"] for r in RUNGS]
    assert all(a < b for a, b in zip(fd, fd[1:])), report
    assert ladder["real"]["glyphs_acc"] > 0.95 and ladder["uniform"]["glyphs_acc"] < 0.2, report
