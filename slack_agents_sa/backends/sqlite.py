"""SQLite: pragmas, our own BEGINs, calls taking turns, its errors, the worker-thread executor."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Insert,
    Integer,
    LargeBinary,
    Select,
    cast,
    event,
    exists,
    func,
    select,
    true,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, Connection, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.pool import ConnectionPoolEntry

from slack_agents_sa.backends.base import (
    Backend,
    ExecutorParts,
    SessionOptions,
    UpsertShape,
    on_conflict_upsert,
)
from slack_agents_sa.backends.migration_steps import (
    WRITE_LOCK_OPTION,
)
from slack_agents_sa.backends.search import SQLiteSearch
from slack_agents_sa.errors import MigrationError
from slack_agents_sa.executors.base import Fault
from slack_agents_sa.executors.sqlite_connection import (
    PROGRESS_STEPS,
    StatementDeadline,
    set_up_connection,
)

if TYPE_CHECKING:
    from slack_agents_sa.backends.builtin_source import BuiltinSource
    from slack_agents_sa.executors import Executor

#: How long a writer waits for another's lock before "database is locked" (ms), unless
#: option `lock_timeout` says otherwise.
BUSY_TIMEOUT_MS = 30_000
#: Execution option marking a connection whose statements each commit on their own.
AUTOCOMMIT_OPTION = "slack_agents_sa_autocommit"
#: A file database's set-up, besides foreign keys and the busy timeout: WAL, so readers
#: never block the writer; NORMAL sync is durable across app crashes and loses at most the
#: last commits on power loss (SQLite's documented trade-off).
FILE_PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL")
#: Where a connection's statement deadline is kept (its pool record's `info`).
_DEADLINE = "slack_agents_sa_deadline"
#: Set in a connection's `info` while a migration runs: no statement deadline then.
_NO_DEADLINE = "slack_agents_sa_no_deadline"
#: SQLite's result codes (`sqlite3.Error.sqlite_errorname`) and what each means.
_FAULT_BY_CODE = {
    "SQLITE_INTERRUPT": Fault.STATEMENT_TIMEOUT,
    "SQLITE_BUSY": Fault.LOCK_TIMEOUT,
    "SQLITE_BUSY_TIMEOUT": Fault.LOCK_TIMEOUT,
    "SQLITE_LOCKED": Fault.LOCK_TIMEOUT,
    # A read transaction that tried to write after another writer committed (WAL).
    "SQLITE_BUSY_SNAPSHOT": Fault.CONFLICT,
}


def connection_pragmas(
    session: SessionOptions, is_file: bool, *, waits: bool = True
) -> tuple[str, ...]:
    """Every connection's set-up; with `waits=False`, for a connection that never waits for
    a lock (the native executor's on the event loop's thread). PRAGMA takes no bound
    parameters: the one place we spell a number into SQL, an int computed here from a
    validated option."""
    busy_ms = _busy_ms(session) if waits else 0
    pragmas = ("PRAGMA foreign_keys = ON", f"PRAGMA busy_timeout = {busy_ms}")
    return pragmas + (FILE_PRAGMAS if is_file else ())


def _busy_ms(session: SessionOptions) -> int:
    """How long a connection waits for another's lock (ms): option `lock_timeout`, or ours."""
    if session.lock_timeout is None:
        return BUSY_TIMEOUT_MS
    return round(session.lock_timeout * 1000)


def _pause_on(dbapi_connection: Any) -> Callable[[float], object]:
    """A pause for a connect hook: it runs on the event loop (greenlet), so sleep there."""

    def pause(seconds: float) -> object:
        return dbapi_connection.run_async(lambda _driver: asyncio.sleep(seconds))

    return pause


def _names_a_file(url: URL) -> bool:
    return (url.database or "") not in ("", ":memory:")


class SQLite(Backend):
    """SQLite through aiosqlite (or the native worker thread): calls taking turns."""

    family = "sqlite"
    one_call_at_a_time = True
    migrates_in_batches = True
    text_search = SQLiteSearch()

    def absent(self, url: URL) -> str | None:
        # URL options (uri, mode) may say otherwise: only a plain path is judged.
        if not _names_a_file(url) or url.query or Path(url.database or "").exists():
            return None
        return f"no SQLite database file at {url.database}"

    def is_memory(self, url: URL) -> bool:
        return not _names_a_file(url) or url.query.get("mode") == "memory"

    def engine_options(
        self, url: URL, pool_options: dict[str, Any], session: SessionOptions
    ) -> dict[str, Any]:
        # In memory: one shared connection (StaticPool), pool sizing does not apply.
        return dict(pool_options) if _names_a_file(url) else {}

    def check_session_options(self, url: URL, session: SessionOptions) -> None:
        return None

    def install_connection_hooks(self, engine: AsyncEngine, session: SessionOptions) -> None:
        """Pragmas on connect; BEGIN as the connection's execution options say; a deadline
        per statement with option `statement_timeout`."""
        pragmas = connection_pragmas(session, _names_a_file(engine.url))
        lock_wait = _busy_ms(session) / 1000

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            # Take transaction control from the sqlite3 module, so BEGIN is ours (_begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            set_up_connection(cursor.execute, pragmas, lock_wait, _pause_on(dbapi_connection))
            cursor.close()
            if session.statement_timeout is not None:
                deadline = StatementDeadline(session.statement_timeout)
                record.info[_DEADLINE] = deadline
                # On aiosqlite's own thread, where its statements run.
                dbapi_connection.run_async(
                    lambda driver: driver.set_progress_handler(deadline, PROGRESS_STEPS)
                )

        if session.statement_timeout is not None:
            _time_each_statement(engine)

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
            # provider's own writes lock up front (`write_transaction_options`, the executor),
            # migrations through WRITE_LOCK_OPTION.
            connection.exec_driver_sql("BEGIN")

    def autocommit_options(self) -> dict[str, Any]:
        return {AUTOCOMMIT_OPTION: True}

    def write_transaction_options(self) -> dict[str, Any]:
        # IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
        # instead of one failing when it upgrades a read lock.
        return {WRITE_LOCK_OPTION: True}

    def fault_of(self, error: BaseException) -> Fault | None:
        if isinstance(error, sqlite3.ProgrammingError) and "closed database" in str(error):
            return Fault.SESSION_ENDED  # the test SQLAlchemy's pysqlite dialect applies
        if isinstance(error, sqlite3.Error):
            fault = _FAULT_BY_CODE.get(getattr(error, "sqlite_errorname", "") or "")
            if fault is not None:
                return fault
        return super().fault_of(error)

    def has_native_executor(self, url: URL) -> bool:
        # The worker's sqlite3.connect takes the path only: URL options (uri, mode, timeout)
        # would be ignored there, so such URLs keep SQLAlchemy's path. In-memory data lives
        # in one connection, which the worker's own connection cannot see.
        return _names_a_file(url) and not url.query

    def native_executor(self, parts: ExecutorParts) -> Executor:
        from slack_agents_sa.executors.sqlite import SQLiteExecutor

        return SQLiteExecutor(
            parts.url.database or "",
            parts.statements(),
            self,
            connection_pragmas(parts.session, is_file=True),
            _busy_ms(parts.session) / 1000,
            parts.session.statement_timeout,
            inline_pragmas=connection_pragmas(parts.session, is_file=True, waits=False),
        )

    def json_bytes(self, value: ColumnElement[Any]) -> ColumnElement[int]:
        # length() counts a text's characters but a blob's bytes (octet_length() needs
        # SQLite 3.43, and Python's sqlite3 may link an older one).
        return func.length(cast(value, LargeBinary), type_=Integer)

    def database_bytes(self) -> Select[Any] | None:
        # The main file only: the WAL file holds commits not yet checkpointed into it.
        pages = func.pragma_page_count().table_valued("page_count")
        size = func.pragma_page_size().table_valued("page_size")
        return select(pages.c.page_count * size.c.page_size).select_from(pages.join(size, true()))

    def builtin_source(self, conn: AsyncConnection) -> BuiltinSource:
        from slack_agents_sa.backends.sqlite_source import SQLiteSource

        return SQLiteSource(conn)

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
        # A rebuild may take long: option `statement_timeout` is for calls.
        conn.info[_NO_DEADLINE] = True

    async def after_migration(self, conn: AsyncConnection) -> None:
        conn.info.pop(_NO_DEADLINE, None)
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


def _time_each_statement(engine: AsyncEngine) -> None:
    """Start a connection's deadline before each statement and clear it after (or on its
    error), so the progress handler stops only a statement that ran too long."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _start(conn: Connection, *_args: Any) -> None:
        deadline = conn.info.get(_DEADLINE)
        if deadline is not None and not conn.info.get(_NO_DEADLINE):
            deadline.start()

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _clear(conn: Connection, *_args: Any) -> None:
        deadline = conn.info.get(_DEADLINE)
        if deadline is not None:
            deadline.clear()

    @event.listens_for(engine.sync_engine, "handle_error")
    def _clear_on_error(context: ExceptionContext) -> None:
        conn = context.connection
        deadline = conn.info.get(_DEADLINE) if conn is not None else None
        if deadline is not None:
            deadline.clear()


def _pragma(conn: Connection, statement: str) -> None:
    """Run a PRAGMA on the driver's connection, past SQLAlchemy's transaction handling (which
    would BEGIN first: `foreign_keys` does nothing inside a transaction)."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()
