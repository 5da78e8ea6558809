"""The pool options on the native executors' lanes, and what `close()` ends.

`pool_size`, `pool_timeout` (`PoolTimeoutError`), `pool_recycle`, `pool_pre_ping`; no slot
lost to a cancelled caller; `close()` refuses every later call (a running prune's next batch,
a call queued for a lane) and leaves no connection. On both servers natively (lanes) and on
SQLAlchemy's path with `max_overflow: 0`; `close()` on SQLite too. Nothing asserts on a
duration: the server is polled up to a generous deadline, under a hang guard.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.errors import PoolTimeoutError, ProviderClosedError
from slack_agents_sa.models import Heartbeat, table_of
from tests.admin import admin_url
from tests.databases import (
    MYSQL,
    POSTGRES,
    SERVER_BACKENDS,
    Backend,
    backend_params,
    empty_all_tables,
    opened_provider,
    scratch_database,
)

#: A test body not done after this many seconds is hung.
HANG_S = 120
#: How long the server may take to show what a test waits for (a session gone, a lock wait).
WAIT_S = 30
#: `pool_recycle` of the recycling tests (the option takes whole seconds).
RECYCLE_S = 1
_heartbeats = table_of(Heartbeat)


def _is_mysql(url: URL) -> bool:
    return url.get_backend_name() in ("mysql", "mariadb")


#: The other client sessions on the test database (`:db`), as each server lists them.
_OTHERS = {
    False: "FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend'",
    True: "FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()",
}


class Server:
    """The server's view of the test database, asked on a connection of our own."""

    def __init__(self, url: URL, conn: AsyncConnection) -> None:
        self.url, self._conn, self._mysql = url, conn, _is_mysql(url)

    async def _ask(self, columns: str, where: str = "") -> list[Any]:
        """`SELECT columns` over the other sessions, narrowed by `where`."""
        statement = f"SELECT {columns} {_OTHERS[self._mysql]} {where}"
        result = await self._conn.execute(text(statement), {"db": self.url.database})
        return [row[0] for row in result.all()]

    async def sessions(self) -> set[int]:
        """Every other session on the test database (the provider's, a locker's)."""
        return {int(s) for s in await self._ask("id" if self._mysql else "pid")}

    async def waiting(self) -> int:
        """How many sessions wait on a lock."""
        where = "AND state LIKE '%lock%'" if self._mysql else "AND wait_event_type = 'Lock'"
        return len(await self._ask("1", where))

    async def busy(self) -> int:
        """How many other sessions are running something (not idle)."""
        where = "AND command <> 'Sleep'" if self._mysql else "AND state <> 'idle'"
        return len(await self._ask("1", where))

    async def ended(self, session: int, what: str) -> None:
        """Returns once `session` is no longer on the server."""
        await self.until(self.sessions, lambda found: session not in found, what)

    async def kill(self, session: int) -> None:
        if self._mysql:
            await self._conn.execute(text(f"KILL {int(session)}"))  # KILL binds nothing
        else:
            await self._conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": session})

    async def until[T](
        self, ask: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str
    ) -> T:
        """`ask()` every 20 ms until `ok` says yes; fails naming `what` after WAIT_S."""
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not ok(found := await ask()):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"never saw {what} on the server in {WAIT_S} s (last: {found!r})")
            await asyncio.sleep(0.02)
        return found

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """agents_heartbeats locked by another session: reads and writes of it wait."""
        table = "TABLES agents_heartbeats WRITE" if self._mysql else "TABLE agents_heartbeats"
        engine = create_async_engine(admin_url(self.url))
        try:
            async with engine.connect() as locker:
                await locker.execute(text(f"LOCK {table}"))  # PostgreSQL: ACCESS EXCLUSIVE
                try:
                    yield
                finally:
                    if self._mysql:
                        await locker.execute(text("UNLOCK TABLES"))
                    await locker.rollback()
        finally:
            await engine.dispose()


@asynccontextmanager
async def _watching(url: URL) -> AsyncIterator[Server]:
    engine = create_async_engine(admin_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            yield Server(url, conn)
    finally:
        await engine.dispose()


@asynccontextmanager
async def _opened(backend: Backend, url: URL, **pool: Any) -> AsyncIterator[Provider]:
    """A provider on `backend` whose pool (lanes, or SQLAlchemy's) is sized by `pool`."""
    options = {**backend.options, "max_overflow": 0, **pool}
    storage = Provider(url=url.render_as_string(hide_password=False), **options)
    await storage.initialize()
    try:
        yield storage
    finally:
        await storage.close()


def _scratch(request: pytest.FixtureRequest, server_databases: dict[Backend, URL]) -> Any:
    url = server_databases[request.param]
    asyncio.run(empty_all_tables(url))
    return request.param, url


#: Each server backend on either path / on its native executor, with its emptied database.
server_db = pytest.fixture(params=backend_params(SERVER_BACKENDS), name="server_db")(_scratch)
native_db = pytest.fixture(params=backend_params([POSTGRES, MYSQL]), name="native_db")(_scratch)


@pytest.fixture(params=backend_params(SERVER_BACKENDS))
async def own_db(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Backend, URL]]:
    """A new database no other client uses, for counting every session on it: the shared
    test databases also hold other clients' sessions (PgBouncer keeps its own open)."""
    async with scratch_database(request.param) as url:
        yield request.param, make_url(url)


def _session_id(url: URL) -> ColumnElement[Any]:
    return func.connection_id() if _is_mysql(url) else func.pg_backend_pid()


async def _session_of(storage: Provider, url: URL) -> int:
    """The server-side id of the connection (lane) that serves the next call."""
    [(session,)] = await storage.db.fetch(select(_session_id(url)))
    return int(session)


async def _every_slot_serves(storage: Provider, server: Server, size: int) -> None:
    """`size` calls at once each reach the server (waiting there on a lock), and no more:
    a call beyond them waits for a slot. Then all of them complete."""
    async with server.locked():
        calls = [
            asyncio.create_task(storage.upsert_heartbeat(f"bot{n}", float(n)))
            for n in range(size + 1)
        ]
        await server.until(server.waiting, lambda n: n >= size, f"{size} calls on the lock")
        await asyncio.sleep(0.2)  # room for one more to show up, if the pool had it
        assert await server.waiting() == size
    await asyncio.gather(*calls)
    for n in range(size + 1):
        assert await storage.get_heartbeat(f"bot{n}") == {"last_ping_pong_time": float(n)}


# --- pool_size: cancelled callers lose no slot ------------------------------------------


async def test_callers_cancelled_while_waiting_for_a_connection_lose_no_slot(
    server_db: tuple[Backend, URL],
) -> None:
    backend, url = server_db
    async with (
        asyncio.timeout(HANG_S),
        _opened(backend, url, pool_size=2) as storage,
        _watching(url) as server,
    ):
        await storage.set("ns", "k", {"v": 1})
        async with server.locked():
            holders = [
                asyncio.create_task(storage.upsert_heartbeat(f"hold{n}", 1.0)) for n in range(2)
            ]
            await server.until(server.waiting, lambda n: n == 2, "both slots on the lock")
            waiters = [asyncio.create_task(storage.get("ns", "k")) for _ in range(6)]
            await asyncio.sleep(0.05)  # every waiter queued for a slot
            for waiter in waiters:
                waiter.cancel()
            for outcome in await asyncio.gather(*waiters, return_exceptions=True):
                assert isinstance(outcome, asyncio.CancelledError), repr(outcome)
        await asyncio.gather(*holders)
        await storage.db.settle()  # the shielded calls of the cancelled callers ran
        await _every_slot_serves(storage, server, 2)


async def test_lanes_survive_tasks_cancelled_waiting_for_or_holding_a_lane(
    native_db: tuple[Backend, URL],
) -> None:
    """Past the provider's shield (the one place this module reaches inside), into the lanes:
    tasks cancelled mid-statement, then waiters cancelled `turns` loop turns later: queued,
    just woken with a slot, or connecting a lane in place of a holder's."""
    backend, url = native_db
    async with (
        asyncio.timeout(HANG_S),
        _opened(backend, url, pool_size=2) as storage,
        _watching(url) as server,
    ):
        executor = storage.db._executor
        read = select(_heartbeats.c.agent_name)
        for turns in (0, 1, 2, 3, 5, 10, 20):
            async with server.locked():
                holders = [asyncio.ensure_future(executor.fetch(read, {})) for _ in range(2)]
                await server.until(server.waiting, lambda n: n == 2, "both lanes on the lock")
                waiters = [asyncio.ensure_future(executor.fetch(read, {})) for _ in range(6)]
                await asyncio.sleep(0.05)  # every waiter queued for a lane
                for task in holders:
                    task.cancel()
                for _ in range(turns):
                    await asyncio.sleep(0)
                for task in waiters:
                    task.cancel()
                outcomes = await asyncio.gather(*holders, *waiters, return_exceptions=True)
                for outcome in outcomes:  # the table is locked: nothing could complete
                    assert isinstance(outcome, asyncio.CancelledError), repr(outcome)
            # The interrupted statements end on the server before the lock is taken again.
            await server.until(server.busy, lambda n: n == 0, "the interrupted calls ending")
        await _every_slot_serves(storage, server, 2)
        assert await storage.get("ns", "missing") is None


# --- pool_timeout ------------------------------------------------------------------------


async def test_a_call_finding_every_connection_busy_past_pool_timeout_raises(
    server_db: tuple[Backend, URL],
) -> None:
    backend, url = server_db
    async with (
        asyncio.timeout(HANG_S),
        _opened(backend, url, pool_size=1, pool_timeout=0.2) as storage,
        _watching(url) as server,
    ):
        await storage.set("ns", "k", {"v": 1})
        async with server.locked():
            holder = asyncio.create_task(storage.upsert_heartbeat("holder", 1.0))
            await server.until(server.waiting, lambda n: n == 1, "the only slot on the lock")
            with pytest.raises(PoolTimeoutError, match="pool_timeout") as raised:
                await storage.get("ns", "k")
            assert isinstance(raised.value, TimeoutError)
            with pytest.raises(PoolTimeoutError, match="pool_timeout"):
                await storage.append("ns", "list", {"n": 1})
        await holder
        assert await storage.get("ns", "k") == {"v": 1}
        assert await storage.get_list("ns", "list") == []  # the refused write sent nothing
        assert await storage.get_heartbeat("holder") == {"last_ping_pong_time": 1.0}
        await storage.set("ns", "k", {"v": 2})
        assert await storage.get("ns", "k") == {"v": 2}


# --- pool_recycle and pool_pre_ping ------------------------------------------------------


async def test_a_connection_older_than_pool_recycle_is_replaced_before_use(
    server_db: tuple[Backend, URL],
) -> None:
    backend, url = server_db
    async with (
        asyncio.timeout(HANG_S),
        _opened(backend, url, pool_size=1, pool_recycle=RECYCLE_S) as storage,
        _watching(url) as server,
    ):
        first = await _session_of(storage, url)
        await asyncio.sleep(RECYCLE_S + 1)
        second = await _session_of(storage, url)
        assert second != first
        await server.ended(first, "the old session closing")
        await storage.set("ns", "k", {"v": 1})
        assert await storage.get("ns", "k") == {"v": 1}


async def test_a_connection_killed_while_idle_is_replaced_with_pool_pre_ping(
    server_db: tuple[Backend, URL],
) -> None:
    backend, url = server_db
    async with (
        asyncio.timeout(HANG_S),
        _opened(backend, url, pool_size=1, pool_pre_ping=True) as storage,
        _watching(url) as server,
    ):
        await storage.set("ns", "k", {"v": 1})
        for _ in range(2):
            killed = await _session_of(storage, url)
            await server.kill(killed)
            await server.ended(killed, "the killed session ending")
            assert await storage.get("ns", "k") == {"v": 1}
            await storage.append("ns", "list", {"n": 1})  # a write too, on the next one
            assert await _session_of(storage, url) != killed
        assert len(await storage.get_list("ns", "list")) == 2


# --- close() -----------------------------------------------------------------------------


async def test_close_refuses_every_later_call_and_leaves_no_connection(
    own_db: tuple[Backend, URL],
) -> None:
    backend, url = own_db
    async with (
        asyncio.timeout(HANG_S),
        _watching(url) as server,
        _opened(backend, url, pool_size=3) as storage,
    ):
        db = storage.db
        await _every_slot_serves(storage, server, 3)  # every lane open
        assert len(await server.sessions()) >= 3
        await storage.close()
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: storage.get("ns", "k"),
            lambda: storage.set("ns", "k", {"v": 1}),
            lambda: db.fetch(select(_session_id(url))),  # one who kept `provider.db`
            lambda: db.execute(select(_session_id(url))),
        ]
        for call in calls:
            with pytest.raises(ProviderClosedError):
                await call()
        await server.until(server.sessions, lambda s: not s, "every connection closed")


async def test_close_with_a_call_in_flight_and_one_queued_for_its_connection(
    own_db: tuple[Backend, URL],
) -> None:
    """The call in flight completes or is refused, close() ends; natively the call queued
    for the lane is refused, and the lane, past `pool_recycle`, is not reconnected."""
    backend, url = own_db
    sleep = func.sleep(0.5) if _is_mysql(url) else func.pg_sleep(0.5)
    async with (
        asyncio.timeout(HANG_S),
        _watching(url) as server,
        _opened(backend, url, pool_size=1, pool_recycle=RECYCLE_S) as storage,
    ):
        db = storage.db

        async def closed() -> bool:
            return db.is_closed

        await storage.set("ns", "k", {"v": 1})
        async with server.locked():
            in_flight = asyncio.create_task(storage.upsert_heartbeat("bot", 1.0))
            await server.until(server.waiting, lambda n: n == 1, "the call on the lock")
            queued = asyncio.create_task(db.fetch(select(sleep)))
            await asyncio.sleep(RECYCLE_S + 0.5)  # the busy lane is now past pool_recycle
            before = await server.sessions()
            closing = asyncio.create_task(storage.close())
            await server.until(closed, bool, "close() under way")
        seen: set[int] = set()
        while not closing.done():
            seen |= await server.sessions()
            await asyncio.sleep(0.02)
        await closing
        first, second = await asyncio.gather(in_flight, queued, return_exceptions=True)
        assert first is None or isinstance(first, ProviderClosedError), repr(first)
        if backend.executor_kind == "native":
            ran = None if isinstance(second, ProviderClosedError) else second
            assert (ran, seen - before) == (None, set()), "(queued call's rows, sessions opened)"
        else:
            assert isinstance(second, list | ProviderClosedError), repr(second)
        with pytest.raises(ProviderClosedError):
            await storage.get("ns", "k")
        await server.until(server.sessions, lambda s: not s, "every connection closed")


async def test_close_stops_a_running_prune_at_its_next_batch(
    fresh_url: str, provider_options: dict[str, Any]
) -> None:
    async with asyncio.timeout(HANG_S), opened_provider(fresh_url, **provider_options) as storage:
        closing: list[asyncio.Task[None]] = []

        def on_batch(_count: int) -> None:
            if not closing:
                closing.append(asyncio.ensure_future(storage.close()))

        for n in range(20):
            await storage.get_or_create_conversation("bot", "C1", f"{n}.1")
        with pytest.raises(ProviderClosedError):
            await storage.prune(
                datetime.now(UTC) + timedelta(days=1), batch_size=1, on_batch=on_batch
            )
        await closing[0]


async def test_calls_in_flight_at_close_complete_or_are_refused_and_later_ones_refused(
    fresh_url: str, provider_options: dict[str, Any]
) -> None:
    async with asyncio.timeout(HANG_S), opened_provider(fresh_url, **provider_options) as storage:
        conversation_id = await storage.get_or_create_conversation("bot", "C1", "1.1")
        message_id = await storage.create_message(conversation_id, "U1", "Ann", "ann")
        calls: list[asyncio.Task[Any]] = [
            asyncio.create_task(storage.set("ns", f"k{n}", {"n": n})) for n in range(6)
        ]
        calls += [asyncio.create_task(storage.append_text_block(message_id, "t")) for _ in range(6)]
        await asyncio.sleep(0)
        closing = asyncio.create_task(storage.close())
        late = [asyncio.create_task(storage.get("ns", "k0")) for _ in range(3)]
        await closing
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            assert not isinstance(outcome, BaseException) or isinstance(
                outcome, ProviderClosedError
            ), repr(outcome)
        for outcome in await asyncio.gather(*late, return_exceptions=True):
            assert isinstance(outcome, ProviderClosedError), repr(outcome)
        with pytest.raises(ProviderClosedError):
            await storage.get_message_blocks(conversation_id)
