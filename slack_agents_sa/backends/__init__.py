"""One object per database, picked once: the only place a dialect name is read.

A new database is a new module here with a `Backend` subclass; the provider's method
groups never change for it.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy.engine import URL

from slack_agents_sa.backends.base import (
    MIGRATION_LOCK_TIMEOUT_S,
    WRITE_LOCK_OPTION,
    Backend,
    ExecutorParts,
    SessionOptions,
)
from slack_agents_sa.backends.mysql import MySQL
from slack_agents_sa.backends.postgresql import PostgreSQL
from slack_agents_sa.backends.sqlite import SQLite

_BY_NAME: dict[str, type[Backend]] = {
    "sqlite": SQLite,
    "postgresql": PostgreSQL,
    "mysql": MySQL,
    "mariadb": MySQL,
}


@cache
def _backend_named(dialect_name: str) -> Backend:
    return _BY_NAME.get(dialect_name, Backend)(dialect_name)


def backend_for(where: URL | str) -> Backend:
    """The backend of a URL or of a SQLAlchemy dialect name (`conn.dialect.name`); any
    dialect without a module here gets the generic `Backend`."""
    return _backend_named(where.get_backend_name() if isinstance(where, URL) else where)


__all__ = [
    "MIGRATION_LOCK_TIMEOUT_S",
    "WRITE_LOCK_OPTION",
    "Backend",
    "ExecutorParts",
    "MySQL",
    "PostgreSQL",
    "SQLite",
    "SessionOptions",
    "backend_for",
]
