"""The papers' qualitative claims against the runs: each claim (`baselines/paper_claims.yaml`) is a
paired comparison of a grid's treatment cells with its reference cells, per seed, on one metric.
Each claim gets a two-sided paired t-test; the p-values of all claims of one table are adjusted
together with Holm's step-down procedure (family-wise error rate `ALPHA`), and the outcome is
reproduced (Holm-adjusted p < ALPHA, the difference on the claimed side), not reproduced (p < ALPHA,
on the other side) or inconclusive. Each claim also carries its minimum detectable effect: the
smallest true mean difference its n paired seeds would detect with probability `POWER` at the
family's strictest level ALPHA / m, given the observed spread of the differences.

A pure function of the flat results table; `render_markdown` only formats it. `stored_frame`
rebuilds that table for the claims' grids from the per-seed numbers of a baseline file of the
project's own runs, so the claims table in docs/fidelity.md is a function of stored numbers
(`python -m harness.report.claims`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import yaml
from scipy import integrate, optimize, stats

from harness.grid import load_grid
from harness.report.compare import paired_stats, select
from harness.store.baselines import Baseline, baselines_dir, read_csv
from harness.store.results import final_runs, frame, record_rows

CLAIMS_FILE = "paper_claims.yaml"
FIELDS = ("id", "claim", "source", "secondary", "grid", "teacher", "metric", "reference", "treatment")
ALPHA = 0.05                     # family-wise error rate of one claims table (Holm)
POWER = 0.8                      # power of the minimum detectable effect
STORED_FILE = "mini_reference.csv"
GRIDS_DIR = Path(__file__).resolve().parents[2] / "ablations"
START, END = "<!-- claims:start -->", "<!-- claims:end -->"   # the generated table's place in a document

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


# The outcome of one claim: the paired difference treatment - reference, its test and its verdict.
@dataclass(frozen=True)
class ClaimOutcome:
    claim: Claim
    verdict: str                     # reproduced / not reproduced / inconclusive / not run / ambiguous
    mean: float | None = None
    ci95: float | None = None        # half-width of the (unadjusted) 95% t-interval of the mean
    n: int = 0
    higher_is_better: bool | None = None
    detail: str = ""
    std: float | None = None         # sample std of the per-seed differences
    p_value: float | None = None     # two-sided paired t-test of mean = 0
    p_holm: float | None = None      # Holm-adjusted over the claims of the table
    mde: float | None = None         # minimum detectable |mean| at ALPHA / m and POWER


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


# The results table of the claims' grids rebuilt from stored per-seed numbers (a baseline file of
# the project's own runs: one row per run and metric, with its run id): every cell of a claim's
# grid file (at the file's scale) whose run id has stored numbers becomes an ok record of them.
def stored_frame(stored: Iterable[Baseline], claims: Sequence[Claim], grids_dir: Path = GRIDS_DIR) -> pd.DataFrame:
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    for b in stored:
        if b.run_id:
            metrics.setdefault(b.run_id, {})[b.metric] = {"value": b.value, "higher_is_better": b.higher_is_better}
    records = [{"run_id": spec.run_id, "grid": grid, "status": "ok", "spec": spec.to_json(),
                "metrics": metrics[spec.run_id]}
               for grid in sorted({c.grid for c in claims})
               for spec in load_grid(grids_dir / f"{grid}.yaml").specs if spec.run_id in metrics]
    return frame(record_rows(records, curves=False))


def _per_seed(rows: pd.DataFrame, selector: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    if rows.empty:                      # no runs of the claim's grid: its parameters are no columns
        return {}
    chosen = select(rows, selector)
    return {group: {int(s): float(v) for s, v in zip(g["seed"], g["value"]) if v == v}
            for group, g in chosen.groupby("group", sort=False)}


# Two-sided p-value of a paired t-test of mean = 0 from the differences' mean, std and n (n >= 2);
# a zero spread gives 0 for a non-zero mean and 1 for a zero one.
def paired_p_value(mean: float, std: float, n: int) -> float:
    if std == 0:
        return 0.0 if mean != 0 else 1.0
    return float(2 * stats.t.sf(abs(mean) / (std / math.sqrt(n)), n - 1))


# Holm's step-down adjustment of p-values (same order as given): the i-th smallest becomes
# max over j <= i of min(1, (m - j + 1) p_(j)).
def holm(p_values: Sequence[float]) -> list[float]:
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


# Power of a two-sided t-test at critical value `crit` with `df` degrees of freedom when the
# statistic is noncentral t with noncentrality nc: T = (Z + nc) / sqrt(V / df), V ~ chi2(df), so
# P(|T| > crit) = E_V[P(Z > crit s - nc) + P(Z < -crit s - nc)] with s = sqrt(V / df), integrated
# numerically (scipy's noncentral t returns nan in the far lower tail at small df).
def t_test_power(nc: float, df: int, crit: float) -> float:
    def integrand(v: float) -> float:
        s = math.sqrt(v / df)
        return stats.chi2.pdf(v, df) * (stats.norm.sf(crit * s - nc) + stats.norm.cdf(-crit * s - nc))
    return float(integrate.quad(integrand, 0.0, math.inf, epsabs=1e-12, limit=200)[0])


# The smallest true mean difference that a two-sided paired t-test on n differences with std `std`
# rejects at level `level` with probability `power`; 0 for a zero spread.
def minimum_detectable_effect(std: float, n: int, level: float, power: float = POWER) -> float:
    if std == 0:
        return 0.0
    df, crit = n - 1, float(stats.t.ppf(1 - level / 2, n - 1))
    high = 1.0
    while t_test_power(high, df, crit) < power:
        high *= 2
    nc = optimize.brentq(lambda x: t_test_power(x, df, crit) - power, 0.0, high, xtol=1e-9)
    return float(nc * std / math.sqrt(n))


# Evaluate every claim on the run rows of its grid, teacher and metric; the claims with n >= 2
# form one family for Holm's adjustment and the minimum detectable effects.
def evaluate_claims(df: pd.DataFrame, claims: Sequence[Claim], alpha: float = ALPHA) -> list[ClaimOutcome]:
    if df.empty:
        return [ClaimOutcome(c, "not run", detail=f"no runs of grid {c.grid!r} with {c.metric}") for c in claims]
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
        mean, std, n, ci = paired_stats([treat_values[s] - ref_values[s] for s in seeds])
        tested = n >= 2
        out.append(ClaimOutcome(c, "inconclusive", mean, ci, n, higher, std=std if tested else None,
                                p_value=paired_p_value(mean, std, n) if tested else None))
    family = [i for i, o in enumerate(out) if o.p_value is not None]
    adjusted = holm([out[i].p_value for i in family])
    for i, p_holm in zip(family, adjusted):
        o = out[i]
        better = o.mean if o.higher_is_better else -o.mean
        verdict = "inconclusive" if p_holm >= alpha else "reproduced" if better > 0 else "not reproduced"
        out[i] = replace(o, verdict=verdict, p_holm=p_holm,
                         mde=minimum_detectable_effect(o.std, o.n, alpha / len(family)))
    return out


# The table "paper claim -> mini outcome".
def render_markdown(outcomes: Sequence[ClaimOutcome], alpha: float = ALPHA) -> str:
    if not outcomes:
        return ""
    m = sum(o.p_value is not None for o in outcomes)
    out = [f"Paper claims against the runs: treatment − reference per seed, mean ± half-width of its 95% "
           f"t-interval; n paired seeds; p of a two-sided paired t-test and p adjusted by Holm's procedure "
           f"over the m = {m} tested claims of this table; MDE, the smallest true difference n seeds detect "
           f"with probability {POWER:g} at level {alpha:g} / m given the observed spread. reproduced: "
           f"Holm-adjusted p < {alpha:g} on the claimed side; not reproduced: on the other side; "
           f"inconclusive: otherwise. † the claim's source is a secondary transcription of the paper.", "",
           "| claim | source | grid / metric | treatment − reference | n | p (Holm) | MDE | outcome |",
           "|---|---|---|---:|---:|---:|---:|---|"]
    for o in outcomes:
        c = o.claim
        arrow = "" if o.higher_is_better is None else (" ↑" if o.higher_is_better else " ↓")
        diff = (f"{o.mean:+.4g} ± {o.ci95:.2g}" if o.mean is not None and o.n > 1
                else f"{o.mean:+.4g}" if o.mean is not None else o.detail)
        n = str(o.n) if o.mean is not None else ""
        p = f"{o.p_value:.2g} ({o.p_holm:.2g})" if o.p_holm is not None else ""
        mde = f"{o.mde:.2g}" if o.mde is not None else ""
        mark = " †" if c.secondary else ""
        out.append(f"| {c.claim} | {c.source}{mark} | {c.grid} / {c.metric}{arrow} | {diff} | {n} | {p} | {mde} "
                   f"| {o.verdict} |")
    return "\n".join(out) + "\n"


# The claims table of stored per-seed numbers (`stored_frame`), as `render_markdown` writes it.
def stored_table(stored_csv: Path, claims_file: Path, grids_dir: Path = GRIDS_DIR) -> str:
    claims = load_claims(claims_file)
    return render_markdown(evaluate_claims(stored_frame(read_csv(stored_csv, "stored"), claims, grids_dir), claims))


# A document with `table` between its START and END markers (each on its own line, once).
def with_table(document: str, table: str, name: str = "the document") -> str:
    if document.count(START) != 1 or document.count(END) != 1 or document.index(START) > document.index(END):
        raise ValueError(f"{name}: needs one line {START} and, after it, one line {END} around the claims table")
    head, rest = document.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{table}{END}{tail}"


# `python -m harness.report.claims`: the claims table of the stored per-seed numbers, printed, written into
# a document between its markers (--write), or checked against it (--check; exit 1 if it differs).
def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys
    from harness.builtin import plugins
    p = argparse.ArgumentParser(prog="python -m harness.report.claims",
                                description="The paper-claims table from stored per-seed numbers.")
    p.add_argument("--stored", type=Path, default=None, metavar="CSV",
                   help=f"per-seed numbers of the project's runs (default <baselines>/{STORED_FILE})")
    p.add_argument("--claims", type=Path, default=None, metavar="YAML",
                   help=f"the claims (default <baselines>/{CLAIMS_FILE})")
    p.add_argument("--grids", type=Path, default=GRIDS_DIR, metavar="DIR", help="directory of the grid files")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", type=Path, metavar="DOC", help="put the table between the markers of DOC")
    mode.add_argument("--check", type=Path, metavar="DOC", help="exit 1 if DOC's table differs from the numbers")
    args = p.parse_args(argv)
    plugins.load_builtins()
    table = stored_table(args.stored or baselines_dir() / STORED_FILE, args.claims or baselines_dir() / CLAIMS_FILE,
                         args.grids)
    target = args.write or args.check
    if target is None:
        print(table, end="")
        return 0
    try:
        document = target.read_text(encoding="utf-8")
        updated = with_table(document, table, str(target))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        if updated != document:
            print(f"{target}: the claims table differs from the stored numbers; run python -m harness.report.claims "
                  f"--write {target}", file=sys.stderr)
            return 1
        print(f"{target}: the claims table equals the stored numbers")
        return 0
    target.write_text(updated, encoding="utf-8")
    print(f"wrote the claims table into {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
