"""One migration at a time in this process: the lock every run of Alembic here holds.

Alembic's `alembic.context` and `alembic.op` are process-wide, so two runs interleaving
would migrate each other's database; this lock comes before the database's own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy.util.concurrency import await_only, in_greenlet

from slack_agents_sa.backends import MIGRATION_LOCK_TIMEOUT_S
from slack_agents_sa.backends.migration_steps import lock_not_taken

#: The in-process lock's name in a `MigrationLockError`.
IN_PROCESS_LOCK = "in-process: one slack_agents_sa migration at a time per Python process"

#: Held by every migration run of this process. Alembic's `alembic.context` and `alembic.op`
#: are module globals each run replaces, and a run awaits its driver at every statement
#: (SQLAlchemy's greenlet bridge), so two runs interleaving would migrate each other's
#: database. A `threading.Lock`: runs may be on different event loops and threads.
_in_process = threading.Lock()

#: The async side polls `_in_process` (never blocking the loop), backing off to this pause.
_POLL_FIRST_S = 0.001
_POLL_MAX_S = 0.02


async def _take_in_process(lock_timeout: float) -> None:
    """Take `_in_process` within `lock_timeout` seconds, else `MigrationLockError`.

    Attempts never block and nothing is awaited once one succeeds, so a waiter cancelled
    (at a sleep between attempts) holds nothing; the caller releases in `finally`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lock_timeout
    pause = _POLL_FIRST_S
    while not _in_process.acquire(blocking=False):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise lock_not_taken(IN_PROCESS_LOCK, lock_timeout, timed_out=True)
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, _POLL_MAX_S)


@asynccontextmanager
async def in_process_migration_lock(
    lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S,
) -> AsyncIterator[None]:
    """Hold this process's migration lock (what every run of Alembic here holds), waiting
    `lock_timeout` seconds at most for another run's: `MigrationLockError` after that."""
    await _take_in_process(lock_timeout)
    try:
        yield
    finally:
        _in_process.release()


@contextmanager
def in_process_migration_lock_sync(lock_timeout: float) -> Iterator[None]:
    """`in_process_migration_lock` for sync code: under `run_sync` it waits through the
    greenlet bridge (the loop runs meanwhile), elsewhere it blocks this thread."""
    if in_greenlet():
        await_only(_take_in_process(lock_timeout))
    elif not _in_process.acquire(timeout=min(max(lock_timeout, 0.0), threading.TIMEOUT_MAX)):
        raise lock_not_taken(IN_PROCESS_LOCK, lock_timeout, timed_out=True)
    try:
        yield
    finally:
        _in_process.release()
