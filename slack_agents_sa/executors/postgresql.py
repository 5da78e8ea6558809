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

from sqlalchemy import ClauseElement
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_agents_sa.executors.base import DatabaseRules, LanePolicy, Step, Values
from slack_agents_sa.executors.lanes import Lanes
from slack_agents_sa.executors.statement_cache import StatementCache


class PostgresExecutor:
    """`fetch` / `write` / `insert_id` / `steps` on asyncpg lanes."""

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
        # asyncpg notices a closed socket by itself, so a dead lane is replaced before use.
        self._lanes = Lanes(lane_engine, rules, policy)

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

    async def steps(self, steps: Sequence[Step]) -> list[int | None]:
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

    def refuse(self) -> None:
        self._lanes.refuse()

    async def close(self) -> None:
        await self._lanes.close()
        await self._engine.dispose()


def _row_count(status: str) -> int:
    """The row count at the end of a command tag ("DELETE 3", "INSERT 0 1"), else 0."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0
