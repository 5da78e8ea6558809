"""Short reads run on the event loop's own thread, on a read-only connection of its own:
a point read takes SQLite a few microseconds there, while the hop to the worker thread and
back costs the loop more than that (a wake-up through its self-pipe) and the caller ~30 µs.

A read tries here only when the worker has nothing queued or running (so it cannot miss
a call that came earlier), and hands itself to the worker, which runs it as before, when
it would wait or work long: the connection has no busy timeout, and its progress handler
stops a statement past its budget of SQLite's work (`executors.sqlite_inline`). A
statement that keeps costing more than `CHEAP_S` while other calls wait goes to the worker
for a while, so concurrent calls are not held up behind it. (SQLite's own file reads,
slow on a cold disk, are not interruptible.)
"""

from __future__ import annotations

import sqlite3
import time
import urllib.parse
from typing import Any

from slack_agents_sa.executors.sqlite_inline import LoopConnection, Missed, inline_budget

#: A read costing more CPU than this here is a strike against its statement.
CHEAP_S = 0.00005
#: Strikes in a row that send a statement to the worker for its next BENCHED_CALLS calls.
STRIKES = 3
BENCHED_CALLS = 200
#: At most this many statements remembered (then all forgotten).
REMEMBERED = 1_000
#: A small page cache (512 KiB): another connection's commit empties it anyway.
_CACHE_SIZE = "PRAGMA cache_size = -512"


class InlineReader:
    """A read-only connection for the thread that opened it (the event loop's)."""

    __slots__ = ("_benched", "_conn", "_strikes")

    def __init__(self, path: str, statement_timeout: float | None = None) -> None:
        self._conn = LoopConnection(lambda: _open_reader(path), inline_budget(statement_timeout))
        self._strikes: dict[str, int] = {}
        self._benched: dict[str, int] = {}  # statement: calls left on the worker

    def read(self, sql: str, arguments: Any, crowded: bool = True) -> list[Any] | None:
        """The statement's rows, or None when it must run on the worker thread instead
        (another thread's loop, a lock, past the budget, or any error: the worker runs it
        again and reports that error as every path does). Costing more than `CHEAP_S` is
        a strike only when `crowded`: other calls are about to run, and wait for this one."""
        if self._benched and self._on_the_bench(sql):
            return None
        # CPU time decides what is cheap: a busy machine's preemptions are not the read's.
        worked = time.thread_time()
        outcome = self._conn.attempt(lambda conn: conn.execute(sql, arguments).fetchall())
        if outcome is Missed.LOCKED or outcome is Missed.UNAVAILABLE:
            return None  # not the statement's doing: no strike against it
        if isinstance(outcome, Missed) or (crowded and time.thread_time() - worked > CHEAP_S):
            # Not at once: a statement's first run here also prepares it.
            self._strike(sql)
        else:
            self._strikes.pop(sql, None)
        return None if isinstance(outcome, Missed) else outcome[0]

    @property
    def is_open(self) -> bool:
        return self._conn.is_open

    def close(self) -> None:
        """Close the connection (from any thread: it waits for a read in progress)."""
        self._conn.close()

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


def _open_reader(path: str) -> sqlite3.Connection:
    # Read-only: it never creates a missing file, rolls a journal back, or writes.
    uri = f"file:{urllib.parse.quote(path)}?mode=ro"
    # check_same_thread=False only so that `close` may run on another thread.
    conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(_CACHE_SIZE)
    except sqlite3.Error:
        conn.close()
        raise
    return conn
