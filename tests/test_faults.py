"""Faults: dropped connections, failures inside a method, calls on a closed provider."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.errors import ConnectionLostError, ProviderClosedError
from tests.databases import POSTGRES


@pytest.fixture
def postgres_url(server_databases: dict[Any, URL]) -> URL:
    """The run's scratch PostgreSQL database (made outside the event loop)."""
    return server_databases[POSTGRES]


@pytest.fixture
async def postgres_provider(postgres_url: URL) -> AsyncIterator[tuple[Provider, URL]]:
    url = postgres_url
    storage = Provider(url=url.render_as_string(hide_password=False))
    await storage.initialize()
    try:
        yield storage, url
    finally:
        await storage.close()


async def _admin(url: URL, statement: str, **params: Any) -> list[Any]:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(statement), params)).all())
    finally:
        await engine.dispose()


async def _kill_connections(url: URL) -> int:
    """pg_terminate_backend every other session on the database (what a restart does)."""
    killed = await _admin(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = :database AND pid <> pg_backend_pid()",
        database=url.database,
    )
    await asyncio.sleep(0.2)  # let the clients see their sockets close
    return len(killed)


async def test_the_next_call_after_every_connection_is_killed_succeeds(
    postgres_provider: tuple[Provider, URL],
) -> None:
    storage, url = postgres_provider
    await storage.set("ns", "before", {"v": 1})
    await asyncio.gather(*(storage.get("ns", "before") for _ in range(5)))  # fill the pool
    assert await _kill_connections(url) >= 1
    assert await storage.get("ns", "before") == {"v": 1}
    await storage.set("ns", "after", {"v": 2})
    assert await storage.get("ns", "after") == {"v": 2}


async def test_a_call_in_flight_when_its_connection_dies_fails_clearly_and_writes_nothing(
    postgres_provider: tuple[Provider, URL],
) -> None:
    storage, url = postgres_provider
    conversation_id = await storage.get_or_create_conversation("bot", "C1", "1.1")
    message_id = await storage.create_message(conversation_id, "U1", "Ann", "ann")
    engine = create_async_engine(url)
    try:
        async with engine.connect() as locker:
            # Hold the tool-call table, so the call below waits in flight on the server.
            await locker.execute(text("LOCK TABLE agents_tool_calls IN ACCESS EXCLUSIVE MODE"))
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
            for _ in range(100):
                waiting = await _admin(
                    url,
                    "SELECT pid FROM pg_stat_activity WHERE datname = :database "
                    "AND wait_event_type = 'Lock'",
                    database=url.database,
                )
                if waiting:
                    break
                await asyncio.sleep(0.05)
            assert waiting, "the call never reached the server"
            await _admin(url, "SELECT pg_terminate_backend(:pid)", pid=waiting[0][0])
            with pytest.raises(ConnectionLostError, match="took effect entirely or not at all"):
                await call
            await locker.rollback()
    finally:
        await engine.dispose()
    assert await storage.get_message_blocks(conversation_id) == [(message_id, [])]
    assert await storage.get_tool_call("toolu_1") is None
    await storage.append_text_block(message_id, "still works")


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
    fresh_url: str,
) -> None:
    storage = Provider(url=fresh_url)
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
