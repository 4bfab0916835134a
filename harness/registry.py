"""One typed registry per axis of the experiment matrix (teacher, method, relaxation, refinement,
metric, executor, baseline source, reward model), keyed by the short names used in grid files.

Built-in entries register when `harness.builtins` is imported; a user's own entries register from
a module named in the grid (`plugins: [my_lab.my_relaxation]`) or from the package entry-point
group `softdimo_harness.plugins`.
"""
from __future__ import annotations

import difflib
import importlib
import re
import threading
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
ENTRY_POINT_GROUP = "softdimo_harness.plugins"


# Raised for an unknown name; the message lists the valid names and the closest match.
class UnknownNameError(KeyError):
    def __init__(self, axis: str, name: str, valid: list[str]):
        self.axis, self.name, self.valid = axis, name, valid
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown {axis} {name!r}{hint}; allowed: {', '.join(valid) or '(none)'}")

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


teachers: Registry = Registry("teacher")
methods: Registry = Registry("method")
relaxations: Registry = Registry("relaxation")
refinements: Registry = Registry("refinement")
metrics: Registry = Registry("metric")
executors: Registry = Registry("executor")
baseline_sources: Registry = Registry("baseline source")
rewards: Registry = Registry("reward model")

AXES: dict[str, Registry] = {
    "teachers": teachers, "methods": methods, "relaxations": relaxations,
    "refinements": refinements, "metrics": metrics, "executors": executors,
    "baselines": baseline_sources, "rewards": rewards,
}

_loaded_plugins: set[str] = set()


# Import a user's plugin module (it registers its entries on import); errors name the module.
def load_plugin(module: str) -> None:
    if module in _loaded_plugins:
        return
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"plugin module {module!r} could not be imported: {e}") from e
    _loaded_plugins.add(module)


# Import every module advertised under the `softdimo_harness.plugins` entry-point group.
def load_entry_point_plugins() -> list[str]:
    loaded = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        load_plugin(ep.value.split(":")[0])
        loaded.append(ep.value)
    return loaded
