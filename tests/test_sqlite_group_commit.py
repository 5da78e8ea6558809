"""SQLite's native executor commits the writes that queued together once (group commit),
and each call still takes effect entirely or not at all, as if it had run alone.

Calls queue together here while a gate holds the worker thread. A trace of the worker's
connection (sqlite3's own `set_trace_callback`) shows the transactions it ran.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table, func, insert, select, text

from slack_agents_sa import Provider
from slack_agents_sa.errors import LockTimeoutError, MissingRowError, StatementTimeoutError
from slack_agents_sa.executors import sqlite_batches, sqlite_connection
from slack_agents_sa.executors.base import Step
from slack_agents_sa.executors.sqlite_worker import JobKind
from slack_agents_sa.models import KeyValueEntry, ToolCall
from tests.databases import opened_provider
from tests.sqlite_native import WAIT_S, sqlite_executor

#: The provider's statement timeout here.
TIMEOUT_S = 1.0
_COUNTING = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < :rows) "

_host = MetaData()
_parents = Table("host_parents", _host, Column("id", Integer, primary_key=True))
#: A host table whose foreign key SQLite checks at COMMIT: a row without its parent makes
#: the COMMIT fail, not the INSERT.
_children = Table(
    "host_children",
    _host,
    Column("id", Integer, primary_key=True),
    Column(
        "parent_id",
        Integer,
        ForeignKey("host_parents.id", deferrable=True, initially="DEFERRED"),
    ),
)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the native executor's connections run, in order."""
    seen: list[str] = []
    connect = sqlite_connection.connect

    def traced(*args: Any) -> sqlite3.Connection:
        conn = connect(*args)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(sqlite_batches, "connect", traced)
    return seen


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "agents.db"


@pytest.fixture
async def storage(path: Path, statements: list[str]) -> AsyncIterator[Provider]:
    url = f"sqlite+aiosqlite:///{path}"
    async with (
        asyncio.timeout(WAIT_S),
        opened_provider(url, statement_timeout=TIMEOUT_S, lock_timeout=0.3) as opened,
    ):
        assert opened.db.executor_kind == "native"
        async with opened.db.transaction() as conn:
            await conn.run_sync(_host.create_all)
        statements.clear()
        yield opened


async def _held_worker_then(
    storage: Provider,
    *calls: Awaitable[Any],
    meanwhile: Callable[[Sequence[asyncio.Future[Any]]], None] = lambda _tasks: None,
) -> list[Any]:
    """Hold the worker thread, queue `calls` (then `meanwhile(their tasks)`), let the worker
    go: their outcomes in order (an error as its exception). The calls are one batch."""
    executor = sqlite_executor(storage)
    holding, gate = threading.Event(), threading.Event()

    def hold(_conn: sqlite3.Connection) -> None:
        holding.set()
        gate.wait(WAIT_S)

    held = asyncio.ensure_future(executor._run(JobKind.READ, [""], hold))
    try:
        assert await asyncio.to_thread(holding.wait, WAIT_S)
        tasks = [asyncio.ensure_future(call) for call in calls]
        for _ in range(WAIT_S * 1000):
            if len(executor._worker._jobs) >= len(tasks):
                break
            await asyncio.sleep(0.001)
        else:
            pytest.fail(f"the calls did not all queue in {WAIT_S} s")
        meanwhile(tasks)
    finally:
        gate.set()
        await held
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def _transactions(statements: list[str]) -> list[str]:
    return [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")]


async def _keys(storage: Provider) -> set[str]:
    rows = await storage.db.fetch(select(KeyValueEntry.key).where(KeyValueEntry.namespace == "ns"))
    return {row.key for row in rows}


def _sets(storage: Provider, count: int, first: int = 0) -> list[Awaitable[None]]:
    return [storage.set("ns", f"k{i}", {"v": i}) for i in range(first, first + count)]


async def test_writes_queued_together_commit_once(storage: Provider, statements: list[str]) -> None:
    outcomes = await _held_worker_then(storage, *_sets(storage, 20))
    assert outcomes == [None] * 20
    assert _transactions(statements) == ["BEGIN IMMEDIATE", "COMMIT"]
    assert await _keys(storage) == {f"k{i}" for i in range(20)}


async def test_a_failing_write_gets_its_error_and_the_others_commit_with_the_batch(
    storage: Provider, statements: list[str]
) -> None:
    conversation = await storage.get_or_create_conversation("agent", "C1", "T1", None)
    message = await storage.create_message(conversation, "U1", "user", "someone")

    def tool_block(message_id: int, n: int) -> Awaitable[int]:
        return storage.append_tool_block(
            message_id,
            tool_call_id=f"call{n}",
            tool_name="t",
            tool_input={"n": n},
            tool_output="out",
            is_error=False,
        )

    statements.clear()
    calls = [tool_block(message, n) for n in range(5)]
    calls.insert(2, tool_block(message + 1000, 99))  # no such message
    outcomes = await _held_worker_then(storage, *calls)
    assert isinstance(outcomes[2], MissingRowError)
    assert all(isinstance(block_id, int) for block_id in outcomes[:2] + outcomes[3:])
    # One transaction for all six, the failed one rolled back to its savepoint.
    assert _transactions(statements) == ["BEGIN IMMEDIATE", "COMMIT"]
    assert statements.count("ROLLBACK TO call") == 1
    rows = await storage.db.fetch(select(ToolCall.tool_call_id).order_by(ToolCall.tool_call_id))
    assert [row.tool_call_id for row in rows] == [f"call{n}" for n in range(5)]


async def test_a_commit_that_fails_runs_each_write_alone(
    storage: Provider, statements: list[str]
) -> None:
    orphan = storage.db.write(insert(_children), {"id": 1, "parent_id": 42})
    outcomes = await _held_worker_then(storage, *_sets(storage, 3), orphan, *_sets(storage, 3, 3))
    assert outcomes[:3] + outcomes[4:] == [None] * 6
    assert "FOREIGN KEY constraint failed" in str(outcomes[3])
    transactions = _transactions(statements)
    assert transactions[:3] == ["BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"]
    assert await _keys(storage) == {f"k{i}" for i in range(6)}
    assert await storage.db.fetch(select(func.count()).select_from(_children)) == [(0,)]


async def test_a_python_error_in_a_transaction_of_the_batch_writes_nothing_of_it(
    storage: Provider, statements: list[str]
) -> None:
    first = insert(_parents).values(id=1)

    def refuse(_previous: int | None) -> dict[str, Any]:
        raise LookupError("no values for the second step")

    steps = storage.db.steps([Step(first, {}), Step(insert(_parents).values(id=2), refuse)])
    outcomes = await _held_worker_then(storage, *_sets(storage, 2), steps, *_sets(storage, 2, 2))
    assert isinstance(outcomes[2], LookupError)
    assert outcomes[:2] + outcomes[3:] == [None] * 4
    assert _transactions(statements) == ["BEGIN IMMEDIATE", "COMMIT"]
    assert statements.count("ROLLBACK TO call") == 1
    assert await storage.db.fetch(select(func.count()).select_from(_parents)) == [(0,)]
    assert await _keys(storage) == {f"k{i}" for i in range(4)}


async def test_a_statement_timeout_in_a_batch_stops_that_call_only(storage: Provider) -> None:
    runaway = text(_COUNTING + "UPDATE host_parents SET id = id WHERE (SELECT count(*) FROM c) < 0")
    await storage.db.write(insert(_parents), {"id": 1})  # a row, so the WHERE runs
    slow = storage.db.write(runaway, {"rows": 10**9})
    outcomes = await _held_worker_then(storage, *_sets(storage, 2), slow, *_sets(storage, 2, 2))
    assert isinstance(outcomes[2], StatementTimeoutError)
    assert outcomes[:2] + outcomes[3:] == [None] * 4
    assert await _keys(storage) == {f"k{i}" for i in range(4)}


async def test_a_lock_held_by_another_process_fails_the_batch_once_and_then_lets_go(
    storage: Provider, path: Path, statements: list[str]
) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        outcomes = await _held_worker_then(storage, *_sets(storage, 5))
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert all(isinstance(outcome, LockTimeoutError) for outcome in outcomes)
    # One wait on the lock for the whole batch, not one per call.
    assert _transactions(statements) == ["BEGIN IMMEDIATE"]
    await storage.set("ns", "after", {"v": 1})
    assert await _keys(storage) == {"after"}


async def test_callers_cancelled_in_a_batch_still_get_whole_writes(storage: Provider) -> None:
    """The provider shields each call: a cancelled caller's write still runs, whole."""

    def cancel_half(tasks: Sequence[asyncio.Future[Any]]) -> None:
        for task in tasks[::2]:
            task.cancel()

    outcomes = await _held_worker_then(storage, *_sets(storage, 20), meanwhile=cancel_half)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes[::2])
    assert outcomes[1::2] == [None] * 10
    # Queued after every call above: once it returns, they have all run.
    await storage.set("ns", "after", {"v": 1})
    assert await _keys(storage) == {f"k{i}" for i in range(20)} | {"after"}


async def test_jobs_abandoned_before_their_batch_ran_are_not_run(storage: Provider) -> None:
    """Below the shield (a loop shutting down cancels every task): a job whose waiter was
    cancelled before the worker reached it never runs; the rest of its batch does."""
    executor = sqlite_executor(storage)

    def cancel_half(tasks: Sequence[asyncio.Future[Any]]) -> None:
        for task in tasks[::2]:
            task.cancel()

    writes = [executor.write(insert(_parents), {"id": n}) for n in range(10)]
    outcomes = await _held_worker_then(storage, *writes, meanwhile=cancel_half)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes[::2])
    assert outcomes[1::2] == [1] * 5
    rows = await storage.db.fetch(select(_parents.c.id).order_by(_parents.c.id))
    assert [row.id for row in rows] == [1, 3, 5, 7, 9]


async def test_reads_and_writes_of_a_batch_run_in_the_order_they_came(storage: Provider) -> None:
    count = select(func.count()).select_from(_parents)
    calls: list[Awaitable[Any]] = []
    for n in range(3):
        calls.append(storage.db.write(insert(_parents), {"id": n}))
        calls.append(storage.db.fetch(count))
    outcomes = await _held_worker_then(storage, *calls)
    assert outcomes == [1, [(1,)], 1, [(2,)], 1, [(3,)]]
