"""A SQLite connection of the event loop's own thread, for calls that skip the worker thread:
it never waits for a lock (no busy timeout) and stops any statement past a small budget of
SQLite's work, so the loop is never held up for long. The call then goes to the worker.

`LoopConnection` is the shared part; `InlineWriter` is the read-write one (the read-only one
is `executors.sqlite_reader.InlineReader`).
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from collections.abc import Callable, Sequence

from slack_agents_sa.executors.sqlite_connection import (
    StatementDeadline,
    begin_immediate,
    commit,
    connect,
)

#: How long one statement may work here before the call goes to the worker thread instead.
BUDGET_S = 0.0005
#: SQLite VM instructions between two looks at the budget (~0.1 ms of work at most).
BUDGET_STEPS = 1_000

#: SQLite's answers for a lock another connection holds (SQLITE_BUSY_RECOVERY and the like).
_WAIT_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED")


class Missed(enum.Enum):
    """Why a call did not run here (it goes to the worker thread, which runs it again and
    reports any error as every path does)."""

    #: Another connection holds a lock: the worker waits for it; next time it may be free.
    LOCKED = "locked"
    #: No connection here: another thread's call, closed, or it failed to open.
    UNAVAILABLE = "unavailable"
    #: Past the budget, or an error.
    FAILED = "failed"


def inline_budget(statement_timeout: float | None) -> StatementDeadline:
    """The budget of one statement here: never longer than the statement timeout, past
    which the worker reports the timeout."""
    return StatementDeadline(
        BUDGET_S if statement_timeout is None else min(BUDGET_S, statement_timeout)
    )


def _is_a_lock(error: sqlite3.Error) -> bool:
    """Whether SQLite refused because another connection holds a lock."""
    return getattr(error, "sqlite_errorname", "").startswith(_WAIT_ERRORS)


class LoopConnection:
    """A connection for the thread that first asks for it (the event loop's), opened then.

    Every other thread gets `Missed.UNAVAILABLE`, as does everyone once opening it failed
    or it was closed. A call that fails leaves no transaction open.
    """

    __slots__ = ("_conn", "_deadline", "_ended", "_lock", "_open", "_thread")

    def __init__(
        self, open_connection: Callable[[], sqlite3.Connection], deadline: StatementDeadline
    ) -> None:
        self._open = open_connection
        self._deadline = deadline
        self._conn: sqlite3.Connection | None = None
        self._thread: int | None = None
        self._ended = False
        self._lock = threading.Lock()  # a call and `close` never overlap

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def attempt[T](self, work: Callable[[sqlite3.Connection], T]) -> tuple[T] | Missed:
        """`(work(conn),)`, or why it did not run here."""
        with self._lock:
            conn = self._connection()
            if conn is None:
                return Missed.UNAVAILABLE
            self._deadline.start()
            try:
                return (work(conn),)
            except sqlite3.OperationalError as error:
                missed = Missed.LOCKED if _is_a_lock(error) else Missed.FAILED
            except Exception:
                # sqlite3's, a value it cannot bind, or ours binding a later step.
                missed = Missed.FAILED
            except BaseException:
                self._end_transaction(conn)
                raise
            finally:
                self._deadline.clear()
            self._end_transaction(conn)
            return missed

    def close(self) -> None:
        """Close the connection (from any thread: it waits for a call in progress)."""
        with self._lock:
            self._ended = True
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def _end_transaction(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                # Closing rolls back too; the next call opens anew.
                self._conn = None
                conn.close()

    def _connection(self) -> sqlite3.Connection | None:
        current = threading.get_ident()
        if self._thread is None:
            self._thread = current
        elif current != self._thread:
            return None
        if self._conn is None and not self._ended:
            try:
                conn = self._open()
            except sqlite3.Error as error:
                # A lock: the next call tries again; else the worker serves every call.
                self._ended = not _is_a_lock(error)
                return None
            conn.set_progress_handler(self._deadline, BUDGET_STEPS)
            self._conn = conn
        return self._conn


class InlineWriter:
    """Writes on the loop's thread: one statement committing by itself, or several between
    BEGIN IMMEDIATE and COMMIT.

    Its connection never checkpoints (that writes the whole log back to the database file
    and syncs it): the executor has the worker thread do it every `CHECKPOINT_EVERY` writes
    made here (`due_checkpoint`).
    """

    __slots__ = ("_conn", "_since_checkpoint")

    def __init__(
        self, path: str, pragmas: Sequence[str], statement_timeout: float | None = None
    ) -> None:
        """`pragmas`: the backend's set-up for a connection that never waits for a lock."""
        self._conn = LoopConnection(
            lambda: _open_writer(path, pragmas), inline_budget(statement_timeout)
        )
        self._since_checkpoint = 0

    def write[T](self, work: Callable[[sqlite3.Connection], T]) -> tuple[T] | Missed:
        """`(work(conn),)` with every statement of `work` committing by itself."""
        return self._counted(self._conn.attempt(work))

    def transaction[T](self, work: Callable[[sqlite3.Connection], T]) -> tuple[T] | Missed:
        """`(work(conn),)` with the statements of `work` committed together."""
        return self._counted(self._conn.attempt(lambda conn: _in_transaction(conn, work)))

    def due_checkpoint(self) -> bool:
        """True once every `CHECKPOINT_EVERY` writes made here (then counted anew)."""
        if self._since_checkpoint < CHECKPOINT_EVERY:
            return False
        self._since_checkpoint = 0
        return True

    @property
    def is_open(self) -> bool:
        return self._conn.is_open

    def close(self) -> None:
        self._conn.close()

    def _counted[T](self, outcome: tuple[T] | Missed) -> tuple[T] | Missed:
        if not isinstance(outcome, Missed):
            self._since_checkpoint += 1
        return outcome


#: Writes made on the loop's thread between two checkpoints the worker runs (the log grows
#: by a few pages a write; SQLite's own default is every 1,000 pages).
CHECKPOINT_EVERY = 200
#: The checkpoint the worker runs: copies what it can, waiting for no reader or writer.
CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"
#: The writer never checkpoints.
_NO_CHECKPOINT = "PRAGMA wal_autocheckpoint = 0"


def _open_writer(path: str, pragmas: Sequence[str]) -> sqlite3.Connection:
    """A connection set up with `pragmas`: the backend's set-up for one that never waits
    for a lock (`busy_timeout = 0`; `timeout=0` until then). check_same_thread=False only
    so that `close` may run on another thread."""
    return connect(path, (*pragmas, _NO_CHECKPOINT), 0, None, check_same_thread=False, timeout=0)


def _in_transaction[T](conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    # On failure `LoopConnection.attempt` rolls back.
    begin_immediate(conn)
    result = work(conn)
    commit(conn)
    return result
