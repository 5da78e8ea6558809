"""Alembic driven from code: where the migrations are, upgrade at start-up, the schema check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_agents_sa import dialects
from slack_agents_sa.errors import SchemaOutOfDateError
from slack_agents_sa.models import OUR_TABLES

#: Our own version table, so a host app's `alembic_version` is never touched.
VERSION_TABLE = "slack_agents_sa_version"

_PACKAGE_DIR = Path(__file__).resolve().parent


def script_location() -> Path:
    """The migrations folder: `slack_agents_sa/migrations` in a wheel, `alembic/` in a checkout."""
    for candidate in (_PACKAGE_DIR / "migrations", _PACKAGE_DIR.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"slack_agents_sa migrations not found next to {_PACKAGE_DIR}")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic `Config` for our migrations; with `connection`, env.py migrates on it."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["connection"] = connection
    return config


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return set(context.get_current_heads())


async def run_locked(
    engine: AsyncEngine, step: Callable[[Connection], None], schema: str | None
) -> None:
    """Run an Alembic step in one transaction, holding the migration lock.

    With a `schema` (the engine's search_path, see `dialects.engine_options`), the schema
    is created first; our tables and version table then land in it.
    """
    async with engine.begin() as conn:
        await dialects.take_migration_lock(conn)
        try:
            await dialects.ensure_schema(conn, schema)
            await conn.run_sync(step)
        finally:
            await dialects.release_migration_lock(conn)


async def upgrade(engine: AsyncEngine, revision: str = "head", schema: str | None = None) -> None:
    """Migrate up to `revision`; concurrent callers queue on a lock and find nothing to do."""
    await run_locked(
        engine, lambda connection: command.upgrade(alembic_config(connection), revision), schema
    )


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Migrate down to `revision` ("base" removes every table of ours)."""
    await run_locked(
        engine, lambda connection: command.downgrade(alembic_config(connection), revision), None
    )


async def upgrade_to_head(engine: AsyncEngine, schema: str | None = None) -> None:
    """Bring the database to head (what `Provider.initialize()` does)."""
    await upgrade(engine, "head", schema)


def run_our_migrations(connection: Connection, revision: str = "head") -> None:
    """Upgrade our tables to `revision` on `connection`, from inside a host app's Alembic env.py.

    Our revisions and our version table only: the host's `alembic_version` and tables are
    never touched. Built on MigrationContext rather than Alembic's command API, because a
    command would replace the host environment's `alembic.context` while it is running.
    """
    script = ScriptDirectory.from_config(alembic_config())

    def steps(current: Any, _context: MigrationContext) -> Any:
        return script._upgrade_revs(revision, current)

    migration = MigrationContext.configure(
        connection,
        opts={
            "version_table": VERSION_TABLE,
            "fn": steps,
            "script": script,
            "render_as_batch": connection.dialect.name == "sqlite",
        },
    )
    with Operations.context(migration):
        migration.run_migrations()


def is_ours(name: str | None, type_: str) -> bool:
    """Whether a schema object is ours, for a host env.py's `include_object`/`include_name`:
    return `not is_ours(...)` there and autogenerate leaves our tables to our migrations."""
    if type_ != "table" or name is None:
        return False
    return name == VERSION_TABLE or name in OUR_TABLES


def _table_name(obj: Any, name: str | None, type_: str) -> str | None:
    """The table an Alembic schema object belongs to (itself, for a table)."""
    return name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)


def only_ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic `include_object` of our environment: our tables and what belongs to them.

    A host app may add its tables to our shared `metadata`; they are its migrations'
    business, never ours.
    """
    table = _table_name(obj, name, type_)
    return table is None or is_ours(table, "table")


def all_but_ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic `include_object` for a host app's environment: everything but our tables."""
    table = _table_name(obj, name, type_)
    return table is None or not is_ours(table, "table")


async def require_head(engine: AsyncEngine) -> None:
    """Fail unless the schema is at head (used when `migrate` is off)."""
    async with engine.connect() as conn:
        current = await conn.run_sync(current_revisions)
    heads = head_revisions()
    if current != heads:
        found = ", ".join(sorted(current)) or "no slack_agents_sa schema"
        raise SchemaOutOfDateError(
            f"database schema is at {found}, but this slack_agents_sa needs "
            f"{', '.join(sorted(heads))}: run `alembic upgrade head` "
            "(or `slack-agents-sa upgrade`), or set `migrate: true` in the storage options"
        )
