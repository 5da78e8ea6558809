"""SQLite's native executor runs a short read on the event loop's own thread, on a
read-only connection, when its worker thread has nothing queued or running; every other
read (long, refused, queued behind a call, from another thread) runs on the worker and
gives what it gave before. A spy on the worker's `submit` shows which path a read took.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Integer, bindparam, func, insert, select, text

from slack_agents_sa import Provider
from slack_agents_sa.errors import StatementTimeoutError
from slack_agents_sa.executors.sqlite_reader import STRIKES, InlineReader
from slack_agents_sa.executors.sqlite_worker import Job, JobKind
from slack_agents_sa.models import KeyValueEntry, table_of
from tests.databases import opened_provider
from tests.sqlite_native import WAIT_S, native_sqlite, spy_on_worker, sqlite_executor

#: Rows of a counting query that takes SQLite milliseconds: far past the inline budget.
LONG_ROWS = 300_000
_COUNT_TO = text(
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < :rows) "
    "SELECT count(*) FROM c"
).bindparams(bindparam("rows", type_=Integer()))
_entries = table_of(KeyValueEntry)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Provider]:
    async with native_sqlite(tmp_path / "a.db") as p:
        yield p


@pytest.fixture
def worker_reads(storage: Provider, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every read job the worker thread was given, in order."""
    seen: list[str] = []

    def record(job: Job) -> None:
        if job.kind is JobKind.READ:
            seen.append(job.statement[-1])

    spy_on_worker(storage, monkeypatch, record)
    return seen


async def test_a_read_with_the_worker_idle_runs_on_the_loop_thread(
    storage: Provider, worker_reads: list[str]
) -> None:
    await storage.set("ns", "k", {"v": 1})
    for _ in range(5):
        assert await storage.get("ns", "k") == {"v": 1}
        assert await storage.get("ns", "missing") is None
    assert worker_reads == []


async def test_a_read_queued_behind_a_write_runs_after_it_on_the_worker(
    storage: Provider, worker_reads: list[str]
) -> None:
    """The write is still on the worker when the read comes: the read queues behind it,
    so it sees the row (in the order the calls came, as the worker runs them)."""
    worker = sqlite_executor(storage)._worker
    holding, gate = threading.Event(), threading.Event()

    def hold(_conn: Any) -> None:
        holding.set()
        gate.wait(WAIT_S)

    held = asyncio.ensure_future(sqlite_executor(storage)._run(JobKind.READ, [""], hold))
    try:
        assert await asyncio.to_thread(holding.wait, WAIT_S)
        write = asyncio.ensure_future(storage.set("ns", "k", {"v": 2}))
        read = asyncio.ensure_future(storage.get("ns", "k"))
        for _ in range(WAIT_S * 1000):  # both queue on the held worker
            if len(worker._jobs) >= 2:
                break
            await asyncio.sleep(0.001)
        else:
            pytest.fail(f"the calls did not queue in {WAIT_S} s")
    finally:
        gate.set()
        await held
    await write
    assert await read == {"v": 2}
    assert len(worker_reads) == 2  # the gate's job and the read


async def test_a_read_past_the_budget_runs_on_the_worker_and_later_goes_there_at_once(
    storage: Provider, worker_reads: list[str]
) -> None:
    reader = sqlite_executor(storage)._reader
    for _ in range(STRIKES + 2):
        assert await storage.db.fetch(_COUNT_TO, {"rows": LONG_ROWS}) == [(LONG_ROWS,)]
    assert len(worker_reads) == STRIKES + 2  # interrupted here, then run on the worker
    assert any("RECURSIVE" in sql for sql in reader._benched)


async def test_a_write_sent_as_a_read_is_refused_here_and_written_once_on_the_worker(
    storage: Provider, worker_reads: list[str]
) -> None:
    """`fetch` of an INSERT ... RETURNING (a host's statement): the inline connection is
    read-only, so SQLite refuses it before writing, and the worker runs it."""
    for n in range(STRIKES + 2):
        stmt = (
            insert(_entries).values(namespace="ns", key=f"k{n}", value={}).returning(_entries.c.key)
        )
        assert [row.key for row in await storage.db.fetch(stmt)] == [f"k{n}"]
    count = select(func.count()).select_from(_entries).where(_entries.c.namespace == "ns")
    assert await storage.db.fetch(count) == [(STRIKES + 2,)]
    assert len(worker_reads) == STRIKES + 2


async def test_a_statement_timeout_shorter_than_the_budget_still_stops_a_long_read(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    async with asyncio.timeout(WAIT_S), opened_provider(url, statement_timeout=0.0001) as p:
        with pytest.raises(StatementTimeoutError):
            await p.db.fetch(_COUNT_TO, {"rows": LONG_ROWS * 10})
        assert await p.get("ns", "k") is None  # and the next read works


async def test_reads_from_another_threads_event_loop_run_on_the_worker(
    storage: Provider, worker_reads: list[str]
) -> None:
    await storage.set("ns", "k", {"v": 3})
    assert await storage.get("ns", "k") == {"v": 3}  # the inline connection is this thread's

    def on_another_loop() -> Any:
        return asyncio.run(storage.get("ns", "k"))

    assert await asyncio.to_thread(on_another_loop) == {"v": 3}
    assert len(worker_reads) == 1


async def test_close_closes_the_inline_connection(tmp_path: Path) -> None:
    async with opened_provider(f"sqlite:///{tmp_path / 'c.db'}") as p:
        assert await p.get("ns", "k") is None
        reader = sqlite_executor(p)._reader
        assert reader.is_open
    assert not reader.is_open


async def test_a_read_arriving_while_a_write_runs_waits_for_its_commit(
    storage: Provider, worker_reads: list[str]
) -> None:
    executor = sqlite_executor(storage)
    await storage.db.write(text("CREATE TABLE host_rows (n INTEGER)"))
    holding, gate = threading.Event(), threading.Event()

    def write_after_the_gate(conn: Any) -> None:
        holding.set()
        gate.wait(WAIT_S)
        conn.execute("INSERT INTO host_rows VALUES (1)")

    write = asyncio.ensure_future(
        executor._run(JobKind.STATEMENT, ["INSERT"], write_after_the_gate)
    )
    try:
        assert await asyncio.to_thread(holding.wait, WAIT_S)
        read = asyncio.ensure_future(storage.db.fetch(text("SELECT count(*) FROM host_rows")))
        await asyncio.sleep(0.01)
        assert not read.done()  # queued behind the write, not read inline meanwhile
    finally:
        gate.set()
    await write
    assert await read == [(1,)]
    assert len(worker_reads) == 1


async def test_a_table_another_connection_made_is_read_inline(
    storage: Provider, worker_reads: list[str]
) -> None:
    """The inline connection's schema follows changes made on other connections (a host's
    migration through the engine)."""
    assert await storage.get("ns", "k") is None  # the inline connection is open
    async with storage.db.transaction() as conn:
        await conn.execute(text("CREATE TABLE host_later (n INTEGER)"))
        await conn.execute(text("INSERT INTO host_later VALUES (7)"))
    assert await storage.db.fetch(text("SELECT n FROM host_later")) == [(7,)]
    assert worker_reads == []


def test_the_inline_reader_never_creates_a_missing_database_file(tmp_path: Path) -> None:
    reader = InlineReader(str(tmp_path / "missing.db"))
    assert reader.read("SELECT 1", []) is None
    assert list(tmp_path.iterdir()) == []
    reader.close()


async def test_a_costly_read_is_struck_only_while_other_calls_wait(
    storage: Provider, worker_reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone, a read past `CHEAP_S` holds nobody up: it stays here. While other calls wait
    to run after it, it is struck, and benched after STRIKES of them."""
    monkeypatch.setattr("slack_agents_sa.executors.sqlite_reader.CHEAP_S", -1.0)
    await storage.set("ns", "k", {"v": 1})
    for _ in range(2 * STRIKES):
        assert await storage.get("ns", "k") == {"v": 1}
    assert worker_reads == []
    reader = sqlite_executor(storage)._reader
    sql = "SELECT 1"
    for _ in range(STRIKES):
        assert reader.read(sql, (), crowded=True) == [(1,)]
    assert reader.read(sql, (), crowded=True) is None  # benched: the worker's now
