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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import ClauseElement

from slack_agents_sa.errors import ProviderClosedError
from slack_agents_sa.executors.base import DatabaseRules, Fault, Step, Values
from slack_agents_sa.executors.compiled import CompiledStatement
from slack_agents_sa.executors.errors import fault_of, raise_translated
from slack_agents_sa.executors.statement_cache import StatementCache

#: SQLite VM instructions between two looks at a statement's deadline: ~1 ms of work, so a
#: short statement never pays for one and a runaway one stops within a few milliseconds.
PROGRESS_STEPS = 10_000
#: Pause between two tries of a set-up statement another connection's lock refused.
SET_UP_PAUSE_S = 0.005


def set_up_connection(
    run: Callable[[str], object],
    pragmas: Sequence[str],
    lock_wait: float,
    pause: Callable[[float], object],
) -> None:
    """Run a new connection's `pragmas`, trying one again while a lock refuses it.

    SQLite refuses `PRAGMA journal_mode = WAL` with "database is locked" at once, without
    its busy handler, while another connection is switching a new file to WAL: providers
    opening one new database together race for it. Tries stop after `lock_wait` seconds.
    """
    give_up = time.monotonic() + lock_wait
    for pragma in pragmas:
        while True:
            try:
                run(pragma)
                break
            except sqlite3.OperationalError as error:
                busy = getattr(error, "sqlite_errorname", None) == "SQLITE_BUSY"
                if not busy or time.monotonic() >= give_up:
                    raise
            pause(SET_UP_PAUSE_S)


class StatementDeadline:
    """A statement timeout for one SQLite connection, through its progress handler.

    SQLite has no server to stop a statement: a progress handler that returns non-zero
    interrupts it (`sqlite3.OperationalError`, SQLITE_INTERRUPT), as `interrupt()` would,
    but only the statement it times, never the next one. `start` before each statement,
    `clear` after; the handler runs on whichever thread runs the statement.
    """

    __slots__ = ("_at", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at: float | None = None

    def start(self) -> None:
        self._at = time.monotonic() + self.seconds

    def clear(self) -> None:
        self._at = None

    def __call__(self) -> int:
        at = self._at
        return 1 if at is not None and time.monotonic() > at else 0


def _connect(
    path: str, pragmas: Sequence[str], lock_wait: float, deadline: StatementDeadline | None
) -> sqlite3.Connection:
    """A connection set up as the SQLite backend sets up a file database's (`pragmas`)."""
    # isolation_level=None: the sqlite3 module opens no transactions, so each statement
    # commits by itself and `steps` spells BEGIN IMMEDIATE ... COMMIT itself.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        set_up_connection(conn.execute, pragmas, lock_wait, time.sleep)
        if deadline is not None:
            conn.set_progress_handler(deadline, PROGRESS_STEPS)
    except BaseException:
        conn.close()
        raise
    return conn


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
    """`fetch` / `write` / `insert_id` / `steps` on one worker thread's connection."""

    kind = "native"

    def __init__(
        self,
        path: str,
        statements: StatementCache,
        rules: DatabaseRules,
        pragmas: Sequence[str],
        lock_wait: float,
        statement_timeout: float | None = None,
    ) -> None:
        self._path = path
        self._statements = statements
        self._rules = rules
        self._pragmas = tuple(pragmas)
        self._lock_wait = lock_wait
        self._deadline = None if statement_timeout is None else StatementDeadline(statement_timeout)
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
            raise ProviderClosedError("the provider is closed: its connection is gone")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, statement, work)

    def _call[T](self, statement: list[str], work: Callable[[sqlite3.Connection], T]) -> T:
        # Runs on the worker thread.
        deadline = self._deadline
        try:
            if self._conn is None:
                self._conn = _connect(self._path, self._pragmas, self._lock_wait, deadline)
            if deadline is not None:
                deadline.start()
            return work(self._conn)
        except (sqlite3.Error, UnicodeEncodeError) as error:
            # UnicodeEncodeError: sqlite3 could not bind text (a lone surrogate); nothing ran.
            fault = fault_of(error, self._rules)
            if fault is Fault.SESSION_ENDED:
                # Reopen on the next call, as SQLAlchemy's pool replaces an invalidated one.
                self._drop()
            raise_translated(error, fault, statement[-1])
        finally:
            if deadline is not None:
                deadline.clear()

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

    async def steps(self, steps: Sequence[Step]) -> list[int | None]:
        if not steps:
            return []
        values = steps[0].values_after(None)
        first = self._compiled(steps[0].stmt, values).arguments(values)
        statement = ["BEGIN IMMEDIATE"]

        def run(conn: sqlite3.Connection) -> list[int | None]:
            if conn.in_transaction:
                # Never BEGIN inside a transaction left open (as `sqlite_transaction`).
                conn.execute("ROLLBACK")
            # IMMEDIATE takes the write lock up front (see `SQLite.write_transaction_options`).
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

    def refuse(self) -> None:
        """Nothing to do: `Database` refuses new calls; the worker's one connection stays
        open for the calls already queued on it until `close`."""
        return None

    async def close(self) -> None:
        """Close the connection on its thread, then the thread (callers have settled)."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._drop)
        # The worker is idle now (calls before ours ran first): joining it is immediate.
        self._pool.shutdown(wait=True)
