"""SQLite: pragmas, our own BEGINs, one shared connection, the worker-thread executor."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import BindParameter, ColumnElement, Insert, event, exists, func
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.pool import ConnectionPoolEntry

from slack_agents_sa.backends.base import (
    WRITE_LOCK_OPTION,
    Backend,
    ExecutorParts,
    UpsertShape,
    on_conflict_upsert,
)
from slack_agents_sa.errors import MigrationError

if TYPE_CHECKING:
    from slack_agents_sa.executors import Executor

#: How long a writer waits for another's lock before "database is locked" (ms).
BUSY_TIMEOUT_MS = 30_000
#: Execution option marking a connection whose statements each commit on their own.
AUTOCOMMIT_OPTION = "slack_agents_sa_autocommit"
#: Every connection's set-up. PRAGMA takes no bound parameters: the one place we spell a
#: number into SQL, a constant.
CONNECTION_PRAGMAS = ("PRAGMA foreign_keys = ON", "PRAGMA busy_timeout = 30000")
#: A file database's, besides: WAL, so readers never block the writer; NORMAL sync is
#: durable across app crashes and loses at most the last commits on power loss (SQLite's
#: documented trade-off).
FILE_PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL")


def _names_a_file(url: URL) -> bool:
    return (url.database or "") not in ("", ":memory:")


class SQLite(Backend):
    """SQLite through aiosqlite: one connection per provider, taking turns."""

    family = "sqlite"
    shares_one_connection = True
    migrates_in_batches = True

    def is_memory(self, url: URL) -> bool:
        return not _names_a_file(url) or url.query.get("mode") == "memory"

    def engine_options(
        self, url: URL, pool_options: dict[str, Any], schema: str | None
    ) -> dict[str, Any]:
        # In memory: one shared connection (StaticPool), pool sizing does not apply.
        return dict(pool_options) if _names_a_file(url) else {}

    def install_connection_hooks(self, engine: AsyncEngine) -> None:
        """Pragmas on connect; BEGIN as the connection's execution options say."""
        is_file = _names_a_file(engine.url)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            # Take transaction control from the sqlite3 module, so BEGIN is ours (_begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in CONNECTION_PRAGMAS + (FILE_PRAGMAS if is_file else ()):
                cursor.execute(pragma)
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(connection: Connection) -> None:
            options = connection.get_execution_options()
            if options.get(AUTOCOMMIT_OPTION):
                return  # each statement commits by itself
            if options.get(WRITE_LOCK_OPTION):
                # IMMEDIATE takes the write lock up front, so two writers queue on
                # busy_timeout instead of one failing when it upgrades a read lock.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            # Deferred: a reader (a host app's AsyncSession on our engine) takes no write
            # lock, so other processes keep writing while its transaction is open. The
            # provider's own writes lock up front (`shared_transaction`, the executor),
            # migrations through WRITE_LOCK_OPTION.
            connection.exec_driver_sql("BEGIN")

    def autocommit_options(self) -> dict[str, Any]:
        return {AUTOCOMMIT_OPTION: True}

    @asynccontextmanager
    async def shared_transaction(self, conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
        """BEGIN IMMEDIATE ... COMMIT on the shared autocommit connection, ROLLBACK on error.

        The sqlite3 module manages no transactions there, so these statements are the
        transaction. IMMEDIATE takes the write lock up front.
        """
        if await conn.run_sync(_in_transaction):
            # A call cancelled mid-ROLLBACK left one open: end it before starting anew.
            await conn.exec_driver_sql("ROLLBACK")
        await conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            await conn.exec_driver_sql("ROLLBACK")
            raise
        await conn.exec_driver_sql("COMMIT")

    def has_native_executor(self, url: URL) -> bool:
        # The worker's sqlite3.connect takes the path only: URL options (uri, mode, timeout)
        # would be ignored there, so such URLs keep SQLAlchemy's path. In-memory data lives
        # in one connection, which the worker's own connection cannot see.
        return _names_a_file(url) and not url.query

    def native_executor(self, parts: ExecutorParts) -> Executor:
        from slack_agents_sa.executors.sqlite import SQLiteExecutor

        return SQLiteExecutor(parts.url.database or "", parts.statements())

    def _build_upsert(self, shape: UpsertShape) -> Insert:
        return on_conflict_upsert(sqlite.insert, *shape)

    def json_field_is_text(
        self,
        document: ColumnElement[Any] | InstrumentedAttribute[Any],
        field: BindParameter[str],
        value: BindParameter[str],
    ) -> ColumnElement[bool] | None:
        members = func.json_each(document).table_valued("key", "value", "type")
        return exists().where(
            members.c.key == field, members.c.type == "text", members.c.value == value
        )

    async def before_migration(self, conn: AsyncConnection) -> None:
        # A batch migration copies a table and drops the old one; with foreign keys on,
        # that DROP deletes or nulls every row referring to it (ON DELETE CASCADE / SET
        # NULL) without a word. The pragma does nothing inside a transaction: before BEGIN.
        await conn.run_sync(_pragma, "PRAGMA foreign_keys = OFF")

    async def after_migration(self, conn: AsyncConnection) -> None:
        await conn.run_sync(_pragma, "PRAGMA foreign_keys = ON")

    def foreign_keys_enforced(self, conn: Connection) -> bool:
        return bool(conn.exec_driver_sql("PRAGMA foreign_keys").scalar())

    def check_foreign_keys(self, conn: Connection) -> None:
        problems = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
        if not problems:
            return
        counts = Counter((str(table), str(parent)) for table, _rowid, parent, _fk in problems)
        found = "; ".join(
            f"{count} row(s) of {table} refer to missing rows of {parent}"
            for (table, parent), count in sorted(counts.items())
        )
        raise MigrationError(
            f"migration rolled back: foreign key check failed after it ran: {found} "
            "(PRAGMA foreign_key_check lists them)"
        )


def _in_transaction(conn: Connection) -> bool:
    return bool(conn.connection.driver_connection.in_transaction)  # type: ignore[union-attr]


def _pragma(conn: Connection, statement: str) -> None:
    """Run a PRAGMA on the driver's connection, past SQLAlchemy's transaction handling (which
    would BEGIN first: `foreign_keys` does nothing inside a transaction)."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
