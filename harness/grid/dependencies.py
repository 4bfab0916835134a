"""Work shared between cells, scheduled instead of waited for.

Cells share expensive work: a mini teacher trained into the cache, a Di[M]O prefix, a trained
student (cache entries a method declares, `MethodEntry.work`), or the run whose student a cell
continues (its parent, `MethodEntry.parent_param`). Of the cells of a launch that need the same
cache entry, not complete yet, the first in launch order (its leader) builds it and the others
start once the leader's cell has ended; a continuation starts once its parent has. So no cell waits
on another's cache lock, holding its resources. Executors honour these needs (`harness.launch.executors`):
SLURM by `--dependency=afterok:` on the jobs of the needed cells, the local queue by taking a cell
only once what it needs has a record, the debug executor by its order.

A cell whose need failed does not run: it gets a `failed` record (`DependencyFailed`) naming the
need and its error, so `harness.run --rerun-failed` runs both again, in order.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from harness import store
from harness.contracts import registry
from harness.grid.spec import RunSpec
from softdimo.teachers.cache import sealed

PARENT = "parent"                          # the reason of a need on the run a cell continues
FAILED = ("failed", "corrupt")             # record statuses of a need that stop the cells after it
UNUSABLE_PARENT = FAILED + ("diverged",)   # a diverged student cannot be continued

#----------------------------------------------------------------------------


# What one cell starts after: another cell of the grid, and why (the cache entries that cell
# builds first, and/or PARENT).
@dataclass(frozen=True)
class Need:
    run_id: str
    reasons: tuple[str, ...]

    # Whether the needed cell's record status stops this cell from running.
    def blocks(self, status: str | None) -> bool:
        return status in (UNUSABLE_PARENT if PARENT in self.reasons else FAILED)

    # What the needed cell is to this one, in words.
    def describe(self) -> str:
        work = [r for r in self.reasons if r != PARENT]
        parts = (["its parent (the run it continues)"] if PARENT in self.reasons else []) + (
            [f"which builds {', '.join(work)}"] if work else [])
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "reasons": list(self.reasons)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Need":
        return cls(str(d["run_id"]), tuple(d["reasons"]))


# The cells of a launch in the order they are handed to the executor (each after what it needs),
# what each starts after, the cells that cannot run in this launch with the reason, and when it
# was planned: a need's record older than that is an earlier attempt's (a failed cell run again),
# not the outcome the cell waits for.
@dataclass(frozen=True)
class Schedule:
    order: tuple[RunSpec, ...]
    needs: Mapping[str, tuple[Need, ...]]
    blocked: Mapping[str, str]
    since: float = 0.0

    # The needs of one cell (empty when it needs nothing).
    def of(self, run_id: str) -> tuple[Need, ...]:
        return self.needs.get(run_id, ())


#----------------------------------------------------------------------------


# The shared work a cell builds or reuses: chains of cache entries (paths under the cache root),
# each most specific first (`MethodEntry.work`).
def shared_work(spec: RunSpec, world_size: int) -> tuple[tuple[str, ...], ...]:
    work = registry.methods.get(spec.method).work
    return tuple(work(spec, world_size)) if work is not None else ()


# The entries of `shared_work` a cell still needs built: each chain up to its first complete entry
# (a complete student makes its Di[M]O prefix unneeded).
def needed_work(spec: RunSpec, world_size: int, done: Callable[[str], bool]) -> list[str]:
    out = []
    for chain in shared_work(spec, world_size):
        for key in chain:
            if done(key):
                break
            out.append(key)
    return out


# Whether the cache entry `key` under `cache_root` is complete and sealed (softdimo.teachers.cache.sealed).
def entry_done(cache_root: Path) -> Callable[[str], bool]:
    return lambda key: sealed(cache_root / key)


# The run id of the run a cell continues (its parent), None when it continues none.
def parent_of(spec: RunSpec) -> str | None:
    param = registry.methods.get(spec.method).parent_param
    return (dict(spec.params).get(param) or None) if param else None


# Plan a launch: `todo` the cells to submit, `active` the grid's cells still running from earlier
# launches, `parent_status` the record status of every parent run outside `todo` and `active`
# ("ok" where an ok record exists under the results root), `done` whether a cache entry is complete,
# `since` the time the launch read the records (Schedule.since).
def schedule(todo: Sequence[RunSpec], active: Sequence[RunSpec], parent_status: Mapping[str, str | None],
             done: Callable[[str], bool], world_size: int, since: float = 0.0) -> Schedule:
    todo_ids, active_ids = {s.run_id for s in todo}, {s.run_id for s in active}
    order = _parents_first(todo)
    blocked: dict[str, str] = {}
    for spec in order:
        parent = parent_of(spec)
        if parent is None or parent in active_ids:
            continue
        if parent in todo_ids:
            if parent in blocked:
                blocked[spec.run_id] = f"its parent {parent} cannot run either ({blocked[parent]})"
            continue
        status = parent_status.get(parent)
        if status != "ok":
            has = "no record" if status is None else f"a {status} record"
            blocked[spec.run_id] = (f"its parent run {parent} (whose student it continues) has {has} and "
                                    f"is not run by this command")
    runnable = [s for s in order if s.run_id not in blocked]

    leaders: dict[str, str] = {}
    direct: dict[str, dict[str, list[str]]] = {}
    for spec in [*active, *runnable]:
        reasons: dict[str, list[str]] = {}
        for key in needed_work(spec, world_size, done):
            leader = leaders.setdefault(key, spec.run_id)
            if leader != spec.run_id:
                reasons.setdefault(leader, []).append(key)
        parent = parent_of(spec)
        if parent is not None and (parent in todo_ids or parent in active_ids):
            reasons.setdefault(parent, []).append(PARENT)
        direct[spec.run_id] = reasons
    needs = {s.run_id: reduced for s in runnable if (reduced := _without_implied(direct, s.run_id))}
    return Schedule(tuple(runnable), needs, blocked, since)


# Cells ordered so that each comes after its parent when both are to run (otherwise in order).
def _parents_first(specs: Sequence[RunSpec]) -> list[RunSpec]:
    by_id = {s.run_id: s for s in specs}
    out: list[RunSpec] = []
    placed: set[str] = set()

    def place(spec: RunSpec, path: tuple[str, ...]) -> None:
        if spec.run_id in placed or spec.run_id in path:      # a cycle cannot be built by a grid
            return
        parent = parent_of(spec)
        if parent in by_id:
            place(by_id[parent], path + (spec.run_id,))
        placed.add(spec.run_id)
        out.append(spec)

    for spec in specs:
        place(spec, ())
    return out


# A cell's needs without those it has through another of its needs (it runs after them anyway);
# a parent is always kept (a diverged parent stops the cell, a diverged leader does not).
def _without_implied(direct: Mapping[str, Mapping[str, list[str]]], run_id: str) -> tuple[Need, ...]:
    def ancestors(rid: str, seen: set[str]) -> set[str]:
        for n in direct.get(rid, {}):
            if n not in seen:
                seen.add(n)
                ancestors(n, seen)
        return seen

    own = direct.get(run_id, {})
    implied = set().union(*(ancestors(n, set()) for n in own)) if own else set()
    return tuple(Need(n, tuple(reasons)) for n, reasons in own.items()
                 if PARENT in reasons or n not in implied)


#----------------------------------------------------------------------------


# The record status of each need, counting only records written since the launch planned
# (`since`, epoch seconds): an older record is an earlier attempt's, so the need is still to run.
def need_statuses(results_root: str | Path, grid: str, needs: Iterable[Need], since: float) -> dict[str, str | None]:
    return store.statuses_since(results_root, grid, [n.run_id for n in needs], since)


# The first need of a cell whose record stops it, None when none does.
def blocking_need(needs: Sequence[Need], statuses: Mapping[str, str | None]) -> Need | None:
    return next((n for n in needs if n.blocks(statuses.get(n.run_id))), None)


# Whether every need of a cell has its final record (ok or diverged), so that the cell may start.
def needs_met(needs: Sequence[Need], statuses: Mapping[str, str | None]) -> bool:
    return all(statuses.get(n.run_id) in store.FINAL_STATUSES for n in needs)


# Give a cell whose need failed its `DependencyFailed` record (unless it has a record already);
# returns the blocking need, None when no need blocks it. Only records since `since` count
# (need_statuses); `lost`: needs without a record whose job ended (they count as failed);
# `provenance` says who decided.
def record_if_blocked(results_root: str | Path, grid: str, spec: RunSpec, needs: Sequence[Need], since: float,
                      provenance: Mapping[str, Any], lost: Iterable[str] = ()) -> Need | None:
    statuses = need_statuses(results_root, grid, needs, since)
    statuses.update({rid: "failed" for rid in lost if statuses.get(rid) is None})
    need = blocking_need(needs, statuses)
    if need is None:
        return None
    status = statuses[need.run_id]
    why = _error_line(results_root, grid, need.run_id) or "its job ended without a record"
    message = (f"not run: it starts after run {need.run_id}, {need.describe()}, which ended {status} "
               f"({why}); `harness.run --rerun-failed` runs both again")
    record = store.failure_record(
        spec.run_id, grid, spec.description(), spec.to_json(),
        {"type": "DependencyFailed", "message": message, "traceback": "",
         "log": str(store.run_dir(results_root, grid, need.run_id) / "log.txt")},
        {"host": socket.gethostname(), **provenance, "after": [n.to_json() for n in needs]})
    try:
        store.write_record(store.run_dir(results_root, grid, spec.run_id), record)
    except store.RecordExistsError:
        pass                               # it ran after all (a final record): keep that
    return need


# "<type>: <first line of the message>" of a run's recorded error; "" when it has none.
def _error_line(results_root: str | Path, grid: str, run_id: str) -> str:
    try:
        error = store.read_record(store.record_path(results_root, grid, run_id)).get("error") or {}
    except FileNotFoundError:
        return ""
    except (store.CorruptRecordError, OSError) as e:
        return str(e)
    if not error:
        return ""
    lines = str(error.get("message", "")).splitlines()
    return f"{error.get('type', '?')}: {lines[0] if lines else ''}"


# The needs of every cell of a marker list (`after` of submission markers).
def needs_of(entries: Iterable[Mapping[str, Any]]) -> tuple[Need, ...]:
    return tuple(Need.from_json(e) for e in entries)
