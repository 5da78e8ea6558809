"""SQLite's native executor: one worker thread owning one `sqlite3` connection.

Every call, a whole transaction included, is one callable on that thread: one thread hop,
where SQLAlchemy over aiosqlite takes three or four per statement (issue 11 measured this
path at ~0.3x the host's aiosqlite provider, SQLAlchemy's at ~1.9x). SQLite writes one at
a time anyway, so one connection loses nothing. The engine (migrations, CLI, host
sessions) keeps its own aiosqlite connection to the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import ClauseElement, exc

from slack_agents_sa.backends.sqlite import CONNECTION_PRAGMAS, FILE_PRAGMAS
from slack_agents_sa.errors import ConnectionLostError
from slack_agents_sa.executors.base import Step, Values, lost_connection_message
from slack_agents_sa.executors.compiled import CompiledStatement, StatementCache


def _connect(path: str) -> sqlite3.Connection:
    """A connection set up as `SQLite.install_connection_hooks` sets up a file database's."""
    # isolation_level=None: the sqlite3 module opens no transactions, so each statement
    # commits by itself and `transaction` spells BEGIN IMMEDIATE ... COMMIT itself.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in CONNECTION_PRAGMAS + FILE_PRAGMAS:
            conn.execute(pragma)
    except BaseException:
        conn.close()
        raise
    return conn


def _is_disconnect(error: BaseException) -> bool:
    # The test SQLAlchemy's pysqlite dialect applies (`is_disconnect`).
    return isinstance(error, sqlite3.ProgrammingError) and "closed database" in str(error)


def _inserted_id(cursor: sqlite3.Cursor) -> int:
    """The id an INSERT's RETURNING gave (our upserts), else the plain INSERT's rowid."""
    # Plain inserts compile without implicit RETURNING on SQLite: lastrowid is the key.
    if cursor.description is not None:
        row = cursor.fetchone()
        cursor.fetchall()  # finish the statement, so the connection holds no open cursor
        if row is None:  # pragma: no cover - an upsert's RETURNING always gives its row
            raise RuntimeError("the database did not report the inserted row's id")
        return int(row[0])
    if cursor.lastrowid is None:  # pragma: no cover - set by every INSERT
        raise RuntimeError("the database did not report the inserted row's id")
    return int(cursor.lastrowid)


def _row_count(cursor: sqlite3.Cursor) -> int:
    if cursor.description is not None:
        # A RETURNING statement: the count is final once its rows are read.
        cursor.fetchall()
    return cursor.rowcount


class SQLiteExecutor:
    """`fetch` / `write` / `insert_id` / `transaction` on one worker thread's connection."""

    kind = "native"

    def __init__(self, path: str, statements: StatementCache) -> None:
        self._path = path
        self._statements = statements
        # Transactions compile later steps in the worker while the loop compiles other
        # calls: the cache's dicts are not meant for two threads at once.
        self._compiling = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slack_agents_sa-sqlite")
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._closed = False

    def _compiled(self, stmt: ClauseElement, values: Values) -> CompiledStatement:
        with self._compiling:
            return self._statements.get(stmt, values)

    async def _run[T](self, statement: list[str], work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` on the worker thread's connection; errors as the SQLAlchemy path's.

        `statement[-1]` is the SQL running (a transaction appends each step's), so an
        error names the statement that failed, as SQLAlchemy's does.
        """
        if self._closed:
            raise ConnectionLostError("the provider's connections are closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, statement, work)

    def _call[T](self, statement: list[str], work: Callable[[sqlite3.Connection], T]) -> T:
        # Runs on the worker thread.
        try:
            if self._conn is None:
                self._conn = _connect(self._path)
            return work(self._conn)
        except sqlite3.Error as error:
            if _is_disconnect(error):
                # Reopen on the next call, as SQLAlchemy's pool replaces an invalidated one.
                self._drop()
                raise ConnectionLostError(lost_connection_message(error)) from error
            # The class SQLAlchemy's path raises (IntegrityError, OperationalError, ...),
            # found the same way; parameters are kept out of the message.
            raise exc.DBAPIError.instance(
                statement[-1], None, error, sqlite3.Error, hide_parameters=True
            ) from error

    def _drop(self) -> None:
        """Close the worker's connection (on the worker thread); the next call opens anew."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()  # also ends any transaction left open, uncommitted

    async def open(self) -> None:
        """Open the connection now, so a bad path fails at `initialize()`."""
        await self._run([""], lambda _conn: None)

    async def fetch(self, stmt: ClauseElement, values: Values) -> list[Any]:
        compiled = self._compiled(stmt, values)
        # Bound in the loop thread: a value that cannot be stored raises before the hop.
        sql, arguments = compiled.arguments(values)
        raw = await self._run([sql], lambda conn: conn.execute(sql, arguments).fetchall())
        return compiled.rows(raw)

    async def write(self, stmt: ClauseElement, values: Values) -> int:
        sql, arguments = self._compiled(stmt, values).arguments(values)
        return await self._run([sql], lambda conn: _row_count(conn.execute(sql, arguments)))

    async def insert_id(self, stmt: ClauseElement, values: Values) -> int:
        sql, arguments = self._compiled(stmt, values).arguments(values)
        return await self._run([sql], lambda conn: _inserted_id(conn.execute(sql, arguments)))

    async def transaction(self, steps: Sequence[Step]) -> list[int | None]:
        if not steps:
            return []
        values = steps[0].values_after(None)
        first = self._compiled(steps[0].stmt, values).arguments(values)
        statement = ["BEGIN IMMEDIATE"]

        def run(conn: sqlite3.Connection) -> list[int | None]:
            if conn.in_transaction:
                # Never BEGIN inside a transaction left open (as `sqlite_transaction`).
                conn.execute("ROLLBACK")
            # IMMEDIATE takes the write lock up front (see `SQLite.shared_transaction`).
            conn.execute("BEGIN IMMEDIATE")
            try:
                ids = self._steps(conn, steps, first, statement)
                statement.append("COMMIT")
                conn.execute("COMMIT")
            except BaseException:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    self._drop()  # closing rolls back; the original error matters
                raise
            return ids

        return await self._run(statement, run)

    def _steps(
        self,
        conn: sqlite3.Connection,
        steps: Sequence[Step],
        first: tuple[str, list[Any]],
        statement: list[str],
    ) -> list[int | None]:
        # Runs on the worker thread, inside BEGIN IMMEDIATE.
        ids: list[int | None] = []
        previous: int | None = None
        for index, step in enumerate(steps):
            if index == 0:
                sql, arguments = first
            else:
                values = step.values_after(previous)
                sql, arguments = self._compiled(step.stmt, values).arguments(values)
            statement.append(sql)
            cursor = conn.execute(sql, arguments)
            if step.returns_id:
                previous = _inserted_id(cursor)
                ids.append(previous)
            else:
                ids.append(None)
        return ids

    async def close(self) -> None:
        """Close the connection on its thread, then the thread (callers have settled)."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._drop)
        # The worker is idle now (calls before ours ran first): joining it is immediate.
        self._pool.shutdown(wait=True)
