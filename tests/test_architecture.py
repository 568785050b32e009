"""The house's walls (issue 13): rooms under bench/, no import circles, and the directions the data flows.

Imports are read from the source with ast, so the test sees function-level imports too and imports nothing."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bench"
TOP_LEVEL_ALLOWED = {"__init__", "__main__", "cli", "errors", "atomic", "hashing", "netguard", "scrub"}
# (importing room, imported room) pairs that would turn the data flow around.
FORBIDDEN = {("readers", "run"), ("measure", "readers"), ("measure", "planning"), ("profile", "run"),
             ("profile", "readers"), ("results", "run"), ("models", "run")}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(module: str, path: Path, known: dict[str, Path], top_level_only: bool) -> set[str]:
    """The bench modules `module` imports (a name imported from a package counts as its submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return {name for name in found if name in known}


def _room(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_at_most_the_shared_utilities_stay_at_the_top_of_the_package() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL_ALLOWED, f"new flat modules in bench/: {sorted(top - TOP_LEVEL_ALLOWED)}"


def test_no_room_imports_against_the_flow_of_the_data() -> None:
    known = _modules()
    wrong = sorted((m, d) for m, p in known.items() for d in _imports(m, p, known, top_level_only=False)
                   if (_room(m), _room(d)) in FORBIDDEN)
    assert not wrong, wrong


def test_no_import_circles_between_modules() -> None:
    known = _modules()
    graph = {m: _imports(m, p, known, top_level_only=True) - {m} for m, p in known.items()}
    # A package importing its own submodules is not a circle; a submodule importing its package's
    # __init__ is only one when that __init__ imports it back, which the search below still finds.
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep] if dep in path else [*path, dep]
            if dep not in state and (circle := visit(dep, [*path, dep])):
                return circle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            circle = visit(module, [module])
            assert circle is None, " -> ".join(circle)
