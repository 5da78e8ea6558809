"""The package's import graph: no circles anywhere, and every module imports only modules on
its own floor or below (docs/architecture.md): the command line on top, nothing under it
importing it, the executors never importing a backend (the backend builds its executor and
hands it what it needs).

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

#: The floors from the top, each a list of modules or packages (a package holds its
#: submodules). A module may import its own floor and the floors below it, never above.
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("command line and agent tools", ("cli", "tools")),
    ("provider", ("", "provider")),  # "": the package's __init__, which exports the provider
    (
        "method groups and jobs",
        (
            "conversations",
            "keyvalue",
            "export",
            "oauth",
            "retention",
            "erasure",
            "search",
            "tracing",
            "stats",
            "keys",
            "importer",
        ),
    ),
    (
        "database",
        (
            "startup",
            "database",
            "migrate",
            "migration_filters",
            "migration_lock",
            "alembic_logging",
            "schema_version",
            "settings",
        ),
    ),
    ("backends", ("backends",)),
    ("executors", ("executors",)),
    (
        "models and types",
        (
            "models",
            "blocks",
            "search_text",
            "validation",
            "secretbox",
            "progress",
            "types",
            "errors",
        ),
    ),
)


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
            # `from pkg import sub` imports the submodule `pkg.sub` when there is one (and
            # `pkg` only as importing any submodule does); other names come from `pkg`.
            names = [f"{base}.{alias.name}" for alias in node.names]
            submodules = [name for name in names if name in paths]
            targets.update(submodules)
            if len(submodules) < len(names):
                targets.add(base)
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


def floor_of(module: str, package: str = "slack_agents_sa") -> int | None:
    """The index in `FLOORS` of the floor holding `module` (None: on no floor)."""
    relative = module.removeprefix(package).removeprefix(".")
    for index, (_, members) in enumerate(FLOORS):
        for member in members:
            if relative == member or (member and relative.startswith(member + ".")):
                return index
    return None


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, imported) pairs where the imported module is on a higher floor."""
    return {
        (name, target)
        for name, targets in graph.items()
        for target in targets
        if (floor_of(target) or 0) < (floor_of(name) or 0)
    }


def test_no_import_circle_anywhere_in_the_package() -> None:
    graph = import_graph(PACKAGE_DIR)
    assert "slack_agents_sa.cli.prune" in graph  # the graph was read
    assert circles(graph) == []


def test_every_module_is_on_a_floor() -> None:
    assert [name for name in import_graph(PACKAGE_DIR) if floor_of(name) is None] == []


def test_no_module_imports_a_floor_above_its_own() -> None:
    assert upward_imports(import_graph(PACKAGE_DIR)) == set()


def test_nothing_below_the_command_line_imports_it() -> None:
    graph = import_graph(PACKAGE_DIR)
    importers = {
        name for name, targets in graph.items() for target in targets if floor_of(target) == 0
    }
    assert importers and all(floor_of(name) == 0 for name in importers)


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    package = tmp_path / "slack_agents_sa"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        "def later() -> None:\n    from slack_agents_sa import stats\n"
    )
    (package / "stats.py").write_text("from slack_agents_sa.models import later\n")
    graph = import_graph(package)
    assert upward_imports(graph) == {("slack_agents_sa.models", "slack_agents_sa.stats")}
    assert circles(graph) == [["slack_agents_sa.models", "slack_agents_sa.stats"]]


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
    # `from . import b` is the submodule pkg.sub.b, not the package pkg.sub itself.
    assert graph["pkg.sub.a"] == {"pkg.sub.b"}
    assert circles(graph) == [["pkg.c", "pkg.sub.a", "pkg.sub.b"], ["pkg.d", "pkg.e"]]
