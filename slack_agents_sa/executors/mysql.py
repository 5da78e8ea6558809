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
from slack_agents_sa.executors.errors import fault_of
from slack_agents_sa.executors.lanes import Lanes
from slack_agents_sa.executors.packets import packet_too_large, statement_size, utf8_size
from slack_agents_sa.executors.statement_cache import StatementCache


class _NoInsertedId(RuntimeError):
    """The server reported no id for an INSERT (raised after a complete round trip)."""


class _MissingResult(RuntimeError):
    """A multi-statement packet's answer ended early (raised before COMMIT was read)."""


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
        self._rules = rules
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
        if any(callable(step.values) for step in steps):
            return await self._steps_in_turn(steps)
        return await self._steps_in_one_packet(steps)

    async def _steps_in_turn(self, steps: Sequence[Step]) -> list[int | None]:
        """A round trip per statement: a step's values wait for the id the one before it
        inserted."""
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

    async def _steps_in_one_packet(self, steps: Sequence[Step]) -> list[int | None]:
        """BEGIN, the statements and COMMIT sent as one multi-statement packet (asyncmy
        always connects with CLIENT_MULTI_STATEMENTS): one round trip for the transaction.

        Each statement is the text asyncmy's `execute` would send (its own `mogrify`, the
        same escaping). The server stops at the first statement that fails, leaving the
        transaction open, so a failure reads as it would alone and is rolled back. Once
        sent, the packet's transaction is the server's to end, whatever becomes of the lane
        (cancelled, killed): committed or rolled back, never half.
        """
        values = [step.values_after(None) for step in steps]
        compiled = [
            self._statements.get(step.stmt, v).arguments(v)
            for step, v in zip(steps, values, strict=True)
        ]
        ids: list[int | None] = []
        async with self._lanes.lane("BEGIN") as lane:
            driver = lane.driver
            cursor = driver.cursor()
            texts = [cursor.mogrify(sql, arguments) for sql, arguments in compiled]
            packet = ";\n".join(["BEGIN", *texts, "COMMIT"])
            limit = self._packet_limits.get(driver)
            # The text as sent: escaping doubles quotes and backslashes.
            sent = utf8_size(packet, "surrogateescape")
            if limit is not None and (too_large := packet_too_large(sent, limit)):
                raise too_large
            try:
                await cursor.execute(packet)
                for step, (sql, _) in zip(steps, compiled, strict=True):
                    lane.sql = sql
                    await _next_result(cursor)
                    ids.append(await _reported_id(cursor) if step.returns_id else None)
                lane.sql = "COMMIT"
                await _next_result(cursor)
            except Exception as error:
                if fault_of(error, self._rules) is None:
                    # Ours, between two of the server's answers: a ROLLBACK now would first
                    # read the answers left, COMMIT's included. Dropping the connection
                    # leaves the outcome to the server (a lost connection, to the caller).
                    driver.close()
                else:
                    await _roll_back(driver)  # the server stopped at that statement
                raise
        # Read only once COMMIT's answer is in: the packet held it, so an id missing here
        # cannot take the rows back (and no server leaves one out).
        if any(step.returns_id and id_ is None for step, id_ in zip(steps, ids, strict=True)):
            raise _NoInsertedId("the database wrote the rows but did not report an id")
        return ids

    def refuse(self) -> None:
        self._lanes.refuse()

    async def close(self) -> None:
        await self._lanes.close()
        await self._engine.dispose()


async def _inserted_id(cursor: Any) -> int:
    reported = await _reported_id(cursor)
    if reported is None:
        raise _NoInsertedId("the database did not report the inserted row's id")
    return reported


async def _reported_id(cursor: Any) -> int | None:
    """The id an INSERT or upsert reports: its RETURNING row where the dialect compiled
    one, else lastrowid (our MySQL upsert sets `id = LAST_INSERT_ID(id)`, so an existing
    row reports its own id; 0 means none)."""
    if cursor.description:
        rows = await cursor.fetchall()
        if rows and rows[0][0] is not None:
            return int(rows[0][0])
    elif cursor.lastrowid:
        return int(cursor.lastrowid)
    return None


async def _next_result(cursor: Any) -> None:
    """Read the next statement's result of a multi-statement packet (its error, if any)."""
    if not await cursor.nextset():
        raise _MissingResult("the server answered fewer statements than the packet held")


async def _roll_back(driver: Any) -> None:
    """End a failed transaction; if that fails too, close the connection, so that the lane
    is discarded (the backend then sees it closed) rather than reused mid-transaction."""
    if not driver.connected:
        return
    try:
        await driver.rollback()
    except Exception:
        driver.close()
