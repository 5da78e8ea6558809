"""Faults: dropped connections, failures inside a method, calls on a closed provider."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from asyncmy import errors as asyncmy_errors
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.backends import backend_for
from slack_agents_sa.errors import ConnectionLostError, ProviderClosedError
from slack_agents_sa.executors.errors import engine_error
from tests.admin import admin_rows, admin_url
from tests.databases import (
    SERVER_BACKENDS,
    Backend,
    backend_params,
    empty_all_tables,
    opened_provider,
)
from tests.sqlite_native import lock_held_elsewhere
from tests.tcp_proxy import tcp_proxy

#: Each server on both executors (and aiomysql, which has only SQLAlchemy's).
SERVERS = SERVER_BACKENDS
#: How long a test waits for the server to show what it waits for (a killed session gone,
#: a call waiting on a lock) before failing: generous, a busy machine is slow, not stuck.
WAIT_S = 120


@pytest.fixture(params=backend_params(SERVERS))
def server_url(request: pytest.FixtureRequest, server_databases: dict[Backend, URL]) -> URL:
    """The run's scratch database on each server backend (made outside the event loop)."""
    url = server_databases[request.param]
    asyncio.run(empty_all_tables(url))
    return url


@pytest.fixture
async def server_provider(
    server_url: URL, provider_options: dict[str, Any]
) -> AsyncIterator[tuple[Provider, URL]]:
    storage = Provider(url=server_url.render_as_string(hide_password=False), **provider_options)
    await storage.initialize()
    try:
        yield storage, server_url
    finally:
        await storage.close()


def _is_mysql(url: URL) -> bool:
    return url.get_backend_name() in ("mysql", "mariadb")


async def _other_sessions(url: URL) -> list[int]:
    """Server-side ids of every other session on the test database."""
    if _is_mysql(url):
        statement = (
            "SELECT id FROM information_schema.processlist "
            "WHERE db = :database AND id <> CONNECTION_ID()"
        )
    else:
        statement = (
            "SELECT pid FROM pg_stat_activity WHERE datname = :database AND pid <> pg_backend_pid()"
        )
    return [row[0] for row in await admin_rows(url, statement, database=url.database)]


async def _kill(url: URL, session_id: int) -> None:
    if _is_mysql(url):
        await admin_rows(url, f"KILL {int(session_id)}")  # KILL takes no bound parameter
    else:
        await admin_rows(url, "SELECT pg_terminate_backend(:pid)", pid=session_id)


async def _kill_connections(url: URL) -> int:
    """Kill every other session on the database (what a server restart does to clients),
    and return once the server has ended them all."""
    sessions = await _other_sessions(url)
    for session_id in sessions:
        await _kill(url, session_id)
    await _seen(lambda: _ended(url, sessions), "the killed sessions ending")
    # Ended, they have closed (or are closing) their sockets: a moment for the clients'
    # event loop to read that.
    await asyncio.sleep(0.2)
    return len(sessions)


async def _ended(url: URL, sessions: list[int]) -> bool | None:
    """True once none of `sessions` is on the server any more (a killed one ends when its
    backend acts on the kill), else None."""
    return None if set(sessions) & set(await _other_sessions(url)) else True


async def _seen[T](probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """What `probe()` finds on the server (not None), asking every 50 ms; the test fails,
    naming `what`, if it finds nothing for WAIT_S seconds."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (found := await probe()) is None:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"never saw {what} on the server in {WAIT_S} s")
        await asyncio.sleep(0.05)
    return found


async def _session_waiting_on_a_lock(url: URL) -> int | None:
    if _is_mysql(url):
        statement = (
            "SELECT id FROM information_schema.processlist WHERE db = :database "
            "AND id <> CONNECTION_ID() AND state LIKE '%lock%'"
        )
    else:
        statement = (
            "SELECT pid FROM pg_stat_activity WHERE datname = :database "
            "AND wait_event_type = 'Lock'"
        )
    waiting = await admin_rows(url, statement, database=url.database)
    return waiting[0][0] if waiting else None


async def _lock_table(conn: AsyncConnection, table: str) -> None:
    """Hold `table` on `conn`, so writes to it from elsewhere wait on the server."""
    if conn.dialect.name in ("mysql", "mariadb"):
        await conn.execute(text(f"LOCK TABLES {table} WRITE"))
    else:
        await conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))


async def test_the_next_call_after_every_connection_is_killed_succeeds(
    server_provider: tuple[Provider, URL],
) -> None:
    storage, url = server_provider
    await storage.set("ns", "before", {"v": 1})
    conversation_id, message_id = await _thread(storage)
    await asyncio.gather(*(storage.get("ns", "before") for _ in range(5)))  # fill the pool
    assert await _kill_connections(url) >= 1
    assert await storage.get("ns", "before") == {"v": 1}
    await storage.set("ns", "after", {"v": 2})
    assert await storage.get("ns", "after") == {"v": 2}
    # A transaction (two statements on MySQL) after the kill too.
    assert await _kill_connections(url) >= 1
    await storage.append_tool_block(
        message_id,
        tool_call_id="toolu_after_kill",
        tool_name="t",
        tool_input={},
        tool_output="",
        is_error=False,
    )
    assert await storage.get_tool_call("toolu_after_kill") is not None
    # Several calls at once after a kill: every pooled connection was dead.
    await asyncio.gather(*(storage.get("ns", "before") for _ in range(5)))
    assert await _kill_connections(url) >= 1
    results = await asyncio.gather(*(storage.get("ns", "before") for _ in range(8)))
    assert results == [{"v": 1}] * 8
    assert await storage.get_message_blocks(conversation_id) != []


async def _thread(storage: Provider) -> tuple[int, int]:
    conversation_id = await storage.get_or_create_conversation("bot", "C1", "1.1")
    message_id = await storage.create_message(conversation_id, "U1", "Ann", "ann")
    return conversation_id, message_id


async def test_a_call_in_flight_when_its_connection_dies_fails_clearly_and_writes_nothing(
    server_provider: tuple[Provider, URL],
) -> None:
    storage, url = server_provider
    conversation_id, message_id = await _thread(storage)
    engine = create_async_engine(admin_url(url))
    try:
        async with engine.connect() as locker:
            # Hold the tool-call table, so the call below waits in flight on the server.
            await _lock_table(locker, "agents_tool_calls")
            call = asyncio.create_task(
                storage.append_tool_block(
                    message_id,
                    tool_call_id="toolu_1",
                    tool_name="t",
                    tool_input={},
                    tool_output="",
                    is_error=False,
                )
            )
            waiting = await _seen(
                lambda: _session_waiting_on_a_lock(url), "the call waiting on the lock"
            )
            await _kill(url, waiting)
            with pytest.raises(ConnectionLostError, match="took effect entirely or not at all"):
                await call
            await locker.rollback()
    finally:
        await engine.dispose()
    assert await storage.get_message_blocks(conversation_id) == [(message_id, [])]
    assert await storage.get_tool_call("toolu_1") is None
    await storage.append_text_block(message_id, "still works")
    [(_, [block])] = await storage.get_message_blocks(conversation_id)
    assert block["content"] == {"text": "still works"}


async def test_a_failure_inside_a_multi_statement_method_leaves_nothing(
    provider: Provider,
) -> None:
    """The tool call row fails to bind after the block row was sent (on dialects where
    they are two statements): the transaction takes the block back."""
    conversation_id = await provider.get_or_create_conversation("bot", "C1", "1.1")
    message_id = await provider.create_message(conversation_id, "U1", "Ann", "ann")
    with pytest.raises(TypeError, match="cannot store value"):
        await provider.append_tool_block(
            message_id,
            tool_call_id="toolu_1",
            tool_name="t",
            tool_input={"not json": {1, 2}},
            tool_output="",
            is_error=False,
        )
    assert await provider.get_message_blocks(conversation_id) == [(message_id, [])]
    assert await provider.get_tool_call("toolu_1") is None
    await provider.append_text_block(message_id, "next call works")
    [(_, [block])] = await provider.get_message_blocks(conversation_id)
    assert block["content"] == {"text": "next call works"}


async def test_close_then_call_is_a_clear_error_and_close_twice_is_harmless(
    fresh_url: str, provider_options: dict[str, Any]
) -> None:
    storage = Provider(url=fresh_url, **provider_options)
    await storage.initialize()
    await storage.initialize()
    await storage.close()
    await storage.close()
    with pytest.raises(ProviderClosedError, match="initialize"):
        await storage.get("ns", "k")


@pytest.mark.skipif(os.name != "posix", reason="needs a closed local port")
async def test_an_unreachable_server_is_a_clear_error() -> None:
    storage = Provider(url="postgresql://nobody@127.0.0.1:9/none")
    with pytest.raises((ConnectionLostError, OSError)):
        await storage.initialize()


async def test_calls_timed_out_on_a_lock_held_by_another_process_leave_the_provider_working(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agents.db"
    async with opened_provider(f"sqlite+aiosqlite:///{path}") as storage:
        conversation_id, message_id = await _thread(storage)
        await storage.set("ns", "k", {"v": 1})
        async with lock_held_elsewhere(path):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(storage.set("ns", "k", {"v": 2}), 0.3)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    storage.append_tool_block(
                        message_id,
                        tool_call_id="toolu_1",
                        tool_name="t",
                        tool_input={"q": 1},
                        tool_output="out",
                        is_error=False,
                    ),
                    0.3,
                )
        # The calls that timed out may have gone through once the lock was free: whole.
        assert await storage.get("ns", "k") in ({"v": 1}, {"v": 2})
        [(_, blocks)] = await storage.get_message_blocks(conversation_id)
        call = await storage.get_tool_call("toolu_1")
        assert (call is None) == (blocks == [])
        await storage.set("ns", "k", {"v": 3})
        assert await storage.get("ns", "k") == {"v": 3}


async def test_a_connection_cut_before_it_goes_back_is_a_lost_connection_or_nothing(
    server_url: URL, provider_options: dict[str, Any]
) -> None:
    """Cut between its last statement and its return to the pool, whose reset then fails on
    the dead socket (as when a Galera node dies): `ConnectionLostError` as for any lost
    session, or nothing when the pool just discards it, never the driver's own error; the
    next call works."""
    url = server_url
    assert url.port is not None
    async with tcp_proxy(url.host or "127.0.0.1", url.port) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        async with opened_provider(through, **provider_options) as storage:
            try:
                async with storage.db.statement() as conn:
                    await conn.execute(text("SELECT 1"))
                    proxy.silence()
                    proxy.resume()
                    await asyncio.sleep(0.2)  # the event loop reads the cut sockets' ends
            except ConnectionLostError as error:
                print(f"on release: {error}")
            await storage.set("after", "cut", {"v": 1})
            assert await storage.get("after", "cut") == {"v": 1}


@pytest.mark.parametrize(
    ("driver_error", "dialect"),
    [
        (asyncmy_errors.OperationalError(2013, "Lost connection to MySQL server"), "mysql"),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), "postgresql"),
    ],
    ids=["asyncmy", "asyncpg"],
)
def test_a_driver_error_sqlalchemy_did_not_wrap_follows_the_same_contract(
    driver_error: BaseException, dialect: str
) -> None:
    """The pool's reset on release can raise the driver's own error, outside SQLAlchemy's
    wrapping: a lost session there is `ConnectionLostError` too, never the raw error."""
    assert isinstance(driver_error, Exception)
    assert isinstance(engine_error(driver_error, backend_for(dialect)), ConnectionLostError)
