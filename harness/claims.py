"""The papers' qualitative claims against the runs: each claim (`baselines/paper_claims.yaml`) is a
paired comparison of a grid's treatment cells with its reference cells, per seed, on one metric;
its outcome is reproduced (the 95% t-interval of the paired difference lies on the claimed side),
not reproduced (it lies on the other side) or inconclusive (it contains 0).

A pure function of the flat results table; `render_markdown` only formats it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from harness.paired import paired_stats
from harness.results import ResultRow

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


def _matches(spec: Mapping[str, Any], selector: Mapping[str, Any]) -> bool:
    params = spec.get("params", {})
    for key, value in selector.items():
        have = params.get(key) if "." in key else spec.get(key)
        if isinstance(have, list):
            have = list(have)
            value = list(value) if isinstance(value, (list, tuple)) else value
        if have != value:
            return False
    return True


def _per_seed(rows: Sequence[ResultRow], selector: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    groups: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.value is not None and r.seed is not None and _matches(json.loads(r.group), selector):
            groups.setdefault(r.group, {})[r.seed] = r.value
    return groups


# Evaluate every claim on the run rows of its grid, teacher and metric.
def evaluate_claims(rows: Sequence[ResultRow], claims: Sequence[Claim]) -> list[ClaimOutcome]:
    out = []
    for c in claims:
        mine = [r for r in rows if r.kind == "run" and r.source == c.grid and r.teacher == c.teacher
                and r.metric == c.metric]
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
        higher = next(r.higher_is_better for r in mine)
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
