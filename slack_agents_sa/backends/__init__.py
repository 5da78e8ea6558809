"""One object per database, picked once: the only place a dialect name is read.

A new database is a new module here with a `Backend` subclass, named in `_MODULES`; the
provider's method groups never change for it. A backend's module (with its dialect and
driver) is imported only when a URL names that database.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

from sqlalchemy.engine import URL

from slack_agents_sa.backends.base import (
    Backend,
    ExecutorParts,
    SessionOptions,
)
from slack_agents_sa.backends.migration_steps import (
    MIGRATION_LOCK_TIMEOUT_S,
    WRITE_LOCK_OPTION,
)

#: Plain URL schemes and the async driver each gets.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
}

#: Dialect name -> (module of this package, its `Backend` subclass).
_MODULES: dict[str, tuple[str, str]] = {
    "sqlite": ("sqlite", "SQLite"),
    "postgresql": ("postgresql", "PostgreSQL"),
    "mysql": ("mysql", "MySQL"),
    "mariadb": ("mysql", "MySQL"),
}


@cache
def _backend_named(dialect_name: str) -> Backend:
    found = _MODULES.get(dialect_name)
    if found is None:
        return Backend(dialect_name)
    module, name = found
    backend_class: type[Backend] = getattr(import_module(f"{__name__}.{module}"), name)
    return backend_class(dialect_name)


def async_drivername(drivername: str) -> str:
    """A URL's `drivername` with the async driver a plain scheme (`postgresql`) gets."""
    return _ASYNC_DRIVERS.get(drivername, drivername)


def backend_for(where: URL | str) -> Backend:
    """The backend of a URL or of a SQLAlchemy dialect name (`conn.dialect.name`); any
    dialect without a module here gets the generic `Backend`."""
    return _backend_named(where.get_backend_name() if isinstance(where, URL) else where)


__all__ = [
    "MIGRATION_LOCK_TIMEOUT_S",
    "WRITE_LOCK_OPTION",
    "Backend",
    "ExecutorParts",
    "SessionOptions",
    "async_drivername",
    "backend_for",
]
