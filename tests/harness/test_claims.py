"""The papers' claims as paired comparisons: selectors, verdicts, and the shipped claims file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.grid import load_grid
from harness.report import claims
from harness.report.compare import select
from harness.store.baselines import baselines_dir
from harness.store.results import frame, record_rows

ROOT = Path(__file__).resolve().parents[2]


def _row(grid: str, relaxation: str, refinement: str, seed: int, value: float, **params: float) -> dict:
    spec = {"scale": "mini", "teacher": "digits", "method": "dimo", "relaxation": relaxation,
            "refinement": refinement, "params": params, "plugins": []}
    return {"kind": "run", "source": grid, "grids": grid, "teacher": "digits", "method": "dimo", "relaxation": relaxation,
            "refinement": refinement, "label": "x", "group": json.dumps(spec, sort_keys=True), "metric": "digits_fd",
            "value": value, "higher_is_better": False, "protocol": {}, "protocol_id": "p", "steps": 1, "seed": seed,
            **params}


CLAIM = claims.Claim("c", "soft + GAN beats Di[M]O", "test", True, "g", "digits", "digits_fd",
                     {"relaxation": "hard", "refinement": "none"}, {"relaxation": "soft", "refinement": "gan"})


@pytest.mark.parametrize("treated, verdict", [
    ((9.0, 10.0, 11.5), "reproduced"),        # lower FD on every seed (differences -3, -2.5, -1.5)
    ((14.0, 14.6, 15.2), "not reproduced"),   # higher FD on every seed (+2, +2.1, +2.2)
    ((9.0, 14.0, 12.5), "inconclusive"),      # -3, +1.5, -0.5: the interval contains 0
])
def test_claim_verdicts_follow_the_paired_interval(treated: tuple, verdict: str) -> None:
    rows = [_row("g", "hard", "none", s, 12.0 + s * 0.5) for s in range(3)]
    rows += [_row("g", "soft", "gan", s, v) for s, v in enumerate(treated)]
    rows += [_row("other_grid", "soft", "gan", s, 0.0) for s in range(3)]   # another grid is ignored
    (outcome,) = claims.evaluate_claims(frame(rows), [CLAIM])
    assert outcome.verdict == verdict and outcome.n == 3
    assert outcome.mean == pytest.approx(sum(v - (12.0 + s * 0.5) for s, v in enumerate(treated)) / 3)


def test_missing_and_ambiguous_selections_say_so() -> None:
    rows = [_row("g", "hard", "none", s, 1.0) for s in range(2)]
    assert claims.evaluate_claims(frame(rows), [CLAIM])[0].verdict == "not run"
    rows += [_row("g", "soft", "gan", s, 1.0, **{"gan.weight": w}) for s in range(2) for w in (1.0, 2.0)]
    assert claims.evaluate_claims(frame(rows), [CLAIM])[0].verdict == "ambiguous"
    narrowed = claims.Claim(**{**CLAIM.__dict__, "treatment": {**CLAIM.treatment, "gan.weight": 2.0}})
    assert claims.evaluate_claims(frame(rows), [narrowed])[0].verdict == "inconclusive"


def test_a_run_reused_by_the_claims_grid_counts_there() -> None:
    # Cells that the claim's grid reused from another grid (same run ids) are one row each, from
    # the original record, and belong to both grids.
    def record(grid: str, relaxation: str, refinement: str, seed: int, value: float, reused: bool) -> dict:
        spec = {"scale": "mini", "teacher": "digits", "method": "dimo", "relaxation": relaxation,
                "refinement": refinement, "seed": seed, "params": {}, "plugins": []}
        rid = f"{relaxation}-{refinement}-{seed}"
        return {"run_id": rid, "grid": grid, "status": "ok", "spec": spec,
                "metrics": {"digits_fd": {"value": value, "higher_is_better": False}},
                **({"reused_from": f"other/{rid}"} if reused else {})}
    records = [record("g", "hard", "none", s, 12.0, False) for s in range(3)]
    records += [record(g, "soft", "gan", s, 10.0, g == "g") for g in ("g", "other") for s in range(3)]
    df = frame(record_rows(records))
    assert len(df) == 6 and set(df["grids"]) == {"g", "g,other"}
    assert (df[df["relaxation"] == "soft"]["grid"] == "other").all()      # the original records
    (outcome,) = claims.evaluate_claims(df, [CLAIM])
    assert outcome.verdict == "reproduced" and outcome.n == 3


def test_every_shipped_claim_names_cells_of_its_grid() -> None:
    # Each claim's grid exists, and both selectors pick cells of that grid at mini scale.
    for c in claims.load_claims(baselines_dir() / claims.CLAIMS_FILE):
        grid = load_grid(ROOT / "ablations" / f"{c.grid}.yaml")
        records = [{"run_id": s.run_id, "grid": c.grid, "status": "ok", "spec": s.to_json(),
                    "metrics": {c.metric: {"value": 1.0}}} for s in grid.specs if s.teacher == c.teacher]
        cells = frame(record_rows(records))
        for selector in (c.reference, c.treatment):
            assert not select(cells, selector).empty, (c.id, selector)


def test_a_claims_file_without_a_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "claims.yaml"
    path.write_text("- {id: x, claim: y}\n")
    with pytest.raises(ValueError, match="claims.yaml: claim 1: missing source"):
        claims.load_claims(path)


#----------------------------------------------------------------------------
# Power: Holm's adjustment, p-values, minimum detectable effects.


def test_holm_adjustment_by_hand() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005, 3 x 0.01, 2 x 0.03, max(that, 1 x 0.04)
    assert claims.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert claims.holm([0.9, 0.6]) == pytest.approx([1.0, 1.0])
    assert claims.holm([]) == []


def test_paired_p_value_is_the_one_sample_t_test() -> None:
    from scipy import stats
    diffs = [1.2, -0.3, 2.5, 0.8, 1.9]
    mean, std, n, _ = claims.paired_stats(diffs)
    assert claims.paired_p_value(mean, std, n) == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue, rel=1e-12)
    assert claims.paired_p_value(2.0, 0.0, 3) == 0.0 and claims.paired_p_value(0.0, 0.0, 3) == 1.0


def test_t_test_power_agrees_with_the_noncentral_t_where_scipy_is_finite() -> None:
    from scipy import stats
    for df, crit, nc in ((2, 4.3, 1.0), (4, 2.78, 3.0), (4, 6.0, 5.0), (9, 2.26, 0.0)):
        exact = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
        assert claims.t_test_power(nc, df, crit) == pytest.approx(exact, abs=1e-8)


def test_minimum_detectable_effect_is_detected_with_the_stated_power() -> None:
    # Simulated paired t-tests at the true mean = MDE reject at rate POWER: 20,000 draws give a
    # binomial standard error of sqrt(0.8 * 0.2 / 20000) = 0.0028; allowed 5 of them.
    import numpy as np
    from scipy import stats
    n, std, level = 5, 2.0, 0.05 / 12
    mde = claims.minimum_detectable_effect(std, n, level)
    draws = np.random.default_rng(0).normal(mde, std, size=(20_000, n))
    p = stats.ttest_1samp(draws, 0.0, axis=1).pvalue
    assert abs((p < level).mean() - claims.POWER) < 5 * (claims.POWER * (1 - claims.POWER) / 20_000) ** 0.5
    assert claims.minimum_detectable_effect(std, 3, level) > 3 * mde    # three seeds: far less power
    assert claims.minimum_detectable_effect(0.0, 5, level) == 0.0


def test_holm_turns_a_lone_significant_claim_inconclusive_in_a_family() -> None:
    # Alone, the first claim's p (0.034) is below 0.05 and it is reproduced; beside a claim with no
    # effect its Holm-adjusted p is 2 x 0.034 and it becomes inconclusive.
    other = claims.Claim(**{**CLAIM.__dict__, "id": "d", "grid": "g2"})
    rows = [_row("g", "hard", "none", s, 12.0) for s in range(3)]
    rows += [_row("g", "soft", "gan", s, v) for s, v in enumerate((9.0, 9.5, 10.5))]
    alone = claims.evaluate_claims(frame(rows), [CLAIM])[0]
    assert alone.verdict == "reproduced" and alone.p_holm == alone.p_value < 0.05
    rows += [_row("g2", "hard", "none", s, 12.0) for s in range(3)]
    rows += [_row("g2", "soft", "gan", s, v) for s, v in enumerate((11.0, 13.0, 12.5))]
    first, second = claims.evaluate_claims(frame(rows), [CLAIM, other])
    assert first.p_holm == pytest.approx(2 * first.p_value) and first.verdict == "inconclusive"
    assert second.verdict == "inconclusive"
    assert first.mde == pytest.approx(claims.minimum_detectable_effect(first.std, 3, 0.05 / 2))
    assert "| 3 | 0.034 (0.068) |" in claims.render_markdown([first, second])
    assert "m = 2" in claims.render_markdown([first, second])


#----------------------------------------------------------------------------
# The claims table of docs/fidelity.md is a function of the stored per-seed numbers.


def test_fidelity_claims_table_equals_the_stored_per_seed_numbers() -> None:
    doc = (ROOT / "docs" / "fidelity.md").read_text(encoding="utf-8")
    table = claims.stored_table(baselines_dir() / claims.STORED_FILE, baselines_dir() / claims.CLAIMS_FILE)
    assert claims.with_table(doc, table, "docs/fidelity.md") == doc, \
        "docs/fidelity.md's claims table differs from baselines/mini_reference.csv: python -m harness.report.claims --write docs/fidelity.md"


def test_the_stored_table_follows_every_stored_number(tmp_path: Path) -> None:
    # Changing one stored per-seed value of a claim's cell changes the table; a value of a run
    # that is no cell of any claim's grid does not.
    from harness.store.baselines import read_csv, write_csv
    stored = read_csv(baselines_dir() / claims.STORED_FILE, "stored")
    claims_file = baselines_dir() / claims.CLAIMS_FILE
    path = tmp_path / "stored.csv"
    write_csv(stored, path)
    before = claims.stored_table(path, claims_file)
    read = {(c.grid, c.metric) for c in claims.load_claims(claims_file)}        # what the claims read
    i = next(i for i, b in enumerate(stored) if (b.table, b.metric) in read)
    write_csv([b if j != i else b.__class__(**{**b.__dict__, "value": b.value + 5.0}) for j, b in enumerate(stored)],
              path)
    assert claims.stored_table(path, claims_file) != before
    grids = {grid for grid, _ in read}
    write_csv([b if b.table in grids else b.__class__(**{**b.__dict__, "value": b.value + 5.0})
               for b in stored], path)
    assert claims.stored_table(path, claims_file) == before


def test_the_table_goes_between_the_markers(tmp_path: Path) -> None:
    doc = f"intro\n{claims.START}\nold table\n{claims.END}\nafter\n"
    assert claims.with_table(doc, "new\n") == f"intro\n{claims.START}\nnew\n{claims.END}\nafter\n"
    with pytest.raises(ValueError, match="needs one line"):
        claims.with_table("no markers", "t\n", "x.md")
    path = tmp_path / "doc.md"
    path.write_text(doc)
    stored, claims_file = baselines_dir() / claims.STORED_FILE, baselines_dir() / claims.CLAIMS_FILE
    common = ["--stored", str(stored), "--claims", str(claims_file)]
    assert claims.main([*common, "--check", str(path)]) == 1
    assert claims.main([*common, "--write", str(path)]) == 0
    assert claims.main([*common, "--check", str(path)]) == 0
    assert claims.with_table(path.read_text(), claims.stored_table(stored, claims_file)) == path.read_text()
