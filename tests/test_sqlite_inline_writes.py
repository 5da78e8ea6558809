"""SQLite's native executor runs a write on the event loop's own thread when its worker is
idle, no call waits for it, and no other call comes while the write lets the loop run
once; writes that come together go to the worker, whose batches share one commit. A write
refused there (a lock, past its budget, an error) runs on the worker as before. A spy on
the worker's `submit` shows which path each call took.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Integer, bindparam, text

from slack_agents_sa import Provider
from slack_agents_sa.backends import SessionOptions
from slack_agents_sa.backends.sqlite import connection_pragmas
from slack_agents_sa.errors import MissingRowError
from slack_agents_sa.executors.sqlite_inline import CHECKPOINT_EVERY, InlineWriter, Missed
from slack_agents_sa.executors.sqlite_worker import JobKind
from tests.databases import opened_provider
from tests.sqlite_native import (
    WAIT_S,
    lock_held_elsewhere,
    native_sqlite,
    spy_on_worker,
    sqlite_executor,
)

#: Rows of one INSERT that takes SQLite milliseconds: far past the inline budget.
LONG_ROWS = 200_000
_INSERT_COUNTED = text(
    "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < :rows) "
    "INSERT INTO host_rows SELECT n FROM c"
).bindparams(bindparam("rows", type_=Integer()))


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Provider]:
    async with native_sqlite(tmp_path / "w.db") as p:
        yield p


@pytest.fixture
def worker_jobs(storage: Provider, monkeypatch: pytest.MonkeyPatch) -> list[JobKind]:
    """The kind of every job the worker thread was given, in order."""
    seen: list[JobKind] = []
    spy_on_worker(storage, monkeypatch, lambda job: seen.append(job.kind))
    return seen


def _writes(jobs: list[JobKind]) -> list[JobKind]:
    return [kind for kind in jobs if kind in (JobKind.STATEMENT, JobKind.TRANSACTION)]


async def test_a_write_alone_runs_on_the_loop_thread(
    storage: Provider, worker_jobs: list[JobKind]
) -> None:
    conversation_id = await storage.get_or_create_conversation("bot", "C1", "1.1")
    message_id = await storage.create_message(conversation_id, "U1", "Ann", "ann")
    await storage.append_text_block(message_id, "hello")
    await storage.append_tool_block(
        message_id,
        tool_call_id="toolu_1",
        tool_name="t",
        tool_input={"q": 1},
        tool_output="out",
        is_error=False,
    )
    await storage.set("ns", "k", {"v": 1})
    item_id = await storage.append("ns", "list", {"n": 1})
    await storage.delete("ns", "k")
    assert worker_jobs == []
    assert await storage.get("ns", "k") is None
    assert await storage.get_list("ns", "list") == [{"n": 1, "id": item_id}]
    [(_, [text_block, tool_block])] = await storage.get_message_blocks(conversation_id)
    assert text_block["content"] == {"text": "hello"}
    assert tool_block["content"]["tool_call_id"] == "toolu_1"


async def test_writes_made_together_go_to_the_worker_and_all_land(
    storage: Provider, worker_jobs: list[JobKind]
) -> None:
    await asyncio.gather(*(storage.set("ns", f"k{n}", {"v": n}) for n in range(8)))
    # Each came while another let the loop run: none was alone.
    assert len(_writes(worker_jobs)) == 8
    for n in range(8):
        assert await storage.get("ns", f"k{n}") == {"v": n}
    worker_jobs.clear()
    await storage.set("ns", "after", {"v": 1})  # alone again: here
    assert _writes(worker_jobs) == []


async def test_a_write_refused_here_is_refused_by_the_worker_and_leaves_nothing(
    storage: Provider, worker_jobs: list[JobKind]
) -> None:
    conversation_id = await storage.get_or_create_conversation("bot", "C1", "1.1")
    with pytest.raises(MissingRowError):
        await storage.append_text_block(424242, "to no message")
    with pytest.raises(TypeError, match="cannot store value"):
        await storage.append_tool_block(
            await storage.create_message(conversation_id, "U1", "Ann", "ann"),
            tool_call_id="toolu_1",
            tool_name="t",
            tool_input={"not json": {1, 2}},
            tool_output="",
            is_error=False,
        )
    # The refused write was tried here, then run again by the worker, which reported it.
    assert _writes(worker_jobs) == [JobKind.STATEMENT, JobKind.TRANSACTION]
    [(message_id, [])] = await storage.get_message_blocks(conversation_id)
    assert await storage.get_tool_call("toolu_1") is None
    worker_jobs.clear()
    await storage.append_text_block(message_id, "next")
    assert _writes(worker_jobs) == []
    [(_, [block])] = await storage.get_message_blocks(conversation_id)
    assert block["content"] == {"text": "next"}


async def test_a_write_past_the_budget_is_taken_back_and_run_once_by_the_worker(
    storage: Provider, worker_jobs: list[JobKind]
) -> None:
    await storage.db.write(text("CREATE TABLE host_rows (n INTEGER)"))
    worker_jobs.clear()
    await storage.db.write(_INSERT_COUNTED, {"rows": LONG_ROWS})
    assert _writes(worker_jobs) == [JobKind.STATEMENT]
    [row] = await storage.db.fetch(text("SELECT count(*), count(DISTINCT n) FROM host_rows"))
    assert tuple(row) == (LONG_ROWS, LONG_ROWS)


async def test_a_lock_another_process_holds_never_holds_up_the_loop(
    tmp_path: Path, storage: Provider, worker_jobs: list[JobKind]
) -> None:
    async with lock_held_elsewhere(tmp_path / "w.db") as release:
        write = asyncio.ensure_future(storage.set("ns", "k", {"v": 1}))
        for _ in range(WAIT_S * 1000):  # refused here at once, then queued on the worker
            if _writes(worker_jobs):
                break
            await asyncio.sleep(0.001)
        else:
            pytest.fail(f"the write did not reach the worker in {WAIT_S} s")
        await asyncio.sleep(0.2)
        assert not write.done()  # the worker waits for the lock, the loop runs on
        await release()
    await write
    assert await storage.get("ns", "k") == {"v": 1}
    worker_jobs.clear()
    await storage.set("ns", "k", {"v": 2})
    assert _writes(worker_jobs) == []


async def test_the_worker_checkpoints_the_log_of_writes_made_here(
    storage: Provider, worker_jobs: list[JobKind]
) -> None:
    written = 0
    while worker_jobs.count(JobKind.CHECKPOINT) < 3:
        await storage.set("ns", f"k{written % 50}", {"v": written})
        written += 1
        assert written <= 4 * CHECKPOINT_EVERY, "no checkpoint asked for"
    # One per CHECKPOINT_EVERY writes made here; a write made while the worker checkpoints
    # goes to the worker.
    here = written - len(_writes(worker_jobs))
    assert here == 3 * CHECKPOINT_EVERY
    assert len(_writes(worker_jobs)) <= 3
    await storage.db.settle()
    assert await storage.get("ns", f"k{(written - 1) % 50}") == {"v": written - 1}


async def test_close_closes_the_inline_writer(tmp_path: Path) -> None:
    async with opened_provider(f"sqlite:///{tmp_path / 'c.db'}") as p:
        await p.set("ns", "k", {"v": 1})
        writer = sqlite_executor(p)._writer
        assert writer.is_open
    assert not writer.is_open


async def test_calls_made_while_a_write_gives_the_loop_its_turn_run_after_it(
    storage: Provider, worker_jobs: list[JobKind]
) -> None:
    """A write made alone gives the loop one turn before it runs here; a call made in that
    turn sends the write to the worker first, so it never runs ahead of the write."""
    conversation_id = await storage.get_or_create_conversation("bot", "C1", "1.1")
    message_id = await storage.create_message(conversation_id, "U1", "Ann", "ann")
    for n in range(5):
        _, seen = await asyncio.gather(storage.set("ns", "k", {"v": n}), storage.get("ns", "k"))
        assert seen == {"v": n}
        await asyncio.gather(storage.set("ns", "k", {"v": -1}), storage.set("ns", "k", {"v": n}))
        assert await storage.get("ns", "k") == {"v": n}
        _, history = await asyncio.gather(
            storage.append_text_block(message_id, f"t{n}"),
            storage.get_message_blocks(conversation_id),
        )
        [(_, blocks)] = history
        assert blocks[-1]["content"] == {"text": f"t{n}"}
    assert JobKind.STATEMENT in worker_jobs  # the held writes went to the worker
    # With reads on the worker too (the inline reader closed), still in order.
    sqlite_executor(storage)._reader.close()
    _, seen = await asyncio.gather(storage.set("ns", "k", {"v": 99}), storage.get("ns", "k"))
    assert seen == {"v": 99}


def test_the_inline_writer_never_waits_for_a_lock_even_to_open(tmp_path: Path) -> None:
    """The backend's set-up for the inline writer (the switch to WAL included) runs with no
    busy timeout, whatever `lock_timeout` says: a lock another connection holds is a miss
    at once, then the next call opens."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (n INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    session = SessionOptions(lock_timeout=600)
    writer = InlineWriter(str(path), connection_pragmas(session, is_file=True, waits=False))

    def insert(conn: sqlite3.Connection) -> int:
        return conn.execute("INSERT INTO t VALUES (1)").rowcount

    try:
        with ThreadPoolExecutor(1) as pool:  # a hang shows as a timeout, not a stuck run
            assert pool.submit(writer.write, insert).result(timeout=WAIT_S) is Missed.UNAVAILABLE
            holder.execute("ROLLBACK")
            assert pool.submit(writer.write, insert).result(timeout=WAIT_S) == (1,)
    finally:
        holder.close()
        writer.close()


async def test_a_call_from_another_threads_loop_leaves_a_held_write_to_its_own_loop(
    storage: Provider,
) -> None:
    """While a write holds its turn, a call from another thread's event loop neither sends
    it (its future would belong to the wrong loop) nor waits for it; the write completes."""
    await storage.set("ns", "k", {"v": 0})
    write = asyncio.ensure_future(storage.set("ns", "k", {"v": 1}))
    await asyncio.sleep(0)  # the write runs up to its turn and holds it
    held = sqlite_executor(storage)._held
    assert held is not None
    seen: list[Any] = []
    other = threading.Thread(target=lambda: seen.append(asyncio.run(storage.get("ns", "k"))))
    other.start()
    other.join(WAIT_S)  # this loop stands still meanwhile: the write is held throughout
    assert sqlite_executor(storage)._held is held and held.future is None
    await write
    assert seen in ([{"v": 0}], [{"v": 1}])
    assert await storage.get("ns", "k") == {"v": 1}
