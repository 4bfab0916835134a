"""The import graph of the project's packages: one way down, no circles, `softdimo` independent,
the folders of `harness` in layers (each imports only the folders its layer allows), the contracts
on the ground floor.

Every `import` and `from ... import` statement of `harness/` and `softdimo/` counts, at any depth:
inside functions and under `if TYPE_CHECKING:` too (a type-only import still names the module it
types with); importing a submodule also imports its package. A circle means some module knows a
module above it.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "softdimo")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    # The longest project module that `name` is or lies in.
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


# module -> the project modules it imports: each target and the packages above it, except the
# importing module's own packages (Python imports those first, whatever the module imports).
def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
            for name in names:
                target = _resolve(name, modules)
                while target and target != module and target not in own:
                    graph[module].add(target)
                    target = target.rpartition(".")[0] or None
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "harness.contracts.registry" in graph["harness.grid.spec"]
    assert "softdimo.train" in graph["harness.methods.students"]
    assert "softdimo.teachers.base" in graph["harness.contracts.entries"]     # under TYPE_CHECKING only


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    cycle = _cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_softdimo_never_imports_harness() -> None:
    graph = import_graph()
    offenders = {m: sorted(t for t in ts if t.startswith("harness")) for m, ts in graph.items()
                 if m.startswith("softdimo") and any(t.startswith("harness") for t in ts)}
    assert offenders == {}


# The contracts every stage shares: the spec record, the entry types and their registries.
GROUND_FLOOR = {"harness.contracts.run_spec", "harness.contracts.entries", "harness.contracts.registry"}


# The floor stands on the basement: harness modules that import no other harness module (leaves), or
# only leaves (e.g. distributed, which reads failures' heartbeats); never on the floors above it.
def test_the_ground_floor_stands_on_the_basement_only() -> None:
    graph = import_graph()
    harness = {m for m in graph if m.startswith("harness")}
    leaves = {m for m in harness if not graph[m] & harness - {"harness"}}
    basement = leaves | {m for m in harness if graph[m] & harness - {"harness"} <= leaves}
    climbs = {m: sorted(graph[m] & harness - GROUND_FLOOR - basement - {"harness"}) for m in GROUND_FLOOR}
    assert {m: t for m, t in climbs.items() if t} == {}


# The layers of `harness/` (docs/design.md, "Layers"): each folder (or top-level module) and the
# folders it may import besides itself and `softdimo`. The relation is the design; the test below
# holds the code to it, type-only imports included.
MAY_IMPORT: dict[str, set[str]] = {
    "contracts": set(),
    "store": {"contracts"},
    "grid": {"contracts", "store"},
    "methods": {"contracts", "store", "grid"},
    "builtin": {"contracts", "store", "grid", "methods"},
    "cell": {"contracts", "store", "grid", "methods", "builtin"},
    "launch": {"contracts", "store", "grid", "methods", "builtin", "cell"},
    "report": {"contracts", "store", "grid", "methods", "builtin"},
    "prepare": {"contracts", "store", "grid", "methods", "builtin"},
    "api": {"contracts", "store", "grid", "methods", "builtin", "cell", "launch", "report"},
    "run": {"contracts", "store", "grid", "methods", "builtin", "cell", "launch", "report", "api"},
}


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_every_folder_of_harness_has_a_layer_and_the_layers_have_no_circle() -> None:
    top = {p.stem if p.suffix else p.name for p in (ROOT / "harness").iterdir()
           if p.name != "__init__.py" and not p.name.startswith((".", "__pycache__"))}
    assert top == set(MAY_IMPORT)
    assert _cycle({k: set(v) for k, v in MAY_IMPORT.items()}) is None


def test_each_folder_imports_only_what_its_layer_allows() -> None:
    graph = import_graph()
    wrong = {m: sorted(t for t in ts if t.startswith("harness.") and _layer(t) != _layer(m)
                       and _layer(t) not in MAY_IMPORT[_layer(m)])
             for m, ts in graph.items() if m.startswith("harness.")}
    assert {m: t for m, t in wrong.items() if t} == {}
