"""The papers' claims as paired comparisons: selectors, verdicts, and the shipped claims file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import claims
from harness.baselines import baselines_dir
from harness.grid import load_grid
from harness.compare import select
from harness.results import frame, record_rows

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
