"""Cancellation at every await point: each public method, cancelled after k event-loop turns.

Each call (and start-up) first runs uncancelled, counting the loop turns it takes. Then it
runs again, cancelled after k turns, for k = 1, 2, ... over that range (`_points`: each turn
at first, then a step), until an attempt completes before the cancel lands. The loop keeps
turning while a statement runs in a worker thread or on a server, so the count grows with
how busy the machine is: it only sets the range of points tried, never a bound a test fails
on. A test fails on a broken invariant, or on a hang: an attempt not done within HANG_S
seconds. After every attempt: a cancelled caller saw CancelledError, the next call on the
same provider works, no pooled connection is left checked out, and what the call was
writing is whole or absent, never half (checked per method).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from slack_agents_sa import Provider
from slack_agents_sa.models import Block, ToolCall
from tests.samples import CLIENT, TOKEN

#: An attempt (a call, cancelled or not, and the checks after it) not done after this many
#: seconds is hung: the test fails saying so. Generous: a busy machine is slow, not hung.
HANG_S = 120
#: Cancellation points tried one by one at the start of a call or start-up (loop turns).
FIRST_POINTS = 20
#: Past those, a call is cancelled after each turn, at most this many more times: a call
#: takes some tens of turns on an idle machine, so there every turn is tried.
CALL_POINTS = 200
#: Past those, a start-up is cancelled after every 7th turn (a migration takes thousands),
#: at most this many more times: spread wider when it took over about 5,000 turns (a busy
#: machine), it costs about what it did when 5,000 turns were the limit.
STARTUP_EVERY = 7
STARTUP_POINTS = 700


@dataclass
class Scene:
    """What the calls under test work on: one conversation with one message."""

    conversation_id: int
    message_id: int


Call = Callable[[Provider, Scene, int], Awaitable[Any]]
#: Checks, after attempt k (cancelled or not), that the call's write is whole or absent.
Check = Callable[[Provider, Scene, int], Awaitable[None]]


async def _no_check(_provider: Provider, _scene: Scene, _k: int) -> None:
    return None


async def _set_is_whole(provider: Provider, _scene: Scene, k: int) -> None:
    value = await provider.get("kv", "key")
    assert value is None or value == {"k": value["k"], "blob": "x" * 2000}
    assert value is None or value["k"] <= k


async def _append_is_whole(provider: Provider, _scene: Scene, k: int) -> None:
    items = await provider.get_list("kv", "list")
    assert all(item == {"k": item["k"], "blob": "y" * 2000, "id": item["id"]} for item in items)
    # The scene's item, then at most one per attempt 0..k.
    assert len({item["k"] for item in items}) == len(items) <= k + 2


async def _delete_is_whole(provider: Provider, _scene: Scene, _k: int) -> None:
    assert await provider.get("kv", "doomed") in (None, {"v": 1})


async def _conversation_is_single(provider: Provider, _scene: Scene, k: int) -> None:
    exported = await provider.get_conversations_for_export("bot")
    threads = [row["thread_id"] for row in exported]
    assert len(threads) == len(set(threads))
    assert threads.count(f"new-{k}") <= 1


async def _tool_block_is_whole(provider: Provider, scene: Scene, k: int) -> None:
    [(_, blocks)] = await provider.get_message_blocks(scene.conversation_id)
    call_ids = [block["content"]["tool_call_id"] for block in blocks]
    for block in blocks:
        assert block["content"]["tool_name"] == "search"
        assert block["content"]["tool_input"] == {"q": "x" * 500}
    for attempt in range(k + 1):
        call = await provider.get_tool_call(f"toolu_{attempt}")
        assert (call is None) == (f"toolu_{attempt}" not in call_ids)
    assert await _orphan_tool_blocks(provider) == 0


async def _orphan_tool_blocks(provider: Provider) -> int:
    """Tool blocks without their tool call row: the half-write this test hunts for."""
    stmt = (
        select(func.count())
        .select_from(Block)
        .outerjoin(ToolCall, ToolCall.block_id == Block.id)
        .where(Block.block_type == "tool_use", ToolCall.block_id.is_(None))
    )

    async def count(conn: AsyncConnection) -> int:
        return int((await conn.execute(stmt)).scalar_one())

    return await provider.db.run(count)


async def _blocks_are_whole(provider: Provider, scene: Scene, _k: int) -> None:
    [message] = await provider.get_messages_with_blocks(scene.conversation_id)
    for block in message["blocks"]:
        if block["block_type"] == "text":
            assert block["content"] == {"text": "t" * 1000}
        elif block["block_type"] == "file":
            image = {"type": "image", "data": "Zg==" * 500}
            assert block["content"] == {**image, "filename": "f.png", "mimeType": "image/png"}
            assert block["size_bytes"] == 2000
        elif block["block_type"] == "usage":
            assert block["content"]["input_tokens"] == 10


async def _heartbeat_is_whole(provider: Provider, _scene: Scene, k: int) -> None:
    beat = await provider.get_heartbeat("bot")
    assert beat is None or 0 <= beat["last_ping_pong_time"] - 1000.5 <= k


async def _token_is_whole(provider: Provider, _scene: Scene, _k: int) -> None:
    assert await provider.get_oauth_token("U1", "mcp") in (None, TOKEN)
    assert await provider.get_oauth_client("mcp", "https://x/cb") in (None, CLIENT)


async def _usage(provider: Provider, scene: Scene, _k: int) -> None:
    await provider.append_usage_block(
        scene.message_id,
        model="m",
        version="v",
        input_tokens=10,
        output_tokens=5,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
        peak_single_call_input_tokens=10,
        estimated_cost_usd=0.01,
    )


#: name -> (call, check). Every public storage method of the provider appears here.
CALLS: dict[str, tuple[Call, Check]] = {
    "get": (lambda p, s, k: p.get("kv", "key"), _no_check),
    "set": (
        lambda p, s, k: p.set("kv", "key", {"k": k, "blob": "x" * 2000}),
        _set_is_whole,
    ),
    "delete": (lambda p, s, k: p.delete("kv", "doomed"), _delete_is_whole),
    "append": (
        lambda p, s, k: p.append("kv", "list", {"k": k, "blob": "y" * 2000}),
        _append_is_whole,
    ),
    "get_list": (lambda p, s, k: p.get_list("kv", "list"), _no_check),
    "query": (lambda p, s, k: p.query("kv", {"k": 1}), _no_check),
    "get_or_create_conversation": (
        lambda p, s, k: p.get_or_create_conversation("bot", "C1", f"new-{k}", "general"),
        _conversation_is_single,
    ),
    "get_or_create_conversation (existing, renamed)": (
        lambda p, s, k: p.get_or_create_conversation("bot", "C1", "1.1", f"name-{k}"),
        _conversation_is_single,
    ),
    "has_conversation": (lambda p, s, k: p.has_conversation("bot", "C1", "1.1"), _no_check),
    "create_message": (
        lambda p, s, k: p.create_message(s.conversation_id, "U1", "Ann", "ann"),
        _no_check,
    ),
    "append_text_block": (
        lambda p, s, k: p.append_text_block(s.message_id, "t" * 1000),
        _blocks_are_whole,
    ),
    "append_file_block": (
        lambda p, s, k: p.append_file_block(
            s.message_id,
            {"type": "image", "data": "Zg==" * 500},
            is_user=False,
            filename="f.png",
            mimetype="image/png",
            size_bytes=2000,
        ),
        _blocks_are_whole,
    ),
    "append_tool_block": (
        lambda p, s, k: p.append_tool_block(
            s.message_id,
            tool_call_id=f"toolu_{k}",
            tool_name="search",
            tool_input={"q": "x" * 500},
            tool_output="o" * 1000,
            is_error=False,
        ),
        _tool_block_is_whole,
    ),
    "append_usage_block": (_usage, _blocks_are_whole),
    "get_message_blocks": (lambda p, s, k: p.get_message_blocks(s.conversation_id), _no_check),
    "get_tool_call": (lambda p, s, k: p.get_tool_call("toolu_0"), _no_check),
    "upsert_heartbeat": (
        lambda p, s, k: p.upsert_heartbeat("bot", 1000.5 + k),
        _heartbeat_is_whole,
    ),
    "get_heartbeat": (lambda p, s, k: p.get_heartbeat("bot"), _no_check),
    "get_conversations_for_export": (
        lambda p, s, k: p.get_conversations_for_export("bot"),
        _no_check,
    ),
    "get_messages_with_blocks": (
        lambda p, s, k: p.get_messages_with_blocks(s.conversation_id),
        _no_check,
    ),
    "put_oauth_token": (lambda p, s, k: p.put_oauth_token("U1", "mcp", TOKEN), _token_is_whole),
    "get_oauth_token": (lambda p, s, k: p.get_oauth_token("U1", "mcp"), _no_check),
    "delete_oauth_token": (lambda p, s, k: p.delete_oauth_token("U1", "mcp"), _token_is_whole),
    "put_oauth_client": (
        lambda p, s, k: p.put_oauth_client("mcp", "https://x/cb", CLIENT),
        _token_is_whole,
    ),
    "get_oauth_client": (lambda p, s, k: p.get_oauth_client("mcp", "https://x/cb"), _no_check),
    "delete_oauth_client": (
        lambda p, s, k: p.delete_oauth_client("mcp", "https://x/cb"),
        _token_is_whole,
    ),
}


def _checked_out(provider: Provider) -> int:
    """Connections the provider's pool has handed out and not had back."""
    pool = provider.db.engine.pool
    counter = getattr(pool, "checkedout", None)
    return int(counter()) if callable(counter) else 0


@asynccontextmanager
async def _within_hang_limit(what: str) -> AsyncIterator[None]:
    """Fails the test, saying `what` hung, if the block takes longer than HANG_S seconds."""
    limit = asyncio.timeout(HANG_S)
    try:
        async with limit:
            yield
    except TimeoutError:
        if not limit.expired():
            raise
        pytest.fail(f"{what}: hung, not done after {HANG_S} s")


async def _cancel_after(call: Awaitable[Any], turns: int | None) -> int | None:
    """Run `call`, cancelled after `turns` loop turns (None: never); the turns it took if it
    completed first, None if it was cancelled (and raised CancelledError, as it must)."""
    task = asyncio.ensure_future(call)
    try:
        taken = 0
        while not task.done() and (turns is None or taken < turns):
            await asyncio.sleep(0)
            taken += 1
        if task.done():
            await task
            return taken
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.result()  # the call's own error, if it failed
            pytest.fail("the call completed though cancelled: it swallowed its CancelledError")
        return None
    finally:
        task.cancel()  # still running only if the hang limit gave up on it


def _runs_through_the_worker(provider: Provider) -> bool:
    """Whether there were inline connections to close. SQLite's native executor runs a
    short read, and a write no other call waits with, on the loop's own thread while its
    worker is idle: no await point, so nothing to cancel (tests/test_sqlite_inline_reads.py,
    tests/test_sqlite_inline_writes.py). With those connections closed, every call takes
    the worker's path, the one with await points."""
    executor = provider.db._executor
    inline = [getattr(executor, name, None) for name in ("_reader", "_writer")]
    for connection in inline:
        if connection is not None:
            connection.close()
    return any(connection is not None for connection in inline)


def _cancelled_after(turns: int | None) -> str:
    return "not cancelled" if turns is None else f"cancelled after {turns} turns"


def _points(observed: int, every: int, most: int) -> list[int]:
    """The turns to cancel after, for a call that took `observed` turns uncancelled: each of
    the first FIRST_POINTS, then every `every`-th up to `observed`, or fewer (a longer step)
    so that there are at most `most` of those (a busy machine takes more turns, not more
    await points)."""
    first = list(range(1, min(observed, FIRST_POINTS) + 1))
    step = max(every, math.ceil((observed - FIRST_POINTS) / most))
    return first + list(range(FIRST_POINTS + step, observed + step, step))


async def _scene(provider: Provider) -> Scene:
    conversation_id = await provider.get_or_create_conversation("bot", "C1", "1.1", "general")
    message_id = await provider.create_message(conversation_id, "U1", "Ann", "ann")
    await provider.set("kv", "doomed", {"v": 1})
    await provider.append("kv", "list", {"k": -1, "blob": "y" * 2000})
    return Scene(conversation_id, message_id)


@pytest.mark.parametrize("name", list(CALLS))
async def test_a_call_cancelled_at_any_await_point_leaves_the_provider_working(
    provider: Provider, name: str
) -> None:
    call, check = CALLS[name]
    scene = await _scene(provider)
    baseline = _checked_out(provider)

    async def attempt(k: int, cancel_after: int | None) -> int | None:
        """Attempt k, cancelled after `cancel_after` turns; the turns taken if it completed."""
        async with _within_hang_limit(f"{name}, {_cancelled_after(cancel_after)}"):
            taken = await _cancel_after(call(provider, scene, k), cancel_after)
            # The next call on the same provider works, whatever the cancelled one was doing.
            assert await provider.has_conversation("bot", "C1", "1.1")
            await provider.db.settle()
            assert _checked_out(provider) == baseline
            await check(provider, scene, k)
        return taken

    cancelled = 0
    attempts = itertools.count()  # each attempt's own k: a write's value names its attempt
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        observed = await attempt(next(attempts), None)
        assert observed is not None
        if observed <= 1 and _runs_through_the_worker(provider):
            # Done in the task's first turn: run inline, with nothing to cancel. Its
            # other path, the worker's, is the one with await points.
            observed = await attempt(next(attempts), None)
            assert observed is not None
        for turns in _points(observed, every=1, most=CALL_POINTS):
            if await attempt(next(attempts), turns) is not None:
                break
            cancelled += 1
        gc.collect()
    leaks = [str(w.message) for w in caught if "non-checked-in" in str(w.message)]
    assert leaks == []
    assert cancelled >= 1, "the call was never cancelled: the test proved nothing"


async def test_a_cancelled_initialize_leaves_a_provider_that_opens_and_works(
    fresh_url: str, tmp_path: Path, provider_options: dict[str, Any]
) -> None:
    """Start-up cancelled throughout (after each of its first loop turns, then at a step),
    migrating and only checking the schema (a fresh SQLite file each time, so the migration
    itself is cut throughout there): initialize() again works and the provider serves calls."""
    # An in-memory database starts empty, so it can only be migrated, never just checked.
    for migrate in [True] if ":memory:" in fresh_url else [True, False]:
        await _initialize_cancelled_at_every_point(fresh_url, tmp_path, migrate, provider_options)


async def _initialize_cancelled_at_every_point(
    fresh_url: str, tmp_path: Path, migrate: bool, options: dict[str, Any]
) -> None:
    observed = await _start_up(fresh_url, tmp_path, migrate, options, 0, None)
    assert observed is not None
    cancelled = 0
    for k in _points(observed, every=STARTUP_EVERY, most=STARTUP_POINTS):
        if await _start_up(fresh_url, tmp_path, migrate, options, k, k) is not None:
            break
        cancelled += 1
    assert cancelled >= 1, "start-up was never cancelled: the test proved nothing"


async def _start_up(
    fresh_url: str,
    tmp_path: Path,
    migrate: bool,
    options: dict[str, Any],
    k: int,
    cancel_after: int | None,
) -> int | None:
    """Start-up attempt k, cancelled after `cancel_after` turns, then initialize() again and
    a call; the turns the first initialize() took if it completed."""
    url = fresh_url
    if "sqlite" in url and ":memory:" not in url:
        url = f"sqlite+aiosqlite:///{tmp_path / f'agents-{migrate}-{k}.db'}"
    async with _within_hang_limit(
        f"start-up (migrate={migrate}), {_cancelled_after(cancel_after)}"
    ):
        if not migrate:
            await _migrated(url)
        storage = Provider(url=url, migrate=migrate, **options)
        try:
            taken = await _cancel_after(storage.initialize(), cancel_after)
            await storage.initialize()
            await storage.set("ns", "k", {"attempt": k})
            assert await storage.get("ns", "k") == {"attempt": k}
        finally:
            await storage.close()
    return taken


async def _migrated(url: str) -> None:
    storage = Provider(url=url)
    await storage.initialize()
    await storage.close()


async def test_a_cancelled_close_still_closes_every_connection(provider: Provider) -> None:
    await provider.set("ns", "k", {"v": 1})
    engine = provider.db.engine
    task = asyncio.ensure_future(provider.close())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The disposal runs on in a task of its own, unless done already: wait for it to end.
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        async with _within_hang_limit("the disposal after a cancelled close()"):
            await asyncio.wait(others)
    assert _checked_out_of(engine) == 0


def _checked_out_of(engine: Any) -> int:
    counter = getattr(engine.pool, "checkedout", None)
    return int(counter()) if callable(counter) else 0


def test_every_public_storage_method_is_exercised() -> None:
    from slack_agents.storage.base import BaseStorageProvider

    public = {
        name
        for name in dir(BaseStorageProvider)
        if not name.startswith("_")
        and callable(getattr(BaseStorageProvider, name))
        and asyncio.iscoroutinefunction(getattr(BaseStorageProvider, name))
    }
    exercised = {name.split(" ")[0] for name in CALLS} | {"initialize", "close"}
    assert public - exercised == set()


async def test_a_call_that_fails_after_its_caller_was_cancelled_is_logged(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    """No caller is left to see the failure, so the provider logs it."""
    caplog.set_level("WARNING", logger="slack_agents_sa.database")
    call = asyncio.ensure_future(provider.create_message(999, "U1", "Ann", "ann"))
    while not provider.db._calls:  # the call has reached the database
        assert not call.done(), "the call ended before it reached the database"
        await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await provider.db.settle()
    [record] = [r for r in caplog.records if "caller was cancelled" in r.getMessage()]
    assert "IntegrityError" in record.getMessage() or "ValueError" in record.getMessage()
    await provider.set("ns", "k", {"v": 1})  # and the provider works
