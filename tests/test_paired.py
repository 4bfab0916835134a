"""Paired differences between relaxations in the report."""
from __future__ import annotations

import json

import pytest

from harness.paired import paired_differences, render_markdown
from harness.results import ResultRow


def _row(relax: str, seed: int, value: float, metric: str = "m", steps: int = 200) -> ResultRow:
    group = json.dumps({"teacher": "t", "method": "dimo", "relaxation": relax,
                        "params": {"distill.steps": steps}}, sort_keys=True)
    return ResultRow("run", "g", "t", f"Di[M]O ({relax})", group, metric, value, False, {"name": "p"},
                     "p:0", 1, seed, f"{relax}{seed}", "dimo", relax)


def test_differences_are_paired_by_seed_and_setting() -> None:
    rows = [_row("hard", s, v) for s, v in ((0, 10.0), (1, 20.0), (2, 30.0))]
    rows += [_row("soft", s, v) for s, v in ((0, 9.0), (1, 19.2), (2, 28.8))]
    rows += [_row("soft", 0, 1.0, steps=50)]           # another setting: no hard partner, ignored
    (d,) = paired_differences(rows)
    assert (d.label, d.reference, d.n) == ("Di[M]O (soft)", "Di[M]O (hard)", 3)
    assert d.mean == pytest.approx(-1.0) and d.std == pytest.approx(0.2)
    assert d.ci95 == pytest.approx(4.302653 * 0.2 / 3 ** 0.5, rel=1e-5)
    assert d.beyond_noise                               # |-1.0| > 0.497
    assert "**-1 ± 0.2 (3)**" in render_markdown([d])


def test_differences_within_noise_are_not_marked() -> None:
    rows = [_row("hard", s, v) for s, v in ((0, 10.0), (1, 20.0), (2, 30.0))]
    rows += [_row("gumbel", s, v) for s, v in ((0, 11.0), (1, 19.0), (2, 30.5))]
    (d,) = paired_differences(rows)
    assert not d.beyond_noise and "| +0.1667 ± 1 (3) |" in render_markdown([d])
