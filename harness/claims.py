"""The papers' qualitative claims against the runs: each claim (`baselines/paper_claims.yaml`) is a
paired comparison of a grid's treatment cells with its reference cells, per seed, on one metric;
its outcome is reproduced (the 95% t-interval of the paired difference lies on the claimed side),
not reproduced (it lies on the other side) or inconclusive (it contains 0).

A pure function of the flat results table; `render_markdown` only formats it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import yaml

from harness.compare import paired_stats, select
from harness.results import final_runs

CLAIMS_FILE = "paper_claims.yaml"
FIELDS = ("id", "claim", "source", "secondary", "grid", "teacher", "metric", "reference", "treatment")

#----------------------------------------------------------------------------


# One claim: which cells of which grid are compared on which metric.
@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    source: str
    secondary: bool
    grid: str
    teacher: str
    metric: str
    reference: Mapping[str, Any]
    treatment: Mapping[str, Any]


# The outcome of one claim: the paired difference treatment - reference and its verdict.
@dataclass(frozen=True)
class ClaimOutcome:
    claim: Claim
    verdict: str                     # reproduced / not reproduced / inconclusive / not run / ambiguous
    mean: float | None = None
    ci95: float | None = None
    n: int = 0
    higher_is_better: bool | None = None
    detail: str = ""


# Read the claims file; every problem names the file, the claim and the key.
def load_claims(path: str | Path) -> list[Claim]:
    path = Path(path)
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of claims")
    out = []
    for i, e in enumerate(entries):
        missing = [k for k in FIELDS if not isinstance(e, dict) or k not in e]
        if missing:
            raise ValueError(f"{path}: claim {i + 1}: missing {', '.join(missing)}; every claim needs "
                             f"{', '.join(FIELDS)}")
        out.append(Claim(**{k: e[k] for k in FIELDS}))
    return out


def _per_seed(rows: pd.DataFrame, selector: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    chosen = select(rows, selector)
    return {group: {int(s): float(v) for s, v in zip(g["seed"], g["value"]) if v == v}
            for group, g in chosen.groupby("group", sort=False)}


# Evaluate every claim on the run rows of its grid, teacher and metric.
def evaluate_claims(df: pd.DataFrame, claims: Sequence[Claim]) -> list[ClaimOutcome]:
    runs = final_runs(df)
    out = []
    for c in claims:
        in_grid = runs["grids"].map(lambda names: c.grid in str(names).split(","))
        mine = runs[in_grid & (runs["teacher"] == c.teacher) & (runs["metric"] == c.metric)]
        ref, treat = _per_seed(mine, c.reference), _per_seed(mine, c.treatment)
        if not ref or not treat:
            out.append(ClaimOutcome(c, "not run", detail=f"no {'reference' if not ref else 'treatment'} runs "
                                                       f"of grid {c.grid!r} with {c.metric}"))
            continue
        if len(ref) > 1 or len(treat) > 1:
            out.append(ClaimOutcome(c, "ambiguous", detail=f"{len(ref)} reference / {len(treat)} treatment "
                                                           f"settings match; narrow the selectors"))
            continue
        (ref_values,), (treat_values,) = ref.values(), treat.values()
        seeds = sorted(set(ref_values) & set(treat_values))
        if not seeds:
            out.append(ClaimOutcome(c, "not run", detail="no seed has both cells"))
            continue
        higher = bool(mine["higher_is_better"].iloc[0])
        mean, _, n, ci = paired_stats([treat_values[s] - ref_values[s] for s in seeds])
        better = mean if higher else -mean
        verdict = ("inconclusive" if n < 2 or abs(mean) <= ci
                   else "reproduced" if better > 0 else "not reproduced")
        out.append(ClaimOutcome(c, verdict, mean, ci, n, higher))
    return out


# The table "paper claim -> mini outcome".
def render_markdown(outcomes: Sequence[ClaimOutcome]) -> str:
    if not outcomes:
        return ""
    out = ["Paper claims against the runs: treatment − reference per seed, mean ± 95% t-interval (n). "
           "reproduced: the interval lies on the claimed side; not reproduced: on the other side; "
           "inconclusive: it contains 0. † the claim's source is a secondary transcription of the paper.", "",
           "| claim | source | grid / metric | treatment − reference | outcome |", "|---|---|---|---:|---|"]
    for o in outcomes:
        c = o.claim
        arrow = "" if o.higher_is_better is None else (" ↑" if o.higher_is_better else " ↓")
        diff = (f"{o.mean:+.4g} ± {o.ci95:.2g} ({o.n})" if o.mean is not None and o.n > 1
                else f"{o.mean:+.4g} (1)" if o.mean is not None else o.detail)
        mark = " †" if c.secondary else ""
        out.append(f"| {c.claim} | {c.source}{mark} | {c.grid} / {c.metric}{arrow} | {diff} | {o.verdict} |")
    return "\n".join(out) + "\n"
