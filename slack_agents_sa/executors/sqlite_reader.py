"""Short reads run on the event loop's own thread, on a read-only connection of its own:
a point read takes SQLite a few microseconds there, while the hop to the worker thread and
back costs the loop more than that (a wake-up through its self-pipe) and the caller ~30 µs.

A read tries here only when the worker has nothing queued or running (so it cannot miss
a call that came earlier), and hands itself to the worker, which runs it as before, when
it would wait or work long: the connection has no busy timeout, and its progress handler
stops a statement past `BUDGET_S` of SQLite's work. A statement that keeps costing more
than `CHEAP_S` goes to the worker for a while, so concurrent calls are not held up behind
it. (SQLite's own file reads, slow on a cold disk, are not interruptible.)
"""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.parse
from typing import Any

from slack_agents_sa.executors.sqlite_connection import StatementDeadline

#: How long one read may work here before it goes to the worker thread instead.
BUDGET_S = 0.0005
#: SQLite VM instructions between two looks at the budget (~0.1 ms of work at most).
BUDGET_STEPS = 1_000
#: A read costing more CPU than this here is a strike against its statement.
CHEAP_S = 0.00005
#: Strikes in a row that send a statement to the worker for its next BENCHED_CALLS calls.
STRIKES = 3
BENCHED_CALLS = 200
#: At most this many statements remembered (then all forgotten).
REMEMBERED = 1_000
#: A small page cache (512 KiB): another connection's commit empties it anyway.
_CACHE_SIZE = "PRAGMA cache_size = -512"

#: SQLite's answers for a lock another connection holds (SQLITE_BUSY_RECOVERY and the like).
_WAIT_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED")


class InlineReader:
    """A read-only connection for the thread that opened it (the event loop's)."""

    __slots__ = (
        "_benched",
        "_conn",
        "_deadline",
        "_ended",
        "_lock",
        "_path",
        "_strikes",
        "_thread",
    )

    def __init__(self, path: str, statement_timeout: float | None = None) -> None:
        self._path = path
        # Never longer than the statement timeout: past it, the worker reports the timeout.
        budget = BUDGET_S if statement_timeout is None else min(BUDGET_S, statement_timeout)
        self._deadline = StatementDeadline(budget)
        self._conn: sqlite3.Connection | None = None
        self._thread: int | None = None
        self._ended = False
        self._lock = threading.Lock()  # a read and `close` never overlap
        self._strikes: dict[str, int] = {}
        self._benched: dict[str, int] = {}  # statement: calls left on the worker

    def read(self, sql: str, arguments: Any) -> list[Any] | None:
        """The statement's rows, or None when it must run on the worker thread instead
        (another thread's loop, a lock, past the budget, or any error: the worker runs it
        again and reports that error as every path does)."""
        if self._benched and self._on_the_bench(sql):
            return None
        with self._lock:
            conn = self._connection()
            if conn is None:
                return None
            # CPU time decides what is cheap: a busy machine's preemptions are not the read's.
            worked = time.thread_time()
            self._deadline.start()
            try:
                rows: list[Any] | None = conn.execute(sql, arguments).fetchall()
            except sqlite3.OperationalError as error:
                if getattr(error, "sqlite_errorname", "").startswith(_WAIT_ERRORS):
                    return None  # the worker waits for the lock; next time it may be free
                rows = None
            except (sqlite3.Error, UnicodeEncodeError):
                rows = None
            finally:
                self._deadline.clear()
            cheap = rows is not None and time.thread_time() - worked <= CHEAP_S
        if cheap:
            self._strikes.pop(sql, None)
        else:
            # Not at once: a statement's first run here also prepares it.
            self._strike(sql)
        return rows

    def close(self) -> None:
        """Close the connection (from any thread: it waits for a read in progress)."""
        with self._lock:
            self._ended = True
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def _on_the_bench(self, sql: str) -> bool:
        left = self._benched.get(sql)
        if left is None:
            return False
        if left > 0:
            self._benched[sql] = left - 1
            return True
        del self._benched[sql]  # a second chance: one more strike benches it again
        return False

    def _strike(self, sql: str) -> None:
        if len(self._strikes) >= REMEMBERED or len(self._benched) >= REMEMBERED:
            self._strikes.clear()
            self._benched.clear()
        strikes = self._strikes.get(sql, 0) + 1
        if strikes >= STRIKES:
            self._benched[sql] = BENCHED_CALLS
            strikes = STRIKES - 1
        self._strikes[sql] = strikes

    def _connection(self) -> sqlite3.Connection | None:
        current = threading.get_ident()
        if self._conn is not None:
            return self._conn if current == self._thread else None
        if self._ended or self._thread is not None:
            return None  # closed, or it failed to open once: the worker serves every read
        self._thread = current
        # Read-only: it never creates a missing file, rolls a journal back, or writes.
        uri = f"file:{urllib.parse.quote(self._path)}?mode=ro"
        try:
            # check_same_thread=False only so that `close` may run on another thread.
            conn = sqlite3.connect(
                uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error:
            return None
        try:
            conn.execute(_CACHE_SIZE)
            conn.set_progress_handler(self._deadline, BUDGET_STEPS)
        except sqlite3.Error:
            conn.close()
            return None
        self._conn = conn
        return conn
