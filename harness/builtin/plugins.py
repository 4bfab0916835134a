"""Filling the registries: the built-in entries (`harness.builtin.all_entries`, imported on demand), the
modules a grid names under `plugins:`, and the modules of the `softdimo_harness.plugins`
entry-point group of installed packages. Only the entry points call this module: the commands
(`harness.run`, `harness.report`, `harness.cell.evaluate`, `harness.prepare.assets`,
`harness.report.baselines`), the library (`harness.api`) and a job's start-up (`harness.cell`).
"""
from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path
from typing import Iterable

ENTRY_POINT_GROUP = "softdimo_harness.plugins"

_loaded: set[str] = set()

#----------------------------------------------------------------------------


# Import a user's plugin module (it registers its entries on import); errors name the module.
def load_module(module: str) -> None:
    if module in _loaded:
        return
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"plugin module {module!r} could not be imported: {e}") from e
    _loaded.add(module)


# The built-in entries and every module of the entry-point group; returns the group's modules.
def load_builtins() -> list[str]:
    import harness.builtin.all_entries  # noqa: F401  (registers the built-in entries)
    loaded = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        load_module(ep.value.split(":")[0])
        loaded.append(ep.value)
    return loaded


# The built-ins, the entry-point group and the given plugin modules.
def load_all(modules: Iterable[str] = ()) -> None:
    load_builtins()
    for module in modules:
        load_module(module)


# The modules a grid file names under `plugins:` (a file that cannot be read names none: the grid's
# own validation reports it).
def grid_plugins(path: str | Path) -> list[str]:
    from harness.grid import GridError, load_yaml
    try:
        doc = load_yaml(Path(path))
    except GridError:
        return []
    value = doc.get("plugins", []) if isinstance(doc, dict) else []
    return [m for m in value if isinstance(m, str)] if isinstance(value, list) else []


# Load a grid file's plugin modules; returns {module: why it could not be imported} for the others.
def load_grid_plugins(path: str | Path) -> dict[str, str]:
    errors = {}
    for module in grid_plugins(path):
        try:
            load_module(module)
        except Exception as e:        # a failing plugin is reported by the grid's validation
            errors[module] = str(e) if isinstance(e, ImportError) else \
                f"plugin module {module!r} failed on import: {type(e).__name__}: {e}"
    return errors
