"""Grid files: YAML experiment matrices -> an ordered, de-duplicated list of `RunSpec`.

A grid file has exactly these top-level keys (only `name` and `matrix` or `include` are needed):

    name: soft_vs_hard            # results go to results/<name>/; letters, digits, '_', '-'
    description: ...              # free text, shown in reports
    scale: mini                   # mini (default) or paper; `--scale` overrides
    plugins: [my_lab.relax]       # modules imported before any name is resolved
    matrix:                       # axis -> list of values, multiplied out; or a LIST of such
      teacher: [digits]           #   mappings (the union of their products)
      method: [dimo]
      relaxation: [hard, gumbel, soft]
      seed: [0, 1, 2]
      distill.beta: [0.0, 0.5]    # any `<stage>.<field>` given as a list of values is an axis
    params: {distill.steps: 150}  # fixed `<stage>.<field>` values for every cell
    scales:                       # per-scale overrides, applied when that scale is chosen:
      paper:                      #   matrix: a mapping sets those axes in every product,
        matrix: {teacher: [maskbit]}  #     a list replaces the whole matrix
        params: {distill.steps: 30000}  # params: merged over `params`
        resources: gpu1           #   resources: the name of a resource profile
        compare: {reference: {relaxation: soft}}  # compare: replaces the top-level one
    exclude: [{relaxation: hard, distill.beta: 0.5}]  # partial cells to drop
    include: [{teacher: digits, method: teacher_sampler, seed: 0}]  # full cells to add
    compare:                      # the report compares every other row of a teacher with these
      reference: {relaxation: hard}    #   cells (axes and parameters); optionally per value of
      within: [refinement]             #   some axes (each row against the reference sharing them)

Everything is validated before anything runs: each problem becomes one line
`FILE:LINE: key: what is wrong; allowed: ...`, and all of them are raised together as GridError.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from harness.contracts import registry
from harness.contracts.registry import did_you_mean
from harness.contracts.run_spec import AXIS_KEYS, NONE, SCALES, CellError, ProblemsError, RunSpec
from harness.grid import yaml_lines
from harness.grid.selectors import (AXES as SELECTOR_AXES, SelectorError, check_selector, parse_selector, same, select,
                               spec_value)
from harness.grid.spec import DEFAULT_METHOD, CellErrors, resolve_cell, spec_defaults

GRID_KEYS = ("name", "description", "scale", "plugins", "matrix", "params", "scales", "exclude",
             "include", "compare")
COMPARE_KEYS = ("reference", "within")
SCALE_KEYS = ("matrix", "params", "resources", "compare")
MAX_CELLS = 100_000
DEFAULT_SCALE = "mini"
RESERVED_NAMES = ("report",)
_GRID_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_PARAM_KEY = re.compile(r"^[A-Za-z_]\w*\.[A-Za-z_]\w*$")
_RUN_ID = re.compile(r"^[0-9a-f]{16}$")
_AXES_HELP = f"{', '.join(AXIS_KEYS)}, or a parameter <stage>.<field>"

#----------------------------------------------------------------------------


# All problems found in one grid file, one `FILE:LINE: key: message` line each.
class GridError(ProblemsError):
    pass


# An expanded grid: its cells as RunSpecs (ordered, de-duplicated) and what launching needs.
@dataclass(frozen=True)
class Grid:
    path: Path
    name: str
    description: str
    scale: str
    plugins: tuple[str, ...]
    resources: str | None             # resource profile of this scale (None = executor default)
    specs: tuple[RunSpec, ...]
    compare: Mapping[str, Any] | None = None   # the report's reference cells ({reference, within})
    notes: tuple[str, ...] = ()                # how the grid was read, for --dry-run (defaults taken)

    # The short human-readable label of each cell, aligned with `specs`.
    def descriptions(self) -> list[str]:
        defaults: dict[tuple[str, str, str], dict[str, Any]] = {}
        out = []
        for s in self.specs:
            key = (s.teacher, s.method, s.refinement)
            if key not in defaults:
                defaults[key] = spec_defaults(s)
            out.append(s.description(defaults[key]))
        return out

# Parse a grid file into LineMaps and lists; raises GridError with the file and line.
def load_yaml(path: Path) -> Any:
    try:
        return yaml_lines.load_yaml(path, "grid")
    except yaml_lines.YamlFileError as e:
        raise GridError([str(e)]) from None

#----------------------------------------------------------------------------
# Validation and expansion.


@dataclass(frozen=True)
class _Source:
    mapping: Mapping[str, Any]        # a LineMap holding some keys of a cell
    path: str                         # its dotted location in the file, e.g. "scales.paper.params"


@dataclass
class _Product:
    axes: dict[str, list[Any]]        # axis -> values, in file order
    sources: list[_Source]            # where each axis was given (scale override first)
    line: int
    path: str


class _Checker:
    # Collects problems as `FILE:LINE: key: message` and remembers lines.
    def __init__(self, path: Path):
        self.path = path
        self.problems: list[tuple[int, str]] = []
        self._seen: set[str] = set()

    def add(self, line: int, key: str, message: str) -> None:
        text = f"{self.path}:{line}: {key}: {message}" if line else f"{self.path}: {key}: {message}"
        if text not in self._seen:
            self._seen.add(text)
            self.problems.append((line, text))

    # Raise every problem found so far, in the order of the file's lines.
    def raise_if_any(self) -> None:
        if self.problems:
            raise GridError([text for _, text in sorted(self.problems, key=lambda p: p[0])])


LineMap = yaml_lines.LineMap
_line = yaml_lines.line_of


# Load, validate and expand a grid file. `scale` (the CLI's --scale) overrides the file's;
# `overrides` (the CLI's --set KEY=VALUE) are `<stage>.<field>` values over every `params`; the
# entry point has loaded the grid's plugins (`harness.builtin.plugins`), and `plugin_errors` says why a
# plugin module could not be imported.
def load_grid(path: str | Path, scale: str | None = None, allow_large: bool = False,
              plugin_errors: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Grid:
    path = Path(path)
    doc = load_yaml(path)
    ck = _Checker(path)
    if doc is None:
        raise GridError([f"{path}:1: the grid file is empty; it needs at least name and matrix"])
    if not isinstance(doc, LineMap):
        raise GridError([f"{path}:1: the grid file must be a mapping of the keys "
                         f"{', '.join(GRID_KEYS)}; got {type(doc).__name__}"])

    for key in doc:
        if key not in GRID_KEYS:
            ck.add(_line(doc, key), str(key), f"unknown top-level key"
                   f"{did_you_mean(str(key), GRID_KEYS)}; allowed: {', '.join(GRID_KEYS)}")

    name = doc.get("name")
    if name is None:
        ck.add(1, "name", "missing; every grid needs a name (letters, digits, '_', '-')")
    elif not isinstance(name, str) or not _GRID_NAME.match(name):
        ck.add(_line(doc, "name"), "name", f"{name!r} is not a valid grid name; allowed: "
               f"letters, digits, '_' and '-' (it becomes the directory results/<name>/)")
    elif name in RESERVED_NAMES:
        ck.add(_line(doc, "name"), "name", f"{name!r} is reserved (results/{name}/ holds the "
               f"report); choose another name")
    description = doc.get("description", "")
    if not isinstance(description, str):
        ck.add(_line(doc, "description"), "description", "expected a string")
    non_blocking = len(ck.problems)          # problems so far do not stop validating the cells

    file_scale = doc.get("scale", DEFAULT_SCALE)
    if file_scale not in SCALES:
        ck.add(_line(doc, "scale"), "scale", f"unknown scale {file_scale!r}; allowed: "
               f"{', '.join(SCALES)}")
    if scale is not None and scale not in SCALES:
        ck.add(0, "--scale", f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    active = scale if scale is not None else file_scale

    plugins = _check_plugins(doc, ck, plugin_errors or {})
    params = _check_params(doc.get("params"), "params", _line(doc, "params"), ck)
    scale_params, scale_matrix, resources, scale_line, scale_body = _check_scales(doc, active, ck)
    set_params = _check_params(_line_map(overrides or {}), "--set", 0, ck)

    if "matrix" not in doc and "include" not in doc:
        ck.add(1, "matrix", "missing; a grid needs a matrix (axis -> list of values) or include")
    products = _check_matrix(doc.get("matrix"), "matrix", _line(doc, "matrix"), ck) \
        if "matrix" in doc else []
    if scale_matrix is not None:
        products = _override_products(products, scale_matrix, active, scale_line, ck)
    _check_overridden(products, params, scale_params, active, ck, set_params)
    excludes = _check_cell_list(doc.get("exclude"), "exclude", _line(doc, "exclude"), ck)
    includes = _check_cell_list(doc.get("include"), "include", _line(doc, "include"), ck)
    axes_of_matrix = {a for p in products for a in p.axes}
    for i, ex in enumerate(excludes):
        for key in ex:
            if key not in axes_of_matrix:
                ck.add(_line(ex, key), f"exclude[{i}].{key}", f"not an axis of the matrix; exclude "
                       f"names values of axes: {', '.join(sorted(axes_of_matrix)) or '(none)'}")
    if len(ck.problems) > non_blocking:      # the cells cannot be built: say what is wrong so far
        ck.raise_if_any()

    total = sum(math.prod(len(v) for v in p.axes.values()) for p in products) + len(includes)
    if total > MAX_CELLS and not allow_large:
        ck.add(_line(doc, "matrix"), "matrix", f"expands to {total:,} cells, more than "
               f"{MAX_CELLS:,}; pass --allow-large if you mean it")
        ck.raise_if_any()

    grid_params = {**params, **scale_params, **set_params}
    notes: set[str] = set()
    fixed = [_Source(set_params, "--set"), _Source(scale_params, f"scales.{active}.params"),
             _Source(params, "params")]
    specs, origins = _expand(products, excludes, includes, grid_params, active, plugins, ck, notes, fixed)
    ck.raise_if_any()
    specs = _resolve_parents(specs, origins, fixed, ck)
    ck.raise_if_any()
    _check_keys_read(products, includes, params, scale_params, active, specs, ck, set_params)
    if not specs:
        ck.add(_line(doc, "matrix"), "matrix", "the grid expands to zero cells (after exclude); "
               "nothing would run")
    if scale_body is not None and "compare" in scale_body:      # the scale's own reference cells
        compare = _check_compare(scale_body["compare"], _line(scale_body, "compare"), specs, ck,
                                 f"scales.{active}.compare")
    else:
        compare = _check_compare(doc.get("compare"), _line(doc, "compare"), specs, ck)
    ck.raise_if_any()
    return Grid(path, name, description, active, plugins, resources, tuple(specs), compare, tuple(sorted(notes)))


# A grid's cells, as the ordered, de-duplicated list of RunSpecs.
def expand(path: str | Path, scale: str | None = None, allow_large: bool = False) -> list[RunSpec]:
    return list(load_grid(path, scale, allow_large).specs)


# The `compare:` section (or the active scale's): a reference selector naming values some cell has,
# and the axes to compare within; None when absent.
def _check_compare(value: Any, line: int, specs: list[RunSpec], ck: _Checker,
                   where: str = "compare") -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, LineMap) or "reference" not in value:
        ck.add(line, where, "expected a mapping with `reference` (a mapping of axes / parameters to "
               "values) and optionally `within` (a list of axes)")
        return None
    for key in value:
        if key not in COMPARE_KEYS:
            ck.add(_line(value, key), f"{where}.{key}", f"unknown key{did_you_mean(str(key), COMPARE_KEYS)}; "
                   f"allowed: {', '.join(COMPARE_KEYS)}")
    ref, within = value["reference"], value.get("within", [])
    names = set(SELECTOR_AXES) | {k for s in specs for k, _ in s.params}
    if not isinstance(ref, LineMap) or not ref:
        ck.add(_line(value, "reference"), f"{where}.reference", "expected a non-empty mapping of axes / "
               "parameters to values, e.g. {relaxation: hard}")
        return None
    for key in list(ref) + (list(within) if isinstance(within, list) else []):
        if key not in names:
            ck.add(_line(ref, key) if key in ref else _line(value, "within"), f"{where}.{key}",
                   f"not an axis or parameter of the grid's cells{did_you_mean(str(key), sorted(names))}")
    if not isinstance(within, list):
        ck.add(_line(value, "within"), f"{where}.within", "expected a list of axes, e.g. [refinement]")
        within = []
    matched = [s for s in specs if all(same(spec_value(s, k), v) for k, v in ref.items())]
    if not matched and not ck.problems:
        ck.add(_line(value, "reference"), f"{where}.reference", f"matches no cell of the grid: {dict(ref)}")
    return {"reference": dict(ref), "within": list(within)}


# The grid's `plugins:` modules: names, and loaded (the entry point loads them before expanding,
# `harness.builtin.plugins`); a plugin that could not be imported is reported here.
def _check_plugins(doc: LineMap, ck: _Checker, errors: Mapping[str, str]) -> tuple[str, ...]:
    value = doc.get("plugins", [])
    line = _line(doc, "plugins")
    if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
        ck.add(line, "plugins", "expected a list of module names, e.g. [my_lab.my_relaxation]")
        return ()
    for m in value:
        if not _MODULE.match(m):
            ck.add(line, "plugins", f"{m!r} is not a module name (dotted Python identifiers)")
        elif m in errors or m not in sys.modules:
            why = errors.get(m, f"plugin module {m!r} is not loaded")
            ck.add(line, "plugins", f"{why}; the module must be importable (on PYTHONPATH or installed) by "
                   f"this process and by the jobs")
    return tuple(value)


def _check_params(value: Any, where: str, line: int, ck: _Checker) -> LineMap:
    if value is None:
        return _empty_map()
    if not isinstance(value, LineMap):
        ck.add(line, where, "expected a mapping of <stage>.<field>: value")
        return _empty_map()
    for key in value:
        if not isinstance(key, str) or not _PARAM_KEY.match(key):
            hint = " (axes go under matrix)" if key in AXIS_KEYS else ""
            ck.add(_line(value, key), f"{where}.{key}", f"not a parameter key{hint}; allowed: "
                   f"<stage>.<field>, e.g. distill.steps (see --list params)")
    return value


def _line_map(values: Mapping[str, Any]) -> LineMap:
    # Values given outside the file (--set): a LineMap whose keys have no line.
    m = LineMap(values)
    m.line, m.lines = 0, {k: 0 for k in values}
    return m


def _empty_map() -> LineMap:
    m = LineMap()
    m.line, m.lines = 0, {}
    return m


# The active scale's params, matrix override, resources, the matrix's line and the scale's own
# section (for its `compare`); checks every scale's structure.
def _check_scales(doc: LineMap, active: str, ck: _Checker
                  ) -> tuple[LineMap, Any, str | None, int, LineMap | None]:
    scales = doc.get("scales")
    empty = (_empty_map(), None, None, 0, None)
    if scales is None:
        return empty
    if not isinstance(scales, LineMap):
        ck.add(_line(doc, "scales"), "scales", f"expected a mapping of scale name -> overrides; "
               f"allowed scale names: {', '.join(SCALES)}")
        return empty
    out = empty
    for sname, body in scales.items():
        where = f"scales.{sname}"
        if sname not in SCALES:
            ck.add(_line(scales, sname), where, f"unknown scale{did_you_mean(str(sname), SCALES)}; "
                   f"allowed: {', '.join(SCALES)}")
            continue
        if not isinstance(body, LineMap):
            ck.add(_line(scales, sname), where, f"expected a mapping with keys "
                   f"{', '.join(SCALE_KEYS)}")
            continue
        for key in body:
            if key not in SCALE_KEYS:
                ck.add(_line(body, key), f"{where}.{key}", f"unknown key"
                       f"{did_you_mean(str(key), SCALE_KEYS)}; allowed: {', '.join(SCALE_KEYS)}")
        params = _check_params(body.get("params"), f"{where}.params", _line(body, "params"), ck)
        resources = body.get("resources")
        if resources is not None and not (isinstance(resources, str) and resources):
            ck.add(_line(body, "resources"), f"{where}.resources",
                   "expected the name of a resource profile (a string)")
            resources = None
        matrix = body.get("matrix")
        if matrix is not None:
            _check_matrix(matrix, f"{where}.matrix", _line(body, "matrix"), ck)
        if sname == active:
            out = (params, matrix, resources, _line(body, "matrix"), body)
    return out


# Check a matrix (mapping or list of mappings) and return its products.
def _check_matrix(value: Any, where: str, line: int, ck: _Checker) -> list[_Product]:
    if isinstance(value, LineMap):
        items = [(value, where)]
    elif isinstance(value, list) and value:
        items = []
        for i, m in enumerate(value):
            if not isinstance(m, LineMap):
                ck.add(line, f"{where}[{i}]", "expected a mapping of axis -> list of values")
            else:
                items.append((m, f"{where}[{i}]"))
    else:
        ck.add(line, where, "expected a mapping of axis -> list of values, or a non-empty list "
               "of such mappings (their products are joined)")
        return []
    products = []
    for m, path in items:
        axes = _check_axes(m, path, ck)
        if not m:
            ck.add(m.line, path, f"empty product; give at least one axis: {_AXES_HELP}")
        products.append(_Product(axes, [_Source(m, path)], m.line, path))
    return products


def _check_axes(m: LineMap, path: str, ck: _Checker) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for key, values in m.items():
        line = _line(m, key)
        if not isinstance(key, str) or (key not in AXIS_KEYS and not _PARAM_KEY.match(key)):
            ck.add(line, f"{path}.{key}", f"unknown axis{did_you_mean(str(key), AXIS_KEYS)}; "
                   f"allowed: {_AXES_HELP}")
            continue
        if not isinstance(values, list):
            ck.add(line, f"{path}.{key}", f"expected a list of values, got {values!r}; a fixed "
                   f"parameter belongs under params, a single axis value is written [{values}]")
            continue
        if not values:
            ck.add(line, f"{path}.{key}", "empty axis: give at least one value")
            continue
        axes[key] = values
    return axes


# Apply `scales.<scale>.matrix`: a mapping sets its axes in every product, a list replaces all.
def _override_products(products: list[_Product], override: Any, scale: str, line: int,
                       ck: _Checker) -> list[_Product]:
    where = f"scales.{scale}.matrix"
    if isinstance(override, list):
        return _check_matrix(override, where, line, _Checker(ck.path))
    if not isinstance(override, LineMap):
        return products
    axes = _check_axes(override, where, _Checker(ck.path))
    if not products:
        return [_Product(dict(axes), [_Source(override, where)], override.line, where)]
    return [_Product({**p.axes, **axes}, [_Source(override, where)] + p.sources, p.line, p.path)
            for p in products]


# A fixed parameter that a matrix axis would silently override is an error (the scale's own
# matrix may replace a top-level `params` value: that is what per-scale overrides are for).
def _check_overridden(products: list[_Product], params: LineMap, scale_params: LineMap,
                      scale: str, ck: _Checker, set_params: LineMap) -> None:
    for p in products:
        scale_axes = {k for src in p.sources if src.path.startswith("scales.") for k in src.mapping}
        for key in (k for k in p.axes if "." in k):
            if key in set_params:
                ck.add(0, f"--set.{key}", f"also an axis of {p.path}, whose values would override it; "
                       f"--set takes parameters the matrix does not vary")
            elif key in scale_params:
                ck.add(_line(scale_params, key), f"scales.{scale}.params.{key}", f"also an axis of "
                       f"{p.path}, whose values would override it; give it in one place")
            elif key in params and key not in scale_axes:
                ck.add(_line(params, key), f"params.{key}", f"also an axis of {p.path}, whose "
                       f"values would override it; give it in one place")


def _check_cell_list(value: Any, where: str, line: int, ck: _Checker) -> list[LineMap]:
    if value is None:
        return []
    if not isinstance(value, list):
        ck.add(line, where, "expected a list of cells (mappings of axis/parameter -> value)")
        return []
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, LineMap) or not m:
            ck.add(line, f"{where}[{i}]", "expected a non-empty mapping of axis/parameter -> value")
            continue
        for key in m:
            if not isinstance(key, str) or (key not in AXIS_KEYS and not _PARAM_KEY.match(key)):
                ck.add(_line(m, key), f"{where}[{i}].{key}", f"unknown key"
                       f"{did_you_mean(str(key), AXIS_KEYS)}; allowed: {_AXES_HELP}")
        out.append(m)
    return out


def _cell_value(cell: Mapping[str, Any], key: str) -> Any:
    if key in cell:
        return cell[key]
    return NONE if key in ("relaxation", "refinement") else _MISSING


_MISSING = object()


def _matches(cell: Mapping[str, Any], partial: Mapping[str, Any]) -> bool:
    return all(same(_cell_value(cell, k), v) for k, v in partial.items())


def _raw_cells(products: list[_Product]) -> Iterator[tuple[dict[str, Any], _Product]]:
    for p in products:
        keys = list(p.axes)
        for values in itertools.product(*(p.axes[k] for k in keys)):
            yield dict(zip(keys, values)), p


# Where a cell was written: its sources (product or include), line and dotted location.
@dataclass(frozen=True)
class _Origin:
    sources: list[_Source]
    line: int
    path: str


# Add a cell's problem to `ck` at the line of the key that caused it (the cell's own sources, then
# --set, the scale's params, the grid's params), else at the cell.
def _report(ck: _Checker, e: CellError, origin: _Origin, fixed: list[_Source]) -> None:
    message = str(e)[len(e.key) + 2:]
    for src in origin.sources + fixed:
        if e.key in src.mapping:
            ck.add(_line(src.mapping, e.key), f"{src.path}.{e.key}", message)
            return
    ck.add(origin.line, f"{origin.path}.{e.key}", message)


# Expand products, drop excludes, add includes, resolve every cell; problems go to `ck`. Returns
# the cells and where each was written.
def _expand(products: list[_Product], excludes: list[LineMap], includes: list[LineMap],
            grid_params: Mapping[str, Any], scale: str, plugins: tuple[str, ...], ck: _Checker,
            notes: set[str], fixed: list[_Source]) -> tuple[list[RunSpec], dict[str, _Origin]]:
    used = [False] * len(excludes)
    specs: dict[str, RunSpec] = {}
    origins: dict[str, _Origin] = {}

    def resolve(cell: dict[str, Any], origin: _Origin) -> None:
        try:
            spec = resolve_cell(cell, scale, plugins, grid_params)
        except CellErrors as errors:
            for e in errors.errors:
                _report(ck, e, origin, fixed)
            return
        except CellError as e:
            _report(ck, e, origin, fixed)
            return
        if "method" not in cell:
            notes.add(f"cells that name a relaxation or refinement without a method run method "
                      f"{DEFAULT_METHOD!r}")
        specs.setdefault(spec.run_id, spec)
        origins.setdefault(spec.run_id, origin)

    for cell, product in _raw_cells(products):
        hit = [i for i, ex in enumerate(excludes) if _matches(cell, ex)]
        for i in hit:
            used[i] = True
        if not hit:
            resolve(cell, _Origin(product.sources, product.line, product.path))
    for i, cell in enumerate(includes):
        resolve(dict(cell), _Origin([_Source(cell, f"include[{i}]")], cell.line, f"include[{i}]"))
    for i, ex in enumerate(excludes):
        if not used[i]:
            ck.add(ex.line, f"exclude[{i}]", f"matches no cell of the matrix: "
                   f"{dict(ex)}; check the values")
    return list(specs.values()), origins


# Each cell's parent (`MethodEntry.parent_param`, e.g. distill.init_from), resolved: a run id stays
# (a cell of this grid, or a run under the results root that the launch looks up), a selector
# becomes the run id of the one cell of this grid it picks (of the child's seed unless it names a
# seed). Parents are resolved first, since a child's run id hashes its parent's; each pair is
# checked (`MethodEntry.check_parent`). Returns the cells in order, their parents' ids filled in.
def _resolve_parents(specs: list[RunSpec], origins: Mapping[str, _Origin], fixed: list[_Source],
                     ck: _Checker) -> list[RunSpec]:
    done: dict[str, RunSpec | None] = {}

    def resolve(spec: RunSpec, path: tuple[str, ...]) -> RunSpec | None:
        if spec.run_id in done:
            return done[spec.run_id]
        method = registry.methods.get(spec.method)
        value = dict(spec.params).get(method.parent_param) if method.parent_param else None
        if not value:
            done[spec.run_id] = spec
            return spec
        key, out = method.parent_param, None
        try:
            if spec.run_id in path:
                raise CellError(key, f"the cells' parents form a cycle ({' -> '.join(path)} -> {spec.run_id}); "
                                     f"a chain of continuations must start from a cell that continues none")
            parent = _parent_cell(spec, key, value, specs)
            if parent is None:                   # a run id from elsewhere: looked up when launching
                out = spec
            elif (resolved := resolve(parent, path + (spec.run_id,))) is not None:
                if method.check_parent is not None:
                    method.check_parent(spec, resolved)
                params = {**dict(spec.params), key: resolved.run_id}
                out = dataclasses.replace(spec, params=tuple(sorted(params.items())))
        except CellError as e:
            _report(ck, e, origins[spec.run_id], fixed)
        done[spec.run_id] = out
        return out

    resolved = {s.run_id: s for spec in specs if (s := resolve(spec, ())) is not None}
    return list(resolved.values())


# The cell of the grid a parent value names: the cell of that run id, or the one cell a selector
# picks; None for a run id of no cell here (a run of another grid). Raises CellError.
def _parent_cell(child: RunSpec, key: str, value: Any, specs: list[RunSpec]) -> RunSpec | None:
    if not isinstance(value, str):
        raise CellError(key, f"expected a run id or a selector KEY=VALUE[,...] of one cell of this grid, got {value!r}")
    if _RUN_ID.match(value):
        return next((s for s in specs if s.run_id == value), None)
    others = [s for s in specs if s is not child]
    try:
        selector = parse_selector(value, key)
        selector.setdefault("seed", [child.seed])
        check_selector(selector, others, f"{key} {value!r}")
    except SelectorError as e:
        raise CellError(key, f"{str(e).partition(': ')[2]}; expected a run id or a selector of one other cell "
                             f"of this grid (of seed {child.seed} unless it names one)") from None
    picked = select(others, selector)
    if len(picked) != 1:
        listed = "; ".join(f"{s.run_id} ({s.description()})" for s in picked[:5]) or "none"
        raise CellError(key, f"{value!r} (seed {selector['seed'][0]} unless named) picks {len(picked)} cells, not "
                             f"one: {listed}; add keys (axes or parameters) until it names one cell")
    return picked[0]


# Every parameter key the grid sets must be read by at least one cell.
def _check_keys_read(products: list[_Product], includes: list[LineMap], params: LineMap,
                     scale_params: LineMap, scale: str, specs: list[RunSpec], ck: _Checker,
                     set_params: LineMap) -> None:
    read: set[str] = set()
    for s in specs:
        read.update(k for k, _ in s.params)
    given: list[tuple[LineMap, str, str]] = []
    for p in products:
        for src in p.sources:
            given += [(src.mapping, src.path, k) for k in src.mapping if k in p.axes]
    for i, cell in enumerate(includes):
        given += [(cell, f"include[{i}]", k) for k in cell]
    given += [(params, "params", k) for k in params]
    given += [(scale_params, f"scales.{scale}.params", k) for k in scale_params]
    given += [(set_params, "--set", k) for k in set_params]
    for mapping, path, key in given:
        if "." in str(key) and key not in read:
            methods = sorted({s.method for s in specs})
            ck.add(_line(mapping, key), f"{path}.{key}", f"no cell reads this parameter (the "
                   f"cells' methods {', '.join(methods)} do not use stage "
                   f"{str(key).split('.')[0]!r}); remove it or add cells that use it")
