"""Lanes: a few driver connections held open for the provider's calls, one call at a time.

A lane is a connection from a pool-less sibling of the provider's engine, so everything
the URL and options say (SSL, `connect_args`, multi-host failover, server settings, the
codecs SQLAlchemy installs, the backend's connect hooks) applies, and nothing in
SQLAlchemy's pool is taken from host sessions, migrations or the CLI. Unlike a pool, a lane
is not reset between calls: that reset round trip is most of what the asyncpg pool costs.
The pool options still hold (`LanePolicy`): size, how long a call waits for a lane,
recycling, pre-ping.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from slack_agents_sa.errors import ConnectionLostError, PoolTimeoutError, ProviderClosedError
from slack_agents_sa.executors.base import DatabaseRules, Fault, LanePolicy
from slack_agents_sa.executors.errors import fault_of, is_lost_on_connect, raise_translated


@dataclass(slots=True, eq=False)
class Lane:
    """One held connection: SQLAlchemy's handle (to invalidate it) and the driver's."""

    conn: AsyncConnection
    driver: Any
    #: When it connected (`time.monotonic()`), for `pool_recycle`.
    opened: float = field(default_factory=time.monotonic)
    #: The statement running, which an error names (a transaction sets it step by step).
    sql: str = ""
    #: Order of opening: of the free lanes, the lowest rank serves next (`_FreeSlots`).
    rank: int = 0


class _FreeSlots:
    """The free slots: open lanes oldest first, then slots with no lane open (None).

    Calls one after another, as after a burst of concurrent ones, keep to the same lane,
    whose prepared statements (asyncpg's cache) and cached plans (PostgreSQL switches a
    prepared statement to its generic plan after five custom ones, per session) are warm:
    a LIFO stack handed them whichever lane the burst freed last, cold for the statement.
    A slot with no lane is taken only when no open lane is free.
    """

    def __init__(self) -> None:
        self._queue: asyncio.PriorityQueue[tuple[float, int, Lane | None]] = asyncio.PriorityQueue()
        self._puts = 0  # a tie-breaker, so that tokens are never compared

    def put_nowait(self, token: Lane | None) -> None:
        self._puts += 1
        rank = math.inf if token is None else token.rank
        self._queue.put_nowait((rank, self._puts, token))

    def get_nowait(self) -> Lane | None:
        return self._queue.get_nowait()[2]

    async def get(self) -> Lane | None:
        return (await self._queue.get())[2]

    def qsize(self) -> int:
        return self._queue.qsize()


class Lanes:
    """Up to `policy.size` lanes, opened on first need, each serving one call at a time.

    A call's error is judged by the database's rules and raised as `executors.errors` says.
    A lane whose session ended, or whose call was interrupted (cancelled mid-protocol), is
    closed and its slot reopened with a new connection on next use, never reused. Every
    slot taken is given back whatever happens, cancellation included.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        rules: DatabaseRules,
        policy: LanePolicy,
        set_up: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        self._engine = engine
        self._rules = rules
        self._policy = policy
        self._set_up = set_up
        # None stands for a slot with no lane open; the oldest free lane serves next.
        self._free = _FreeSlots()
        for _ in range(policy.size):
            self._free.put_nowait(None)
        self._open: set[Lane] = set()
        self._opened = 0  # lanes opened so far: the next one's rank
        # Invalidations started where nothing may wait for them (see `_forget`).
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    @asynccontextmanager
    async def lane(self, sql: str) -> AsyncIterator[Lane]:
        """A lane for one call running `sql`, given back (or replaced) when the call ends."""
        lane = await self._take()
        lane.sql = sql
        try:
            yield lane
        except Exception as error:
            fault = fault_of(error, self._rules)
            if fault is Fault.SESSION_ENDED or self._rules.driver_says_closed(lane.driver):
                self._forget(lane)
                self._free.put_nowait(None)
                fault = Fault.SESSION_ENDED
            else:
                self._free.put_nowait(lane)
            raise_translated(error, fault, lane.sql)
        except BaseException:
            # Cancelled mid-call: the driver may be mid-protocol; nobody may reuse it.
            self._forget(lane)
            self._free.put_nowait(None)
            raise
        self._free.put_nowait(lane)

    def refuse(self) -> None:
        """Refuse every call from now on, those waiting for a lane included (each is refused
        as it wakes, opening nothing); calls holding a lane run to their end."""
        self._closed = True

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise ProviderClosedError("the provider is closed: its connections are gone")

    async def _take(self) -> Lane:
        self._refuse_if_closed()
        if self._free.qsize():  # a slot is free: no wait, so no timer (the hot path)
            token = self._free.get_nowait()
        else:
            token = await self._wait_for_slot()
        lane = token
        try:
            if lane is not None and not await self._still_good(lane):
                self._forget(lane)
                lane = None
            if lane is None:
                lane = await self._connect()
        except BaseException:
            if lane is not None:
                self._forget(lane)
            self._free.put_nowait(None)
            raise
        return lane

    async def _wait_for_slot(self) -> Lane | None:
        """The next slot freed, within `pool_timeout`; refused if the provider closed
        meanwhile (then it runs nothing and opens no connection)."""
        try:
            async with asyncio.timeout(self._policy.timeout):
                token = await self._free.get()
        except TimeoutError:
            raise PoolTimeoutError(
                f"no connection came free within option `pool_timeout` "
                f"({self._policy.timeout:g} s): all {self._policy.size} are busy with other "
                "calls; raise `pool_size` or `pool_timeout`"
            ) from None
        if self._closed:
            self._free.put_nowait(token)
            self._refuse_if_closed()
        return token

    async def _still_good(self, lane: Lane) -> bool:
        """What a pool checks at checkout: closed by the server while idle (asked of the
        driver, no round trip), past `pool_recycle`, and with `pool_pre_ping` a ping."""
        if self._rules.driver_says_closed(lane.driver):
            return False
        recycle = self._policy.recycle
        if recycle >= 0 and time.monotonic() - lane.opened > recycle:
            return False
        if self._policy.pre_ping:
            try:
                await self._rules.ping(lane.driver)
            except Exception:
                return False
        return True

    async def _connect(self) -> Lane:
        try:
            conn = await self._engine.connect()
        except Exception as error:
            # SQLAlchemy's verdict counts too: a server refusing to start a session (57P03,
            # shutting down) is a disconnect to it, and no plain SQL error.
            if is_lost_on_connect(error, self._rules):
                raise ConnectionLostError(f"cannot reach the database: {error}") from error
            raise
        try:
            driver = (await conn.get_raw_connection()).driver_connection
            if self._set_up is not None:
                try:
                    await self._set_up(driver)
                except Exception as error:
                    raise_translated(error, fault_of(error, self._rules), "")
        except BaseException:
            self._invalidate_later(conn)
            raise
        self._opened += 1
        lane = Lane(conn, driver, rank=self._opened)
        self._open.add(lane)
        return lane

    def _forget(self, lane: Lane) -> None:
        """Close a lane nobody may use again, without waiting (safe in any `except`)."""
        self._open.discard(lane)
        self._invalidate_later(lane.conn)

    def _invalidate_later(self, conn: AsyncConnection) -> None:
        task = asyncio.ensure_future(_quietly(conn.invalidate()))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every lane (callers have settled: see `Database.dispose`)."""
        self.refuse()
        lanes, self._open = self._open, set()
        for lane in lanes:
            # Not back to any pool: a lane's session state (autocommit on MySQL) is ours.
            self._invalidate_later(lane.conn)
        while self._closing:
            await asyncio.wait(set(self._closing))


async def _quietly(closing: Awaitable[None]) -> None:
    """Close a connection that is gone either way: its own error changes nothing."""
    with contextlib.suppress(Exception):  # the connection is discarded whatever it says
        await closing
