"""MySQL/MariaDB's native executor: compiled statements run on asyncmy lanes.

A lane is put in autocommit once, so a call is one round trip: SQLAlchemy's pool sets and
resets autocommit at every checkout (~3 extra round trips: 988 µs against 151 µs for a
`get`, issue 11). Values are inlined by asyncmy as on SQLAlchemy's path (same driver, same
connect arguments, same bind processors), so both paths send the same text.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ClauseElement
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_agents_sa.executors.base import DatabaseRules, LanePolicy, Step, Values
from slack_agents_sa.executors.lanes import Lanes
from slack_agents_sa.executors.packets import packet_too_large, statement_size
from slack_agents_sa.executors.statement_cache import StatementCache


class _NoInsertedId(RuntimeError):
    """The server reported no id for an INSERT (raised after a complete round trip)."""


class MySQLExecutor:
    """`fetch` / `write` / `insert_id` / `steps` on asyncmy lanes in autocommit."""

    kind = "native"

    def __init__(
        self,
        lane_engine: AsyncEngine,
        statements: StatementCache,
        rules: DatabaseRules,
        policy: LanePolicy,
    ) -> None:
        self._statements = statements
        self._engine = lane_engine
        # Each lane's max_allowed_packet (the server's value when the lane connected).
        self._packet_limits: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._lanes = Lanes(lane_engine, rules, policy, self._set_up)

    async def _set_up(self, driver: Any) -> None:
        # Lanes never go back to a pool (`Lanes.close` invalidates), so this session state
        # is ours: every statement commits by itself, transactions BEGIN explicitly.
        await driver.autocommit(True)
        cursor = driver.cursor()
        await cursor.execute("SELECT @@max_allowed_packet")
        self._packet_limits[driver] = int((await cursor.fetchone())[0])

    async def open(self) -> None:
        return None

    async def _execute(self, driver: Any, sql: str, arguments: list[Any]) -> Any:
        """Run one statement on a lane's driver; the cursor, its rows read.

        Refuses a statement larger than max_allowed_packet before sending anything, as
        `MySQL.install_connection_hooks` does on SQLAlchemy's path (the server would drop
        the connection with "server has gone away").
        """
        limit = self._packet_limits.get(driver)
        if limit is not None:
            size = statement_size(sql, arguments)
            if (too_large := packet_too_large(size, limit)) is not None:
                raise too_large
        cursor = driver.cursor()
        # Always with arguments, even none: the compiled text escapes `%` as `%%`.
        await cursor.execute(sql, arguments)
        return cursor

    async def fetch(self, stmt: ClauseElement, values: Values) -> list[Any]:
        compiled = self._statements.get(stmt, values)
        sql, arguments = compiled.arguments(values)
        async with self._lanes.lane(sql) as lane:
            cursor = await self._execute(lane.driver, sql, arguments)
            raw = await cursor.fetchall()
        if not compiled.knows_result_types:
            # Once per statement: the type codes SQLAlchemy reads from cursor.description.
            description = cursor.description
            compiled.learn_types([c[1] for c in description] if description else None)
        return compiled.rows(raw)

    async def write(self, stmt: ClauseElement, values: Values) -> int:
        sql, arguments = self._statements.get(stmt, values).arguments(values)
        async with self._lanes.lane(sql) as lane:
            cursor = await self._execute(lane.driver, sql, arguments)
        return int(cursor.rowcount)

    async def insert_id(self, stmt: ClauseElement, values: Values) -> int:
        sql, arguments = self._statements.get(stmt, values).arguments(values)
        async with self._lanes.lane(sql) as lane:
            return await _inserted_id(await self._execute(lane.driver, sql, arguments))

    async def steps(self, steps: Sequence[Step]) -> list[int | None]:
        ids: list[int | None] = []
        previous: int | None = None
        async with self._lanes.lane("BEGIN") as lane:
            driver = lane.driver
            try:
                await driver.begin()
                for step in steps:
                    values = step.values_after(previous)
                    sql, arguments = self._statements.get(step.stmt, values).arguments(values)
                    lane.sql = sql
                    cursor = await self._execute(driver, sql, arguments)
                    if step.returns_id:
                        previous = await _inserted_id(cursor)
                        ids.append(previous)
                    else:
                        ids.append(None)
                lane.sql = "COMMIT"
                await driver.commit()
            except Exception:
                await _roll_back(driver)
                raise
        return ids

    def refuse(self) -> None:
        self._lanes.refuse()

    async def close(self) -> None:
        await self._lanes.close()
        await self._engine.dispose()


async def _inserted_id(cursor: Any) -> int:
    """The id an INSERT or upsert reports: its RETURNING row where the dialect compiled
    one, else lastrowid (our MySQL upsert sets `id = LAST_INSERT_ID(id)`, so an existing
    row reports its own id; 0 means none)."""
    if cursor.description:
        rows = await cursor.fetchall()
        if rows and rows[0][0] is not None:
            return int(rows[0][0])
    elif cursor.lastrowid:
        return int(cursor.lastrowid)
    raise _NoInsertedId("the database did not report the inserted row's id")


async def _roll_back(driver: Any) -> None:
    """End a failed transaction; if that fails too, close the connection, so that the lane
    is discarded (the backend then sees it closed) rather than reused mid-transaction."""
    if not driver.connected:
        return
    try:
        await driver.rollback()
    except Exception:
        driver.close()
