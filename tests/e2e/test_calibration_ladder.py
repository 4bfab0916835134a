"""The calibration ladder of the mini metrics, at a small budget (one seed; 3 seeds in benchmarks/).

On the classifier-free structural metric the ladder must hold strictly:
real < teacher (K=16) < class-conditional marginals < unconditional marginals < uniform.
FD must order the outer rungs; whether it separates the teacher from the class-conditional
marginals depends on the teacher's budget (it does not at this one), so it is reported, not required.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.calibration_rungs import RUNGS, rung_metrics

SMALL_BUDGET = {"teacher": "digits", "teacher.train_steps": 800, "eval.samples": 1000, "seed": 0}


@pytest.mark.slow
def test_ladder_orders_rungs(teacher_cache: Path, tmp_path: Path) -> None:
    ladder = {rung: rung_metrics(SMALL_BUDGET, cell, teacher_cache, tmp_path) for rung, cell in RUNGS.items()}
    report = "\n".join(f"{r:17s} cov_err {m['digits_cov_err']:.3f}  FD {m['digits_fd']:7.2f}  "
                       f"acc {m['digits_acc']:.3f}" for r, m in ladder.items())
    print(report)
    cov = [ladder[r]["digits_cov_err"] for r in RUNGS]
    assert cov == sorted(cov) and len(set(cov)) == len(cov), report
    fd = [ladder[r]["digits_fd"] for r in ("real", "marginals_class", "marginals_uncond", "uniform")]
    assert fd == sorted(fd), report
    assert ladder["real"]["digits_acc"] > 0.95 and ladder["uniform"]["digits_acc"] < 0.2, report
