"""The import graph of the project's packages: one way down, no circles, `softdimo` independent.

Every `import` and `from ... import` statement of `harness/` and `softdimo/` counts, at any depth
(inside functions too), except those under `if TYPE_CHECKING:`; importing a submodule also imports
its package. A circle means some module knows a module above it.
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


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


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
        skip = _type_checking_nodes(tree)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
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
    assert "harness.registry" in graph["harness.spec"]
    assert "softdimo.train" in graph["harness.students"]


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    cycle = _cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_softdimo_never_imports_harness() -> None:
    graph = import_graph()
    offenders = {m: sorted(t for t in ts if t.startswith("harness")) for m, ts in graph.items()
                 if m.startswith("softdimo") and any(t.startswith("harness") for t in ts)}
    assert offenders == {}
