"""SQLite's native executor: one worker thread owning one `sqlite3` connection.

Every call, a whole transaction included, is one callable on that thread: one thread hop,
where SQLAlchemy over aiosqlite takes three or four per statement (measured at ~0.3x the
host's aiosqlite provider, SQLAlchemy's path at ~1.9x). SQLite writes one at a time anyway,
so one connection loses nothing, and the writes that queue together share one commit
(`executors.sqlite_worker`). While the worker is idle, a short read skips the hop
(`executors.sqlite_reader`), and so does a write when no other call waits for the worker
either (`executors.sqlite_inline`). The engine (migrations, CLI, host sessions) keeps its
own aiosqlite connection to the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ClauseElement

from slack_agents_sa.errors import ProviderClosedError
from slack_agents_sa.executors.base import DatabaseRules, Step, Values
from slack_agents_sa.executors.compiled import CompiledStatement
from slack_agents_sa.executors.sqlite_batches import WorkerBatches
from slack_agents_sa.executors.sqlite_connection import (
    StatementDeadline,
    inserted_id,
    row_count,
)
from slack_agents_sa.executors.sqlite_inline import CHECKPOINT, InlineWriter, Missed
from slack_agents_sa.executors.sqlite_reader import InlineReader
from slack_agents_sa.executors.sqlite_worker import Job, JobKind, WorkerThread
from slack_agents_sa.executors.statement_cache import StatementCache


class SQLiteExecutor:
    """`fetch` / `write` / `insert_id` / `steps` on one worker thread's connection (its
    batches: `executors.sqlite_batches`), or on the loop's own thread for a short read while
    the worker is idle and for a write made alone."""

    kind = "native"

    def __init__(
        self,
        path: str,
        statements: StatementCache,
        rules: DatabaseRules,
        pragmas: Sequence[str],
        lock_wait: float,
        statement_timeout: float | None = None,
        *,
        inline_pragmas: Sequence[str],
    ) -> None:
        self._statements = statements
        # Transactions compile later steps in the worker while the loop compiles other
        # calls: the cache's dicts are not meant for two threads at once.
        self._compiling = threading.Lock()
        deadline = None if statement_timeout is None else StatementDeadline(statement_timeout)
        batches = WorkerBatches(path, rules, tuple(pragmas), lock_wait, deadline)
        self._worker = WorkerThread(batches.handle, "slack_agents_sa-sqlite")
        self._reader = InlineReader(path, statement_timeout)
        self._writer = InlineWriter(path, inline_pragmas, statement_timeout)
        self._waiting = 0  # calls awaiting the worker (settled ones until they resume)
        self._held: _Held | None = None  # a write giving the loop its one turn (`_write`)
        self._closed = False  # no new call

    def _compiled(self, stmt: ClauseElement, values: Values) -> CompiledStatement:
        with self._compiling:
            return self._statements.get(stmt, values)

    async def _run[T](
        self, kind: JobKind, statement: list[str], work: Callable[[sqlite3.Connection], T]
    ) -> T:
        """`work` on the worker thread's connection; errors as the SQLAlchemy path's.

        `statement[-1]` is the SQL running (a transaction appends each step's), so an
        error names the statement that failed, as SQLAlchemy's does.
        """
        if self._closed:
            raise ProviderClosedError("the provider is closed: its connection is gone")
        return await self._waited(self._queued(kind, statement, work))

    async def _waited[T](self, future: asyncio.Future[T]) -> T:
        """The worker's outcome for a call, counted among those waiting meanwhile."""
        self._waiting += 1
        try:
            return await future
        finally:
            self._waiting -= 1

    async def _write[T](
        self,
        kind: JobKind,
        statement: list[str],
        work: Callable[[sqlite3.Connection], T],
        here: Callable[[], tuple[T] | Missed],
    ) -> T:
        """A write: `here()` on the loop's thread when it is made alone, else `work` on the
        worker thread, whose batches give the writes made together one commit.

        Alone: the worker idle, no call waiting for it, and no other call made while this
        write gives the loop one turn. A call made in that turn first sends this write to
        the worker (`_send_held`), so it keeps its place: calls run in the order they came.
        """
        self._send_held()
        if self._may_write_here():
            held = _Held(kind, statement, work, asyncio.get_running_loop())
            self._held = held
            try:
                await asyncio.sleep(0)
            finally:
                if self._held is held:
                    self._held = None
            if held.future is not None:  # another call came: the worker has it
                result: T = await self._waited(held.future)
                return result
            if self._may_write_here():
                done = self._written_here(here())
                if done is not None:
                    return done[0]
        return await self._run(kind, statement, work)

    def _send_held(self) -> None:
        """Queue the write holding its turn on the worker, ahead of the call being made on
        the same event loop (calls from other threads' loops have no order with it)."""
        held = self._held
        if held is None or held.loop is not asyncio.get_running_loop():
            return
        self._held = None
        held.future = held.loop.create_future()
        try:
            self._worker.submit(Job(held.kind, held.work, held.statement, held.future))
        except RuntimeError as error:  # the worker has stopped (at exit): as for any call
            held.future.set_exception(error)

    def _written_here[T](self, outcome: tuple[T] | Missed) -> tuple[T] | None:
        """A write's outcome on the loop's thread, or None: it goes to the worker."""
        if isinstance(outcome, Missed):
            return None
        if self._writer.due_checkpoint():
            self._checkpoint_later()
        return outcome

    def _checkpoint_later(self) -> None:
        """Have the worker fold the log into the database file (the inline writer never
        does); nobody waits for it, and a failure only leaves the log longer."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_ignored)
        # The write is committed: a worker stopped at exit must not make it look failed.
        with contextlib.suppress(RuntimeError):
            self._worker.submit(Job(JobKind.CHECKPOINT, _checkpoint, [CHECKPOINT], future))

    def _may_write_here(self) -> bool:
        return self._waiting == 0 and self._worker.idle and not self._closed

    def _queued[T](
        self, kind: JobKind, statement: list[str], work: Callable[[sqlite3.Connection], T]
    ) -> asyncio.Future[T]:
        """`work` queued on the worker; the future of its outcome."""
        self._send_held()  # a write made before this call runs before it
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._worker.submit(Job(kind, work, statement, future))
        return future

    # -- on the event loop ----------------------------------------------------------------

    async def open(self) -> None:
        """Open the connection now, so a bad path fails at `initialize()`."""
        await self._run(JobKind.READ, [""], lambda _conn: None)

    async def fetch(self, stmt: ClauseElement, values: Values) -> list[Any]:
        compiled = self._compiled(stmt, values)
        # Bound in the loop thread: a value that cannot be stored raises before the hop.
        sql, arguments = compiled.arguments(values)
        self._send_held()  # a write made before this read: the read queues behind it
        raw = None
        if self._worker.idle:
            # Calls settled by the worker but not yet resumed run after this read.
            raw = self._reader.read(sql, arguments, crowded=self._waiting > 0)
        if raw is None:
            raw = await self._run(
                JobKind.READ, [sql], lambda conn: conn.execute(sql, arguments).fetchall()
            )
        return compiled.rows(raw)

    async def write(self, stmt: ClauseElement, values: Values) -> int:
        sql, arguments = self._compiled(stmt, values).arguments(values)
        return await self._statement(sql, lambda conn: row_count(conn.execute(sql, arguments)))

    async def insert_id(self, stmt: ClauseElement, values: Values) -> int:
        sql, arguments = self._compiled(stmt, values).arguments(values)
        return await self._statement(sql, lambda conn: inserted_id(conn.execute(sql, arguments)))

    async def _statement(self, sql: str, work: Callable[[sqlite3.Connection], int]) -> int:
        """One statement committing by itself."""
        return await self._write(JobKind.STATEMENT, [sql], work, lambda: self._writer.write(work))

    async def steps(self, steps: Sequence[Step]) -> list[int | None]:
        if not steps:
            return []
        values = steps[0].values_after(None)
        first = self._compiled(steps[0].stmt, values).arguments(values)
        statement = ["BEGIN IMMEDIATE"]
        return await self._write(
            JobKind.TRANSACTION,
            statement,
            lambda conn: self._steps(conn, steps, first, statement),
            lambda: self._writer.transaction(lambda conn: self._steps(conn, steps, first, [])),
        )

    def _steps(
        self,
        conn: sqlite3.Connection,
        steps: Sequence[Step],
        first: tuple[str, list[Any]],
        statement: list[str],
    ) -> list[int | None]:
        # Runs inside a transaction, on the worker's thread or the loop's.
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
                previous = inserted_id(cursor)
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
        self._closed = True  # first: no call queues behind the close
        self._reader.close()
        self._writer.close()
        await self._queued(JobKind.CLOSE, [""], lambda _conn: None)
        # The worker is idle now (calls before ours ran first): joining it is immediate.
        self._worker.stop()


@dataclass(slots=True, eq=False)
class _Held:
    """A write giving the loop one turn before it runs; `future` once sent to the worker."""

    kind: JobKind
    statement: list[str]
    work: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any] | None = None


def _ignored(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a failed checkpoint is not an error to report


def _checkpoint(conn: sqlite3.Connection) -> Any:
    return conn.execute(CHECKPOINT).fetchall()
