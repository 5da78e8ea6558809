"""Which schema objects are ours: Alembic `include_object` filters for our migration
environment (`only_ours`) and for a host app's (`all_but_ours`), so each autogenerates
only its own tables. Without Alembic: a host's env.py imports these from `migrate`."""

from __future__ import annotations

from typing import Any

from slack_agents_sa.models import (
    MIGRATION_LEASE_TABLE,
    OUR_TABLES,
    QUERY_INDEXES,
    SEARCH_INDEX,
    SEARCH_TABLE,
)
from slack_agents_sa.schema_version import VERSION_TABLE


def is_ours(name: str | None, type_: str) -> bool:
    """Whether a schema object is ours, for a host env.py's `include_object`/`include_name`:
    return `not is_ours(...)` there and autogenerate leaves our tables to our migrations."""
    if type_ != "table" or name is None:
        return False
    return (
        name in (VERSION_TABLE, MIGRATION_LEASE_TABLE)
        or name in OUR_TABLES
        or _is_search_index(name)
    )


def _is_search_index(name: str) -> bool:
    """SQLite's FTS5 table (its shadow tables, `<name>_data`, ..., and `<name>_state`) or the
    search index: built by migrations 0007 and 0009, described by no model."""
    return name in (SEARCH_INDEX, SEARCH_TABLE) or name.startswith(f"{SEARCH_TABLE}_")


def _table_name(obj: Any, name: str | None, type_: str) -> str | None:
    """The table an Alembic schema object belongs to (itself, for a table)."""
    return name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)


def only_ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic `include_object` of our environment: our tables and what belongs to them.

    A host app may add its tables to our shared `metadata`; they are its migrations'
    business, never ours.
    """
    table = _table_name(obj, name, type_)
    if name is not None and (_is_search_index(name) or name in QUERY_INDEXES):
        return False  # no model describes it: autogenerate would drop it
    # The lease table is no model: our migrations neither create nor drop it.
    return table is None or (is_ours(table, "table") and table != MIGRATION_LEASE_TABLE)


def all_but_ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic `include_object` for a host app's environment: everything but our tables."""
    table = _table_name(obj, name, type_)
    return table is None or not is_ours(table, "table")
