"""The results table: a pandas DataFrame with one row per (run, metric), its curve points, and one
row per stored baseline number. Every table and figure of the report is a function of it, and a
notebook opens it with `load_frame`:

    from harness.store.results import load_frame
    frame = load_frame("results", grids=["soft_vs_hard"])

Columns (docs/usage.md, "The results table"): the run's identity (`kind`, `source`, `run_id`,
`grid`, `teacher`, `scale`, `method`, `relaxation`, `refinement`, `seed`, `label`, `group`,
`matrix_order`, `steps`, `status`, `reused_from`), the number (`metric`, `value`, `higher_is_better`,
`protocol_id`, `protocol`, `optimised`, `train_step`), every resolved parameter under its grid key
(`distill.steps`, ...), the run's cost (`wall_s`, `accelerator_hours`, `peak_mem_mb`, the stage
seconds, `world_size`, `student_reused`) and, for baselines, `std`, `n`, `citation`,
`source_quality`. A run's `label` is its method's `MethodEntry.label(spec)` (the spec's axes when
the method is not registered in this process); `group` joins the runs that differ only in their
seed; `matrix_order` is the place of the group's first cell in its grid's matrix (tables, figures and
comparisons list methods in that order; empty for grids recorded without it). `train_step` is empty
for a run's final values and holds the step of a curve point.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from harness import store
from harness.contracts import registry
from harness.contracts.protocol import protocol_id
from harness.contracts.run_spec import NONE, RunSpec
from harness.store.baselines import load_all
from softdimo.files import atomic_write

IDENTITY = ("kind", "source", "run_id", "grid", "grids", "teacher", "scale", "method", "relaxation", "refinement",
            "seed", "label", "group", "matrix_order", "steps", "status", "reused_from")
NUMBER = ("metric", "value", "higher_is_better", "protocol_id", "protocol", "optimised", "train_step")
COST = ("wall_s", "accelerator_hours", "peak_mem_mb", "teacher_s", "distill_s", "sample_s", "eval_s", "curve_s",
        "world_size", "student_reused")
BASELINE = ("std", "n", "citation", "source_quality")
COLUMNS = IDENTITY + NUMBER + COST + BASELINE

#----------------------------------------------------------------------------


# The row label of a spec: its method's label, the label an outside evaluation was given, or the
# axes when the method is unknown here.
def method_label(spec_json: Mapping[str, Any]) -> str:
    if spec_json.get("method") == "external" and spec_json.get("params", {}).get("evaluate.label"):
        return str(spec_json["params"]["evaluate.label"])
    if spec_json.get("method") in registry.methods:
        try:
            return str(registry.methods.get(spec_json["method"]).label(RunSpec.from_json(spec_json)))
        except Exception:                  # a label function that cannot read an old spec
            pass
    parts = [str(spec_json.get("method", "?"))]
    if spec_json.get("relaxation", NONE) != NONE:
        parts.append(str(spec_json["relaxation"]))
    if spec_json.get("refinement", NONE) != NONE:
        parts.append("+" + str(spec_json["refinement"]))
    return " ".join(parts)


# Sampling steps of a run: the method's own `info.sampling_steps`, else K of the teacher
# sampler, 1 for a method with a relaxation (a one-step student), None otherwise.
def sampling_steps(spec_json: Mapping[str, Any], info: Mapping[str, Any] | None = None) -> int | None:
    if info and isinstance(info.get("sampling_steps"), int):
        return info["sampling_steps"]
    if spec_json.get("method") == "teacher_sampler":
        return spec_json.get("params", {}).get("sample.steps")
    if spec_json.get("relaxation", NONE) != NONE:
        return 1
    return None


def _group_key(spec_json: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in spec_json.items() if k != "seed"}, sort_keys=True, default=str)


def _cell(value: Any) -> Any:
    # A parameter value as a table cell: lists as tuples (hashable, comparable).
    return tuple(value) if isinstance(value, list) else value


def _cost_columns(record: Mapping[str, Any]) -> dict[str, Any]:
    cost = record.get("cost") or {}
    stages = cost.get("stages") or {}
    student = (record.get("info") or {}).get("student")
    return {"wall_s": cost.get("wall_s"), "accelerator_hours": cost.get("accelerator_hours"),
            "peak_mem_mb": cost.get("peak_mem_mb"),
            **{s: stages.get(s) for s in ("teacher_s", "distill_s", "sample_s", "eval_s", "curve_s")},
            "world_size": int(cost.get("world_size") or (record.get("provenance") or {}).get("world_size") or 1),
            "student_reused": bool(student.get("cache_hit")) if isinstance(student, Mapping) else None}


# The rows of ok / diverged records: every metric value and, with `curves`, every curve point. A
# run that sits in several grids (reused) counts once, as its original record, and `grids` names
# every grid that holds it. `cell_order` (run id -> place in its grid, `store.cell_order`) gives
# each group's `matrix_order`.
def record_rows(records: Iterable[Mapping[str, Any]], curves: bool = True,
                cell_order: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    unique: dict[str, Mapping[str, Any]] = {}
    grids: dict[str, set[str]] = {}
    for r in records:
        if r["status"] in ("ok", "diverged"):
            rid = r["run_id"]
            grids.setdefault(rid, set()).add(r["grid"])
            if rid not in unique or (unique[rid].get("reused_from") and not r.get("reused_from")):
                unique[rid] = r
    groups = {rid: _group_key(r["spec"]) for rid, r in unique.items()}
    labels = _unique_labels(unique.values(), groups)
    group_order: dict[str, int] = {}
    for rid, g in groups.items():
        if cell_order and rid in cell_order:
            group_order[g] = min(group_order.get(g, cell_order[rid]), cell_order[rid])
    rows = []
    for rid, r in unique.items():
        spec = r["spec"]
        base = {"kind": "run", "source": r["grid"], "run_id": rid, "grid": r["grid"],
                "grids": ",".join(sorted(grids[rid])), "teacher": spec["teacher"],
                "scale": spec.get("scale"), "method": spec.get("method", ""),
                "relaxation": spec.get("relaxation", NONE), "refinement": spec.get("refinement", NONE),
                "seed": spec.get("seed"), "label": labels[groups[rid]], "group": groups[rid],
                "matrix_order": group_order.get(groups[rid]), "steps": sampling_steps(spec, r.get("info")), "status": r["status"],
                "reused_from": r.get("reused_from"), **_cost_columns(r),
                **{k: _cell(v) for k, v in spec.get("params", {}).items()}}
        for name, m in r.get("metrics", {}).items():
            protocol = m.get("protocol", {})
            rows.append({**base, "metric": name, "value": m.get("value"),
                         "higher_is_better": bool(m.get("higher_is_better", False)),
                         "protocol_id": m.get("protocol_id") or protocol_id(protocol), "protocol": protocol,
                         "optimised": bool(m.get("optimised", False)), "train_step": None})
        if curves:
            higher = {n: bool(m.get("higher_is_better", False)) for n, m in r.get("metrics", {}).items()}
            for name, points in (r.get("curves") or {}).items():
                for step, value in points:
                    rows.append({**base, "metric": name, "value": value, "higher_is_better": higher.get(name),
                                 "protocol_id": None, "protocol": None, "optimised": False,
                                 "train_step": int(step)})
    return rows


# A label per group of runs; groups of one teacher sharing a label get their differing params.
def _unique_labels(records: Iterable[Mapping[str, Any]], groups: Mapping[str, str]) -> dict[str, str]:
    specs_of: dict[str, Mapping[str, Any]] = {}
    for r in records:
        specs_of.setdefault(groups[r["run_id"]], r["spec"])
    by_label: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for group, spec in specs_of.items():
        by_label[(spec["teacher"], method_label(spec))][group] = spec
    out: dict[str, str] = {}
    for (_, label), members in by_label.items():
        if len(members) == 1:
            out.update({g: label for g in members})
            continue
        specs = list(members.values())
        keys = sorted({k for s in specs for k in s.get("params", {})})
        differ = [k for k in keys if len({json.dumps(s.get("params", {}).get(k), default=str)
                                          for s in specs}) > 1]
        axes = [a for a in ("method", "relaxation", "refinement", "scale")
                if len({x.get(a) for x in specs}) > 1]
        for g, s in members.items():
            params = s.get("params", {})
            parts = [f"{a}={s.get(a)}" for a in axes]
            parts += [f"{k}={_short(params[k])}" for k in differ if k in params]
            out[g] = f"{label} ({', '.join(parts)})" if parts else label
    return out


def _short(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


# The results table of some rows (records' and baselines'), with every documented column present.
def frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    for column in COLUMNS:
        if column not in df.columns:
            df[column] = None
    params = sorted(c for c in df.columns if c not in COLUMNS)
    df = df[list(COLUMNS) + params]
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


# The results table of the records under a results root (all grids, or `grids`), optionally with
# the curve points and every registered baseline source.
def load_frame(results: str | Path, grids: Sequence[str] | None = None, curves: bool = False,
               baselines: bool = False) -> pd.DataFrame:
    records, _ = store.scan(results, grids)
    rows = record_rows(records, curves=curves, cell_order=store.cell_order(results, {r["grid"] for r in records}))
    if baselines:
        rows += [b.row() for b in load_all()[0]]
    return frame(rows)


# The order of rows in tables and of methods in figures and comparisons: runs before baselines;
# multi-step samplers (most steps first), then one-step methods, then references without steps;
# then in the order the grid's matrix names them (`position`, the `matrix_order` column), then by
# label.
def order_key(kind: str, steps: Any, label: str, source: str = "", position: Any = None) -> tuple:
    steps = None if steps is None or steps != steps else int(steps)
    tier = 0 if steps is not None and steps > 1 else 1 if steps == 1 else 2
    place = math.inf if position is None or position != position else position
    return (0 if kind == "run" else 1, tier, -(steps or 0), place, label.lower(), source)


# The run labels of some rows of the results table, in `order_key`'s order.
def labels_in_order(rows: pd.DataFrame) -> list[str]:
    keyed: dict[str, tuple] = {}
    for label, steps, position in zip(rows["label"], rows["steps"], rows["matrix_order"]):
        key = order_key("run", steps, label, position=position)
        keyed[label] = min(keyed.get(label, key), key)
    return sorted(keyed, key=keyed.__getitem__)


# The final values of runs (no curve points, no baselines).
def final_runs(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["kind"] == "run") & df["train_step"].isna()]


# A copy that a parquet file can hold: protocol dicts as JSON text, mixed-type columns as text.
def to_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    out = df.copy()
    out["protocol"] = out["protocol"].map(lambda p: None if p is None else json.dumps(p, sort_keys=True))
    for column in out.columns:
        kinds = {type(v) for v in out[column] if v is not None and v == v}
        if len(kinds) > 1 or kinds & {tuple, list, dict}:
            out[column] = out[column].map(lambda v: None if v is None or v != v else json.dumps(v, default=str))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: out.to_parquet(tmp, index=False))
