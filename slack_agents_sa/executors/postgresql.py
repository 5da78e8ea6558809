"""PostgreSQL's native executor: compiled statements run on asyncpg lanes.

asyncpg prepares each statement once per connection (its own statement cache) and
re-prepares by itself when another session changed the schema outside a transaction
(`InvalidCachedStatementError`). The JSON codecs SQLAlchemy's dialect installs on connect
decode JSON columns, and the dialect's bind processors encode them: both come from the
same engine, so nothing is decoded twice (encode/databases#582).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import ClauseElement, exc
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_agents_sa.executors.base import Step, Values
from slack_agents_sa.executors.compiled import StatementCache
from slack_agents_sa.executors.lanes import Lanes

#: SQLSTATE classes and the SQLAlchemy error each becomes (as the SQLAlchemy path raises).
_ERROR_BY_CLASS: dict[str, type[exc.DBAPIError]] = {
    "23": exc.IntegrityError,
    "22": exc.DataError,
    "42": exc.ProgrammingError,
    "0A": exc.NotSupportedError,
    "40": exc.OperationalError,
    "53": exc.OperationalError,
    "55": exc.OperationalError,
    "57": exc.OperationalError,
}


#: Server errors after which the session is gone (class 08, and 57P01-57P03: shut down).
_SESSION_ENDED = (asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError)


def _keeps_connection(error: BaseException, driver: Any) -> bool:
    """A plain SQL error from the server leaves the connection ready for the next call."""
    if driver is not None and driver.is_closed():
        return False
    if isinstance(error, exc.DBAPIError):
        return not isinstance(error.orig, _SESSION_ENDED)
    # A value a later step of a transaction could not bind: raised before it was sent.
    return type(error) in (TypeError, ValueError)


def _is_closed(driver: Any) -> bool:
    return bool(driver.is_closed())


def _translated(error: Exception, sql: str) -> Exception:
    """asyncpg's error as the SQLAlchemy error the generic path raises, chained."""
    unchanged = error  # (asyncpg is untyped: isinstance() below makes `error` Any)
    if isinstance(error, _SESSION_ENDED):
        return unchanged
    if isinstance(error, asyncpg.PostgresError):
        state = str(getattr(error, "sqlstate", "") or "")
        kind = _ERROR_BY_CLASS.get(state[:2], exc.DatabaseError)
        translated: Exception = kind(sql, None, error, hide_parameters=True)
        return translated
    if isinstance(error, asyncpg.InterfaceError) and isinstance(error, ValueError):
        # asyncpg's client-side DataError (its public name is taken by SQLSTATE class 22).
        # Raised before anything was sent: a value of a type the column cannot take.
        return exc.DataError(sql, None, error, hide_parameters=True)
    return unchanged


class PostgresExecutor:
    """`fetch` / `write` / `insert_id` / `transaction` on asyncpg lanes."""

    kind = "native"

    def __init__(self, lane_engine: AsyncEngine, statements: StatementCache, lanes: int) -> None:
        self._statements = statements
        self._engine = lane_engine
        # asyncpg notices a closed socket by itself, so a dead lane is replaced before use.
        self._lanes = Lanes(
            lane_engine, lanes, _keeps_connection, _translated, is_closed=_is_closed
        )

    async def open(self) -> None:
        return None

    async def fetch(self, stmt: ClauseElement, values: Values) -> list[Any]:
        compiled = self._statements.get(stmt, values)
        sql, arguments = compiled.arguments(values)
        async with self._lanes.lane(sql) as lane:
            if not compiled.knows_result_types:
                # Once per statement: what SQLAlchemy reads from cursor.description.
                prepared = await lane.driver.prepare(sql)
                compiled.learn_types([a.type.oid for a in prepared.get_attributes()])
            records = await lane.driver.fetch(sql, *arguments)
        return compiled.rows(records)

    async def write(self, stmt: ClauseElement, values: Values) -> int:
        sql, arguments = self._statements.get(stmt, values).arguments(values)
        async with self._lanes.lane(sql) as lane:
            status = await lane.driver.execute(sql, *arguments)
        return _row_count(status)

    async def insert_id(self, stmt: ClauseElement, values: Values) -> int:
        sql, arguments = self._statements.get(stmt, values).arguments(values)
        async with self._lanes.lane(sql) as lane:
            return int(await lane.driver.fetchval(sql, *arguments))

    async def transaction(self, steps: Sequence[Step]) -> list[int | None]:
        ids: list[int | None] = []
        previous: int | None = None
        async with self._lanes.lane("BEGIN") as lane, lane.driver.transaction():
            for step in steps:
                values = step.values_after(previous)
                sql, arguments = self._statements.get(step.stmt, values).arguments(values)
                lane.sql = sql
                if step.returns_id:
                    previous = int(await lane.driver.fetchval(sql, *arguments))
                    ids.append(previous)
                else:
                    await lane.driver.execute(sql, *arguments)
                    ids.append(None)
        return ids

    async def close(self) -> None:
        await self._lanes.close()
        await self._engine.dispose()


def _row_count(status: str) -> int:
    """The row count at the end of a command tag ("DELETE 3", "INSERT 0 1"), else 0."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0
