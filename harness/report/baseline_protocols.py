"""How stored baselines map onto the evaluation protocols the harness computes, for the report.

A baseline compares with runs only under a protocol of the same name (`harness.contracts.protocol`). Three
outcomes per stored metric:

- mapped: its protocol is one the harness computes (`python -m harness.cell.evaluate --list-protocols`)
  and its source states enough to be sure;
- mapped by assumption: the same, but the source does not say enough (`"assumed": true` in its
  `protocol_json`; its `notes` say what was assumed) - the report footnotes it;
- unmapped: no harness protocol has its name - the report says so, one line per metric.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Collection, Iterable

from harness.contracts import registry
from harness.store.baselines import Baseline

TEXT_TO_IMAGE_TASKS = ("t2i", "t2i-1024")

#----------------------------------------------------------------------------


# The mapping of one stored metric (all its rows with the same protocol name and notes).
@dataclass(frozen=True)
class ProtocolMapping:
    source: str
    metric: str
    metric_original: str
    protocol: str
    rows: int
    computable: bool                 # a harness protocol of this name exists
    assumed: bool                    # the source does not state enough to be sure
    notes: str


# The protocol names the harness computes: every registered protocol (`registry.protocols`).
def computable_protocols() -> set[str]:
    return set(registry.protocols.names())


# One mapping per (source, metric, protocol, notes) of the baselines of `tasks` (all when None).
def protocol_mappings(baselines: Iterable[Baseline], tasks: Collection[str] | None = None) -> list[ProtocolMapping]:
    known = computable_protocols()
    groups: dict[tuple, list[Baseline]] = defaultdict(list)
    for b in baselines:
        if tasks is None or b.task in tasks:
            name = str(b.protocol.get("name", ""))
            groups[(b.source, b.metric, name, bool(b.protocol.get("assumed")), str(b.protocol.get("notes", "")))].append(b)
    return [ProtocolMapping(source, metric, rows[0].metric_original, name, len(rows), name in known, assumed, notes)
            for (source, metric, name, assumed, notes), rows in sorted(groups.items())]


# One line per stored metric whose protocol the harness does not compute (the report lists them).
def unmapped_lines(baselines: Iterable[Baseline], tasks: Collection[str] | None = None) -> list[str]:
    return [f"{m.source}: {m.metric} ({m.metric_original}, {m.rows} rows) is reported under protocol "
            f"'{m.protocol}', which the harness does not compute; no run is compared with it"
            + (f" ({m.notes})" if m.notes else "")
            for m in protocol_mappings(baselines, tasks) if not m.computable]


# One footnote per stored metric mapped by assumption (compared, but the source is not explicit).
def assumption_footnotes(baselines: Iterable[Baseline], tasks: Collection[str] | None = None) -> list[str]:
    return [f"{m.source}: {m.metric} ({m.metric_original}, {m.rows} rows) is compared under '{m.protocol}' "
            f"by assumption: {m.notes}"
            for m in protocol_mappings(baselines, tasks) if m.computable and m.assumed]
