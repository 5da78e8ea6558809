"""Lanes: a few driver connections held open for the provider's calls, one call at a time.

A lane is a connection from a pool-less sibling of the provider's engine, so everything
the URL and options say (SSL, `connect_args`, multi-host failover, server settings, the
codecs SQLAlchemy installs) applies, and nothing in SQLAlchemy's pool is taken from host
sessions, migrations or the CLI. Unlike a pool, a lane is never reset between calls: that
reset round trip is most of what the asyncpg pool costs (issue 11's measurements).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from slack_agents_sa.errors import ConnectionLostError
from slack_agents_sa.executors.base import lost_connection_message


@dataclass(slots=True, eq=False)
class Lane:
    """One held connection: SQLAlchemy's handle (to invalidate it) and the driver's."""

    conn: AsyncConnection
    driver: Any
    #: The statement running, which an error names (a transaction sets it step by step).
    sql: str = ""


class Lanes:
    """Up to `size` lanes, opened on first need, each serving one call at a time.

    A call's driver error becomes the SQLAlchemy error SQLAlchemy's path raises
    (`translate`, given the error and the lane's `sql`). A lane whose call failed in a way
    that may have left the connection mid-protocol (connection closed, client-side failure,
    anything not a plain SQL error from the server) is closed and replaced by a new
    connection on next use, never reused.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        size: int,
        keeps_connection: Callable[[BaseException, Any], bool],
        translate: Callable[[Exception, str], Exception],
        set_up: Callable[[Any], Any] | None = None,
        is_closed: Callable[[Any], bool] | None = None,
    ) -> None:
        self._engine = engine
        self._keeps_connection = keeps_connection
        self._translate = translate
        self._is_closed = is_closed
        self._set_up = set_up
        # None stands for a lane not opened yet; LIFO, so the warmest lane serves next.
        self._free: asyncio.LifoQueue[Lane | None] = asyncio.LifoQueue()
        for _ in range(size):
            self._free.put_nowait(None)
        self._open: set[Lane] = set()
        self._closed = False

    @asynccontextmanager
    async def lane(self, sql: str) -> AsyncIterator[Lane]:
        """A lane for one call running `sql`; its errors translated, and those that break
        a connection become ConnectionLostError."""
        lane = await self._take()
        lane.sql = sql
        try:
            yield lane
        except Exception as error:
            translated = self._translate(error, lane.sql)
            if self._keeps_connection(translated, lane.driver):
                self._free.put_nowait(lane)
                if translated is error:
                    raise
                raise translated from error
            await self._discard(lane)
            raise ConnectionLostError(lost_connection_message(error)) from error
        except BaseException:
            await self._discard(lane)
            raise
        self._free.put_nowait(lane)

    async def _take(self) -> Lane:
        if self._closed:
            raise ConnectionLostError("the provider's connections are closed")
        lane = await self._free.get()
        if lane is not None:
            if self._is_closed is None or not self._is_closed(lane.driver):
                return lane
            # Closed by the server while idle (a restart, a KILL, an idle timeout): what a
            # pool's checkout check does, without a round trip where the driver knows.
            self._open.discard(lane)
            with suppress(Exception):  # it is gone either way; the token must not be lost
                await asyncio.shield(lane.conn.invalidate())
        try:
            conn = await self._engine.connect()
        except BaseException as error:
            self._free.put_nowait(None)
            # SQLAlchemy's verdict first: a server refusing to start a session (57P03, shutting
            # down) is a disconnect to it, and no plain SQL error of the driver's.
            if isinstance(error, Exception) and (
                getattr(error, "connection_invalidated", False)
                or not self._keeps_connection(error, None)
            ):
                raise ConnectionLostError(f"cannot reach the database: {error}") from error
            raise
        try:
            driver = (await conn.get_raw_connection()).driver_connection
            if self._set_up is not None:
                await self._set_up(driver)
        except BaseException:
            await conn.invalidate()
            self._free.put_nowait(None)
            raise
        lane = Lane(conn, driver)
        self._open.add(lane)
        return lane

    async def _discard(self, lane: Lane) -> None:
        self._open.discard(lane)
        try:
            await asyncio.shield(lane.conn.invalidate())
        finally:
            self._free.put_nowait(None)

    async def close(self) -> None:
        """Close every lane (callers have settled: see `Database.dispose`)."""
        self._closed = True
        lanes, self._open = self._open, set()
        for lane in lanes:
            # Not back to any pool: a lane's session state (autocommit on MySQL) is ours.
            await lane.conn.invalidate()
