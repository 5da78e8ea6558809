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
from functools import partial
from typing import Any, NoReturn

from sqlalchemy import ClauseElement

from slack_agents_sa.errors import ProviderClosedError
from slack_agents_sa.executors.base import DatabaseRules, Fault, Step, Values
from slack_agents_sa.executors.compiled import CompiledStatement
from slack_agents_sa.executors.errors import fault_of, raise_translated
from slack_agents_sa.executors.sqlite_connection import (
    StatementDeadline,
    begin_immediate,
    commit,
    connect,
    inserted_id,
    row_count,
)
from slack_agents_sa.executors.sqlite_inline import CHECKPOINT, InlineWriter, Missed
from slack_agents_sa.executors.sqlite_reader import InlineReader
from slack_agents_sa.executors.sqlite_worker import Job, JobKind, WorkerThread
from slack_agents_sa.executors.statement_cache import StatementCache


class SQLiteExecutor:
    """`fetch` / `write` / `insert_id` / `steps` on one worker thread's connection.

    Calls that queued together (with two writes or more among them) run in the order they
    came in one transaction, each call's statements inside a savepoint of their own, and
    are committed once (group commit). A call that fails is rolled back to its savepoint
    and gets its error; the others go on, and the write lock is held throughout, so each
    outcome is the one it would have had alone in that order. If the transaction itself is
    lost (an interrupted statement can roll it back) or the COMMIT fails, the calls run
    again one by one, each as if alone. Every result is given only after the commit. (Our
    tables have no deferred constraints, which SQLite would check only at that COMMIT.)
    """

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
        self._worker = WorkerThread(self._handle, "slack_agents_sa-sqlite")
        self._reader = InlineReader(path, statement_timeout)
        self._writer = InlineWriter(path, self._pragmas, statement_timeout)
        self._waiting = 0  # calls awaiting the worker (settled ones until they resume)
        self._calls = 0  # calls made so far, to tell whether others came meanwhile
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._closed = False  # no new call (set on the loop)
        self._ended = False  # the connection is closed for good (set on the worker)

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
        self._calls += 1
        self._waiting += 1
        try:
            return await self._submit(kind, statement, work)
        finally:
            self._waiting -= 1

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
        self._worker.submit(
            Job(
                JobKind.CHECKPOINT,
                lambda conn: conn.execute(CHECKPOINT).fetchall(),
                [CHECKPOINT],
                future,
            )
        )

    def _may_write_here(self) -> bool:
        return self._waiting == 0 and self._worker.idle and not self._closed

    async def _writes_here(self) -> bool:
        """Whether a write runs on the loop's thread: the worker idle, nobody waiting for it,
        and no other call made while this one let the loop run once. Calls made together go
        to the worker instead, whose batches share one commit."""
        if not self._may_write_here():
            return False
        self._calls += 1
        mine = self._calls
        await asyncio.sleep(0)
        return self._calls == mine and self._may_write_here()

    async def _submit[T](
        self, kind: JobKind, statement: list[str], work: Callable[[sqlite3.Connection], T]
    ) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._worker.submit(Job(kind, work, statement, future))
        return await future

    # -- on the worker thread -------------------------------------------------------------

    def _handle(self, batch: list[Job]) -> None:
        """Settle every job of `batch`, in the order they came: in one transaction when two
        or more of them write (see the class), else one by one."""
        self._roll_back()  # never inside a transaction an earlier batch left open
        live: list[Job] = []
        for job in batch:
            if job.abandoned:
                job.fail(asyncio.CancelledError())
            else:
                live.append(job)
        if sum(job.writes for job in live) >= 2 and not any(
            job.kind in _ALONE_KINDS for job in live
        ):
            self._together(live)
            return
        for job in live:
            self._alone(job)

    def _alone(self, job: Job) -> None:
        """Run `job` by itself: a transaction of its own for `steps`."""
        try:
            if job.kind is JobKind.CLOSE:
                self._ended = True
                self._drop()
                job.succeed(None)
            elif job.kind is JobKind.TRANSACTION:
                job.succeed(self._call(job.statement, partial(self._transaction, job)))
            else:
                job.succeed(self._call(job.statement, job.work))
        except BaseException as error:
            job.fail(error)

    def _together(self, jobs: list[Job]) -> None:
        """Run `jobs` in order in one transaction, committed once (see the class)."""
        try:
            conn = self._connection()
            begin_immediate(conn)
        except (sqlite3.Error, UnicodeEncodeError) as error:
            # No write ran. Alone, each would wait for the same lock in turn (or fail to
            # open the same file): each gets an error of its own for it now instead.
            for job in jobs:
                if job.writes:
                    self._fail_with(job, error, "BEGIN IMMEDIATE")
                else:
                    self._alone(job)
            return
        except BaseException as error:
            for job in jobs:
                job.fail(error)
            return
        for job in jobs:
            if not self._in_savepoint(conn, job):
                # The transaction is gone, with the calls before this one: every call runs
                # again alone, but this one if its own statements failed (that error stands).
                for other in jobs:
                    if other is not job or not other.settled:
                        self._alone(other)
                return
        try:
            self._call(["COMMIT"], commit)
        except BaseException:
            # Reads too: what they saw was never committed.
            self._roll_back()
            for job in jobs:
                self._alone(job)

    def _in_savepoint(self, conn: sqlite3.Connection, job: Job) -> bool:
        """Run `job` in a savepoint of the open transaction, rolled back to it if the job
        fails. False when the transaction is gone: `job` is then settled only if its own
        statements failed."""
        try:
            conn.execute("SAVEPOINT call")
        except sqlite3.Error:
            self._roll_back()
            return False
        try:
            result = self._call(job.statement, job.work)
        except BaseException as error:
            job.fail(error)
            if self._conn is conn and conn.in_transaction:
                try:
                    conn.execute("ROLLBACK TO call")
                    conn.execute("RELEASE call")
                    return True
                except sqlite3.Error:
                    pass
            self._roll_back()
            return False
        try:
            conn.execute("RELEASE call")
        except sqlite3.Error:
            self._roll_back()
            return False
        job.succeed(result)
        return True

    def _transaction(self, job: Job, conn: sqlite3.Connection) -> Any:
        """`job.work` between BEGIN IMMEDIATE and COMMIT, rolled back on any error."""
        begin_immediate(conn)
        try:
            result = job.work(conn)
            job.statement.append("COMMIT")
            conn.execute("COMMIT")
        except BaseException:
            self._roll_back()
            raise
        return result

    def _roll_back(self) -> None:
        """End the transaction left open, if any; a connection that cannot is closed (which
        rolls back too)."""
        conn = self._conn
        if conn is not None and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._drop()

    def _connection(self) -> sqlite3.Connection:
        if self._ended:
            raise ProviderClosedError("the provider is closed: its connection is gone")
        if self._conn is None:
            self._conn = connect(self._path, self._pragmas, self._lock_wait, self._deadline)
        return self._conn

    def _call[T](self, statement: list[str], work: Callable[[sqlite3.Connection], T]) -> T:
        deadline = self._deadline
        try:
            conn = self._connection()
            if deadline is not None:
                deadline.start()
            return work(conn)
        except (sqlite3.Error, UnicodeEncodeError) as error:
            # UnicodeEncodeError: sqlite3 could not bind text (a lone surrogate); nothing ran.
            self._translate(error, statement[-1])
        finally:
            if deadline is not None:
                deadline.clear()

    def _translate(self, error: sqlite3.Error | UnicodeEncodeError, sql: str) -> NoReturn:
        fault = fault_of(error, self._rules)
        if fault is Fault.SESSION_ENDED:
            # Reopen on the next call, as SQLAlchemy's pool replaces an invalidated one.
            self._drop()
        raise_translated(error, fault, sql)

    def _fail_with(self, job: Job, error: sqlite3.Error | UnicodeEncodeError, sql: str) -> None:
        """Fail `job` with a translated `error` of its own (an exception is never shared
        between callers: each raise adds to its traceback)."""
        try:
            self._translate(error, sql)
        except BaseException as translated:
            job.fail(translated)

    def _drop(self) -> None:
        """Close the worker's connection; the next call opens anew."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()  # also ends any transaction left open, uncommitted

    # -- on the event loop ----------------------------------------------------------------

    async def open(self) -> None:
        """Open the connection now, so a bad path fails at `initialize()`."""
        await self._run(JobKind.READ, [""], lambda _conn: None)

    async def fetch(self, stmt: ClauseElement, values: Values) -> list[Any]:
        compiled = self._compiled(stmt, values)
        # Bound in the loop thread: a value that cannot be stored raises before the hop.
        sql, arguments = compiled.arguments(values)
        self._calls += 1
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
        """One statement committing by itself: here when `_writes_here()`, else on the worker."""
        if await self._writes_here():
            done = self._written_here(self._writer.write(work))
            if done is not None:
                return done[0]
        return await self._run(JobKind.STATEMENT, [sql], work)

    async def steps(self, steps: Sequence[Step]) -> list[int | None]:
        if not steps:
            return []
        values = steps[0].values_after(None)
        first = self._compiled(steps[0].stmt, values).arguments(values)
        if await self._writes_here():
            done = self._written_here(
                self._writer.transaction(lambda conn: self._steps(conn, steps, first, []))
            )
            if done is not None:
                return done[0]
        statement = ["BEGIN IMMEDIATE"]
        return await self._run(
            JobKind.TRANSACTION,
            statement,
            lambda conn: self._steps(conn, steps, first, statement),
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
        await self._submit(JobKind.CLOSE, [""], lambda _conn: None)
        # The worker is idle now (calls before ours ran first): joining it is immediate.
        self._worker.stop()


#: Jobs run by themselves, never in a batch's transaction.
_ALONE_KINDS = (JobKind.CLOSE, JobKind.CHECKPOINT)


def _ignored(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: a failed checkpoint is not an error to report
