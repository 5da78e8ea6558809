"""What the tests of SQLite's native executor share: a provider on it, its executor, a spy
on its worker thread's jobs, and another process holding the database's write lock."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from slack_agents_sa import Provider
from slack_agents_sa.executors.sqlite import SQLiteExecutor
from slack_agents_sa.executors.sqlite_worker import Job
from tests.databases import opened_provider

#: A test body not done after this many seconds is hung.
WAIT_S = 60

#: Another process holding SQLite's write lock until its stdin closes.
LOCK_HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@asynccontextmanager
async def native_sqlite(path: Path) -> AsyncIterator[Provider]:
    """A provider on the SQLite file `path`, on the native executor, hung after WAIT_S."""
    async with asyncio.timeout(WAIT_S), opened_provider(f"sqlite:///{path}") as provider:
        assert provider.db.executor_kind == "native"
        yield provider


def sqlite_executor(storage: Provider) -> SQLiteExecutor:
    executor = storage.db._executor
    assert isinstance(executor, SQLiteExecutor)
    return executor


def spy_on_worker(
    storage: Provider, monkeypatch: pytest.MonkeyPatch, record: Callable[[Job], None]
) -> None:
    """`record` each job the worker thread is given, before it runs."""
    worker = sqlite_executor(storage)._worker
    submit = worker.submit

    def spied(job: Job) -> None:
        record(job)
        submit(job)

    monkeypatch.setattr(worker, "submit", spied)


@asynccontextmanager
async def lock_held_elsewhere(path: Path) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Another process holds the write lock of the SQLite file `path`; the context gives
    `release`, which ends that process (and is awaited on exit if the body did not)."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LOCK_HOLDER,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdin is not None and holder.stdout is not None
    assert await holder.stdout.readline() == b"locked\n"
    stdin = holder.stdin

    async def release() -> None:
        if not stdin.is_closing():
            stdin.close()
        assert await holder.wait() == 0

    try:
        yield release
    finally:
        await release()
