"""Typed, range-checked parameters for stage configurations.

Every stage configuration (distill, relax, sample, a teacher's or a refinement's own) is a frozen
dataclass whose fields are declared with `param`, so the grid validator reads types, allowed
ranges and choices from one place.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, get_type_hints


# Declare a configuration field: default, inclusive range [lo, hi], allowed choices, help text.
def param(default: Any, *, lo: float | None = None, hi: float | None = None,
          choices: tuple[Any, ...] | None = None, help: str = "") -> Any:
    meta = {"lo": lo, "hi": hi, "choices": choices, "help": help}
    if isinstance(default, (list, dict, set)):
        raise TypeError("parameters must be immutable: use a tuple")
    return dataclasses.field(default=default, metadata=meta)


# One field's schema, as the validator and the `--list params` output need it.
@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    type: type
    default: Any
    lo: float | None
    hi: float | None
    choices: tuple[Any, ...] | None
    help: str

    # Human-readable description of what values are allowed.
    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
                tuple: "a list"}.get(self.type, self.type.__name__)
        if self.lo is not None and self.hi is not None:
            return f"{kind} in [{self.lo}, {self.hi}]"
        if self.lo is not None:
            return f"{kind} >= {self.lo}"
        if self.hi is not None:
            return f"{kind} <= {self.hi}"
        return kind

    # Coerce and check one value; raises ValueError with the allowed values on failure.
    def check(self, value: Any) -> Any:
        t = self.type
        if t is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected {self.allowed()}, got {value!r}")
        elif t is int:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise ValueError(f"expected {self.allowed()}, got {value!r}")
        elif t is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected {self.allowed()}, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {value!r}")
        elif t is str:
            if not isinstance(value, str):
                raise ValueError(f"expected {self.allowed()}, got {value!r}")
        elif t is tuple:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"expected {self.allowed()}, got {value!r}")
            value = tuple(value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"expected {self.allowed()}, got {value!r}")
        if t in (int, float):
            if self.lo is not None and value < self.lo or self.hi is not None and value > self.hi:
                raise ValueError(f"expected {self.allowed()}, got {value!r}")
        return value


# The schema of every field of a configuration dataclass, keyed by field name (cached per class:
# grids resolve it for every cell; callers must not mutate the returned mapping).
@functools.lru_cache(maxsize=None)
def schema(config_cls: type) -> dict[str, ParamSpec]:
    hints = get_type_hints(config_cls)
    out = {}
    for f in dataclasses.fields(config_cls):
        t = hints[f.name]
        base = getattr(t, "__origin__", t)
        out[f.name] = ParamSpec(f.name, base, f.default, f.metadata.get("lo"), f.metadata.get("hi"),
                                f.metadata.get("choices"), f.metadata.get("help", ""))
    return out
