"""Comparisons against reference cells along any axis: paired by seed, Welch otherwise (per-seed
values or a stored mean / std / n), never across protocols."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from harness.report import compare
from harness.store.baselines import Baseline
from harness.store.results import frame

P = {"name": "p", "samples": 10}


def _run(method: str, relax: str, seed: int, value: float, protocol: dict = P, metric: str = "m") -> dict:
    return {"kind": "run", "source": "g", "grid": "g", "teacher": "t", "method": method, "relaxation": relax,
            "refinement": "none", "label": f"{method} {relax}", "group": f"{method}:{relax}", "seed": seed,
            "metric": metric, "value": value, "higher_is_better": False, "protocol": protocol,
            "protocol_id": str(sorted(protocol.items())), "status": "ok", "steps": 1, "optimised": False}


def test_paired_by_seed_when_both_sides_have_the_same_seeds() -> None:
    rows = [_run("dimo", "hard", s, v) for s, v in ((0, 10.0), (1, 20.0), (2, 30.0))]
    rows += [_run("mine", "soft", s, v) for s, v in ((0, 9.0), (1, 19.2), (2, 28.8))]
    (c,) = compare.compare(frame(rows), {"method": "dimo", "relaxation": "hard"})
    assert (c.label, c.reference, c.test, c.n, c.n_ref) == ("mine soft", "dimo hard", "paired t", 3, 3)
    assert c.diff == pytest.approx(-1.0) and c.ci95 == pytest.approx(4.302653 * 0.2 / 3 ** 0.5, rel=1e-5)
    assert c.beyond_noise
    assert "**-1 ± 0.5 (paired t, n=3/3)**" in compare.render_markdown([c], {"method": "dimo"})


def test_welch_on_per_seed_values_when_the_seeds_differ() -> None:
    a, b = [1.0, 2.0, 4.0], [5.0, 6.0, 6.5, 8.0]
    rows = [_run("dimo", "hard", s, v) for s, v in enumerate(b)]
    rows += [_run("mine", "soft", 10 + s, v) for s, v in enumerate(a)]
    (c,) = compare.compare(frame(rows), {"relaxation": "hard"})
    assert c.test == "Welch t" and (c.n, c.n_ref) == (3, 4)
    assert c.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert c.diff == pytest.approx(sum(a) / 3 - sum(b) / 4)


def test_welch_from_a_stored_mean_std_n() -> None:
    base = Baseline("papers", "P", "", "P, Table 1", "primary", "T", "t", "t", "mini", "", "Di[M]O", 1, "m", "m",
                    12.0, 1.5, 5, False, P, "").row()
    rows = [_run("mine", "soft", s, v) for s, v in ((0, 9.0), (1, 10.0), (2, 11.5))] + [base]
    (c,) = compare.compare(frame(rows), {"source": "papers", "label": "Di[M]O"})
    expect = stats.ttest_ind_from_stats(10.1666667, stats.tstd([9.0, 10.0, 11.5]), 3, 12.0, 1.5, 5, equal_var=False)
    assert c.test == "Welch t (mean/std/n)" and (c.n, c.n_ref) == (3, 5)
    assert c.p_value == pytest.approx(expect.pvalue, rel=1e-5)


def test_never_across_protocols_and_within_axes() -> None:
    rows = [_run("dimo", "hard", s, 1.0 + s) for s in range(3)]
    rows += [_run("mine", "soft", s, 2.0 + s, protocol={"name": "p", "samples": 99}) for s in range(3)]
    (c,) = compare.compare(frame(rows), {"relaxation": "hard"})
    assert c.test == "" and c.diff is None and "samples differs" in c.note
    assert "[1]" in compare.render_markdown([c], {"relaxation": "hard"})
    with pytest.raises(KeyError, match="not columns of the results table"):
        compare.compare(frame(rows), {"nope": 1})
    assert compare.parse_selector("method=dimo, distill.steps=200,x=1.5") == {
        "method": "dimo", "distill.steps": 200, "x": 1.5}
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        compare.parse_selector("method")


def test_welch_interval_from_stats_matches_its_definition() -> None:
    diff, ci, p = compare.welch_from_stats(1.0, 1.0, 4, 0.0, 2.0, 6)
    va, vb = 1 / 4, 4 / 6
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 5)
    assert diff == 1.0 and ci == pytest.approx(stats.t.ppf(0.975, df) * math.sqrt(va + vb))


def test_a_reference_naming_several_settings_is_not_compared() -> None:
    rows = [_run(m, "hard", s, 1.0 + s) for m in ("dimo", "other") for s in range(3)]
    rows += [_run("mine", "soft", s, 2.0 + s) for s in range(3)]
    (c,) = compare.compare(frame(rows), {"relaxation": "hard"})
    assert c.test == "" and "the reference matches 2 settings" in c.note
