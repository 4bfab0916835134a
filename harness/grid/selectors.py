"""Cell selectors: `KEY=VALUE[,KEY=VALUE...]` text picking the cells of a grid by their axes and
parameters (`harness.run --only`, a `distill.init_from` that names a cell of the same grid), and
the value matching the grid's `compare` reference uses too.

Values are read as YAML (`seed=0` is the integer 0, `eval.metrics=[a, b]` a list); a key given
twice takes either value (`teacher=maskbit,teacher=maskgit`), different keys must all match.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import yaml

from harness.contracts.registry import did_you_mean
from harness.grid.spec import RunSpec

AXES = ("teacher", "method", "relaxation", "refinement", "seed", "scale")
_MISSING = object()

#----------------------------------------------------------------------------


# A selector that cannot be read or that names something no cell has; the message says what is allowed.
class SelectorError(ValueError):
    pass


# The value of an axis or a `<stage>.<field>` parameter of a cell (lists for tuple values); a
# sentinel for a parameter the cell does not read.
def spec_value(spec: RunSpec, key: str) -> Any:
    if key in AXES:
        return getattr(spec, key)
    value = dict(spec.params).get(key, _MISSING)
    return list(value) if isinstance(value, tuple) else value


# Whether a cell's value equals a selector's: same type, except that integers and floats compare
# by value (seed 0 is not False).
def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


# Read `KEY=VALUE[,KEY=VALUE...]` into {key: [values]}; `where` names the option or key for errors.
def parse_selector(text: str, where: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in _split_top_level(text):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SelectorError(f"{where} {text!r}: expected KEY=VALUE[,KEY=VALUE...], e.g. "
                                f"teacher=maskbit,relaxation=soft")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as e:
            raise SelectorError(f"{where} {text!r}: the value of {key} is not YAML ({e})") from None
        out.setdefault(key, []).append(parsed)
    if not out:
        raise SelectorError(f"{where}: empty selector; expected KEY=VALUE[,KEY=VALUE...]")
    return out


def _split_top_level(text: str) -> list[str]:
    # Split on commas outside brackets and quotes ("eval.metrics=[a, b],seed=0" is two items).
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [s for s in (item.strip() for item in items) if s]


# Whether a cell matches every key of a selector (any of a key's values).
def matches(spec: RunSpec, selector: Mapping[str, Sequence[Any]]) -> bool:
    return all(any(same(spec_value(spec, k), v) for v in values) for k, values in selector.items())


# Check a selector against the cells it may pick: every key an axis or a parameter some cell has,
# every value one some cell has. Raises SelectorError naming the key and what is allowed.
def check_selector(selector: Mapping[str, Sequence[Any]], specs: Sequence[RunSpec], where: str) -> None:
    params = sorted({k for s in specs for k, _ in s.params})
    for key, values in selector.items():
        if key not in AXES and key not in params:
            raise SelectorError(f"{where}: unknown key {key!r}{did_you_mean(key, list(AXES) + params)}; "
                                f"allowed: {', '.join(AXES)}, or a <stage>.<field> parameter the cells "
                                f"read (--list params)")
        present = [spec_value(s, key) for s in specs]
        for value in values:
            if not any(same(p, value) for p in present):
                shown = sorted({repr(p) if not isinstance(p, str) else p for p in present if p is not _MISSING})
                hint = did_you_mean(value, shown) if isinstance(value, str) else ""
                raise SelectorError(f"{where}: no cell has {key} = {value!r}{hint}; the cells' values: "
                                    f"{', '.join(shown) or '(none)'}")


# The cells a checked selector picks, in order.
def select(specs: Sequence[RunSpec], selector: Mapping[str, Sequence[Any]]) -> list[RunSpec]:
    return [s for s in specs if matches(s, selector)]
