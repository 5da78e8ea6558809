"""A SQLite connection as the native executor opens it: its set-up statements, tried again
while another connection's lock refuses them, and a statement timeout through SQLite's
progress handler (SQLite has no server to stop a statement)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

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


def connect(
    path: str,
    pragmas: Sequence[str],
    lock_wait: float,
    deadline: StatementDeadline | None,
    *,
    check_same_thread: bool = True,
    timeout: float = 5.0,
) -> sqlite3.Connection:
    """A connection set up as the SQLite backend sets up a file database's (`pragmas`)."""
    # isolation_level=None: the sqlite3 module opens no transactions, so each statement
    # commits by itself and `steps` spells BEGIN IMMEDIATE ... COMMIT itself.
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=check_same_thread, timeout=timeout
    )
    try:
        set_up_connection(conn.execute, pragmas, lock_wait, time.sleep)
        if deadline is not None:
            conn.set_progress_handler(deadline, PROGRESS_STEPS)
    except BaseException:
        conn.close()
        raise
    return conn


def inserted_id(cursor: sqlite3.Cursor) -> int:
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


def row_count(cursor: sqlite3.Cursor) -> int:
    """The rows a statement changed (or returned: RETURNING)."""
    if cursor.description is not None:
        # A RETURNING statement: the count is final once its rows are read.
        cursor.fetchall()
    return cursor.rowcount


def begin_immediate(conn: sqlite3.Connection) -> None:
    """Open a write transaction, taking the write lock now."""
    if conn.in_transaction:
        # Never BEGIN inside a transaction left open (as `sqlite_transaction`).
        conn.execute("ROLLBACK")
    # IMMEDIATE takes the write lock up front (see `SQLite.write_transaction_options`).
    conn.execute("BEGIN IMMEDIATE")


def commit(conn: sqlite3.Connection) -> None:
    """Commit the open transaction."""
    conn.execute("COMMIT")
