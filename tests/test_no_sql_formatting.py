"""No SQL is assembled by string formatting anywhere in the package: every value that
reaches SQL is a bound parameter. (ruff's S608 checks the same from another angle.)"""

from __future__ import annotations

import ast
from pathlib import Path

import slack_agents_sa
from slack_agents_sa.backends import SessionOptions
from slack_agents_sa.backends import sqlite as sqlite_backend

PACKAGE = Path(slack_agents_sa.__file__).resolve().parent
#: Calls whose first argument is SQL text.
SQL_TAKING = {"text", "execute", "exec_driver_sql", "executescript", "executemany"}


def _formatted(node: ast.expr) -> bool:
    """An f-string, `%` or `+` on strings, or `.format(...)`: SQL built from pieces."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
    )


def _sql_calls(tree: ast.AST) -> list[ast.Call]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in SQL_TAKING:
                calls.append(node)
    return calls


def test_no_sql_text_is_built_by_formatting() -> None:
    offenders = []
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for call in _sql_calls(tree):
            if _formatted(call.args[0]):
                offenders.append(f"{source.relative_to(PACKAGE)}:{call.lineno}")
    assert offenders == []


def test_the_check_catches_formatted_sql() -> None:
    tree = ast.parse('conn.execute(text(f"SELECT * FROM t WHERE k = {key}"))')
    assert any(_formatted(call.args[0]) for call in _sql_calls(tree))


def test_the_busy_timeout_pragma_says_the_same_as_its_constant() -> None:
    pragma = f"PRAGMA busy_timeout = {sqlite_backend.BUSY_TIMEOUT_MS}"
    assert pragma in sqlite_backend.connection_pragmas(SessionOptions(), is_file=False)
