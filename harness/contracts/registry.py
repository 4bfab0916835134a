"""One typed registry per axis of the experiment matrix (teacher, method, relaxation, refinement,
metric, reward model, evaluation protocol: the entry types of `harness.contracts.entries`), keyed
by the short names used in grid files, and the one "did you mean" of the project. A registry is
declared beside its entry type: the executors' in `harness.launch.executors`, the baseline sources' in `harness.store.baselines`;
`harness.run.REGISTRIES` names them all.

The registries start empty: `harness.builtin.plugins` fills them (the built-in entries of `harness.builtin`,
a grid's `plugins:` modules and the `softdimo_harness.plugins` entry-point group), and only the
entry points (the commands and a job's start-up) call it.
"""
from __future__ import annotations

import difflib
import re
import threading
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from harness.contracts.entries import (MethodEntry, MetricEntry, ProtocolFamily, RefinementEntry, RelaxationEntry,
                             RewardEntry, TeacherEntry)

T = TypeVar("T")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


# " (did you mean 'x'?)" for the allowed name closest to `word`, or "" when none is close.
def did_you_mean(word: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# Raised for an unknown name; the message lists the valid names and the closest match.
class UnknownNameError(KeyError):
    def __init__(self, axis: str, name: str, valid: list[str]):
        self.axis, self.name, self.valid = axis, name, valid
        super().__init__(f"unknown {axis} {name!r}{did_you_mean(name, valid)}; allowed: "
                         f"{', '.join(valid) or '(none)'}")

    def __str__(self) -> str:
        return self.args[0]


# A name -> object mapping for one axis; duplicate names raise, lookups suggest close names.
class Registry(Generic[T]):
    def __init__(self, axis: str):
        self.axis = axis
        self._entries: dict[str, T] = {}
        self._lock = threading.RLock()

    # Register `obj` under `name`; usable as a decorator (`@reg.register("x")`) or directly.
    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        if not _NAME.match(name):
            raise ValueError(f"{self.axis} name {name!r} must be letters, digits, '_', '-' or '.'")

        def add(o: T) -> T:
            with self._lock:
                old = self._entries.get(name)
                if old is not None and old is not o:
                    raise ValueError(f"{self.axis} {name!r} is already registered ({old!r})")
                self._entries[name] = o
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        with self._lock:
            if name not in self._entries:
                raise UnknownNameError(self.axis, name, sorted(self._entries))
            return self._entries[name]

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        with self._lock:
            return sorted(self._entries.items())


teachers: Registry[TeacherEntry] = Registry("teacher")
methods: Registry[MethodEntry] = Registry("method")
relaxations: Registry[RelaxationEntry] = Registry("relaxation")
refinements: Registry[RefinementEntry] = Registry("refinement")
metrics: Registry[MetricEntry] = Registry("metric")
rewards: Registry[RewardEntry] = Registry("reward model")
protocols: Registry[ProtocolFamily] = Registry("protocol")     # protocol name -> the family that scores it
