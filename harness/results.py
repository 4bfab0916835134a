"""The flat results table: one row per (run, metric) from records, one per number from baselines.

Tables and plots are pure functions of these rows. A run row's `label` is its method's
`MethodEntry.label(spec)` (falling back to the spec's axes when the method is not registered in
this process); `group` identifies the runs that differ only in their seed, which tables average.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Iterable, Mapping, NamedTuple

from harness import registry
from harness.protocol import protocol_id
from harness.spec import NONE, RunSpec

#----------------------------------------------------------------------------


# One number: a run's metric value, or a baseline's reported value.
class ResultRow(NamedTuple):
    kind: str                       # "run" or "baseline"
    source: str                     # runs: grid name; baselines: baseline source name
    teacher: str                    # registry name of the teacher (baselines: normalised key)
    label: str                      # row label in tables
    group: str                      # runs differing only in seed share it; baselines: unique
    metric: str                     # harness metric name
    value: float | None             # None: not finite (diverged run) or not reported
    higher_is_better: bool
    protocol: Mapping[str, Any]
    protocol_id: str
    steps: int | None = None        # sampling steps: K for a teacher sampler, 1 for a one-step
                                    # student, None for references (real data, marginals)
    seed: int | None = None
    run_id: str = ""
    method: str = ""                # method registry name (runs)
    relaxation: str = NONE
    status: str = "ok"              # record status (runs)
    std: float | None = None        # baselines that report a spread over seeds
    n: int | None = None            # baselines: number of runs averaged, when known
    citation: str = ""              # baselines: paper + table / figure
    optimised: bool = False         # runs: the metric reports a reward model the run optimised


# The row label of a spec: its method's label, or the axes when the method is unknown here.
def method_label(spec_json: Mapping[str, Any]) -> str:
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
    return json.dumps({k: v for k, v in spec_json.items() if k != "seed"}, sort_keys=True,
                      default=str)


# Rows of every metric of every ok / diverged record; labels made unique per teacher.
def rows_from_records(records: Iterable[Mapping[str, Any]]) -> list[ResultRow]:
    unique: dict[str, Mapping[str, Any]] = {}
    for r in records:                      # the same run may sit in two grids: count it once
        if r["status"] in ("ok", "diverged"):
            unique.setdefault(r["run_id"], r)
    groups = {rid: _group_key(r["spec"]) for rid, r in unique.items()}
    labels = _unique_labels(unique.values(), groups)
    rows = []
    for rid, r in unique.items():
        spec = r["spec"]
        group = groups[rid]
        steps = sampling_steps(spec, r.get("info"))
        for name, m in r.get("metrics", {}).items():
            protocol = m.get("protocol", {})
            rows.append(ResultRow(
                "run", r["grid"], spec["teacher"], labels[group], group, name, m.get("value"),
                bool(m.get("higher_is_better", False)), protocol,
                m.get("protocol_id") or protocol_id(protocol), steps, spec.get("seed"),
                rid, spec.get("method", ""), spec.get("relaxation", NONE), r["status"],
                optimised=bool(m.get("optimised", False))))
    return rows


# A label per group of runs; groups of one teacher sharing a label get their differing params.
def _unique_labels(records: Iterable[Mapping[str, Any]], groups: Mapping[str, str]
                   ) -> dict[str, str]:
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
