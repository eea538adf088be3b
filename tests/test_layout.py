"""The layout is the architecture (DESIGN.md, Layout): checked on the source, not by eye.

- Nothing in ``actors/`` imports ``web/``, Quart or Hypercorn.
- No module of ``actors/`` or ``web/`` is over 300 lines.
- No import circle between the project's modules (imports made only for type checking, under
  ``if TYPE_CHECKING:``, do not count: they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("actors", "web")
MAX_LINES = 300


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str, path: Path) -> set[str]:
    """The absolute names a module imports at run time."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_nothing_in_actors_imports_the_web_layer_or_an_http_server() -> None:
    offenders = [
        f"{name} imports {imported}"
        for name, path in _modules().items() if name.startswith("actors")
        for imported in _imports(name, path)
        if imported.split(".")[0] in ("web", "quart", "quart_trio", "quart_schema", "hypercorn")
    ]
    assert offenders == []


def test_no_module_is_over_three_hundred_lines() -> None:
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_there_is_no_import_circle() -> None:
    modules = _modules()
    graph = {name: {imported for imported in _imports(name, path) if imported in modules}
             for name, path in modules.items()}
    # A package's __init__ re-exporting its own submodules is not a circle through them.
    for name in graph:
        if modules[name].name == "__init__.py":
            graph[name] = {other for other in graph[name] if not other.startswith(name + ".")}
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def walk(name: str, trail: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph[name]):
            if state.get(other) == 1:
                circles.append([*trail[trail.index(other):], other] if other in trail
                               else [name, other])
            elif other not in state:
                walk(other, [*trail, other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert circles == []
