"""SQLite's worker thread at work: the batches of calls it takes, run on its one connection
(group commit: the writes of a batch share one transaction and one commit)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NoReturn

from slack_agents_sa.errors import ProviderClosedError
from slack_agents_sa.executors.base import DatabaseRules, Fault
from slack_agents_sa.executors.errors import fault_of, raise_translated
from slack_agents_sa.executors.sqlite_connection import (
    StatementDeadline,
    begin_immediate,
    commit,
    connect,
)
from slack_agents_sa.executors.sqlite_worker import Job, JobKind


class WorkerBatches:
    """The worker thread's `handle`: its connection, opened on the first call.

    Calls that queued together (with two writes or more among them) run in the order they
    came in one transaction, each call's statements inside a savepoint of their own, and
    are committed once (group commit). A call that fails is rolled back to its savepoint
    and gets its error; the others go on, and the write lock is held throughout, so each
    outcome is the one it would have had alone in that order. If the transaction itself is
    lost (an interrupted statement can roll it back) or the COMMIT fails, the calls run
    again one by one, each as if alone. Every result is given only after the commit. (Our
    tables have no deferred constraints, which SQLite would check only at that COMMIT.)
    """

    def __init__(
        self,
        path: str,
        rules: DatabaseRules,
        pragmas: Sequence[str],
        lock_wait: float,
        deadline: StatementDeadline | None,
    ) -> None:
        self._path = path
        self._rules = rules
        self._pragmas = tuple(pragmas)
        self._lock_wait = lock_wait
        self._deadline = deadline
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._ended = False  # the connection is closed for good

    def handle(self, batch: list[Job]) -> None:
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


#: Jobs run by themselves, never in a batch's transaction.
_ALONE_KINDS = (JobKind.CLOSE, JobKind.CHECKPOINT)
