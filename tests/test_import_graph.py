"""The package's import graph: no circles among the backends and executors, and the
executors never import a backend (the backend builds its executor and hands it what it needs).

The graph is read from the source with `ast` and counts every import: at module level, inside
functions (a lazy import hides a circle from the interpreter, not from the design) and under
`if TYPE_CHECKING:` (a dependency of the types is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import slack_agents_sa

PACKAGE_DIR = Path(slack_agents_sa.__file__).parent
LOW_FLOORS = ("slack_agents_sa.backends", "slack_agents_sa.executors")


def module_name(path: Path, root: Path) -> str:
    """`root/pkg/sub/mod.py` -> `pkg.sub.mod`; a package's `__init__.py` -> the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Each module of the package at `root` -> the package's modules it imports anywhere."""
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            # `from pkg import sub` imports the submodule `pkg.sub` when there is one.
            targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in targets if target in paths and target != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _within(graph: dict[str, set[str]], prefixes: tuple[str, ...]) -> dict[str, set[str]]:
    def inside(name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)

    return {
        name: {target for target in targets if inside(target)}
        for name, targets in graph.items()
        if inside(name)
    }


def test_no_import_circle_within_or_between_the_backends_and_the_executors() -> None:
    low_floors = _within(import_graph(PACKAGE_DIR), LOW_FLOORS)
    assert "slack_agents_sa.backends.postgresql" in low_floors  # the graph was read
    assert "slack_agents_sa.executors.lanes" in low_floors
    assert circles(low_floors) == []


def test_the_executors_import_no_backend() -> None:
    graph = import_graph(PACKAGE_DIR)
    upward = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("slack_agents_sa.executors")
        for target in targets
        if target.startswith("slack_agents_sa.backends")
    }
    assert upward == set()


def test_a_circle_is_found_through_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub import a\n")
    (package / "sub" / "a.py").write_text("from . import b\n")
    (package / "sub" / "b.py").write_text(
        "try:\n    from ..c import thing\nexcept ImportError:\n    pass\n"
    )
    (package / "c.py").write_text("def later() -> None:\n    import pkg.sub.a\n")
    (package / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n"
    )
    (package / "e.py").write_text("import pkg.d\nimport os\n")
    graph = import_graph(package)
    assert graph["pkg.e"] == {"pkg.d"}
    assert circles(graph) == [["pkg.c", "pkg.sub", "pkg.sub.a", "pkg.sub.b"], ["pkg.d", "pkg.e"]]
