"""The generic executor: SQLAlchemy's own execution path, for any async dialect.

It is also `executor: sqlalchemy` on the databases that have a native executor (which is
how the test suite proves the two paths equal), and the path of the provider's batch work
(retention, key rotation, statistics, the importer) on every database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from sqlalchemy import ClauseElement, CursorResult, Executable
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from slack_agents_sa.errors import ProviderClosedError
from slack_agents_sa.executors.base import DatabaseRules, Step, Values
from slack_agents_sa.executors.errors import engine_error
from slack_agents_sa.executors.rows import rows_of


def inserted_id(result: CursorResult[Any]) -> int:
    """The id a single-row INSERT or upsert reported, on SQLAlchemy's path."""
    if result.returns_rows:  # an explicit RETURNING (our upserts on PostgreSQL and SQLite)
        row = result.first()
        if row is not None:
            return int(row[0])
        # Else an implicit RETURNING, whose row SQLAlchemy read for inserted_primary_key.
    # A plain INSERT's key, through implicit RETURNING or the driver's lastrowid; for the
    # MySQL upsert that is LAST_INSERT_ID(id), the existing row's id.
    key = result.inserted_primary_key
    if key is None or key[0] is None:  # pragma: no cover - every dialect we support reports it
        raise RuntimeError("the database did not report the inserted row's id")
    return int(key[0])


async def insert_returning_id(
    conn: AsyncConnection, stmt: Executable, values: dict[str, Any] | None = None
) -> int:
    """Run a single-row INSERT or upsert (of `values`, if given) on `conn`; the row's id."""
    return inserted_id(await conn.execute(stmt, values))


class EngineExecutor:
    """Every call on a connection from the engine's pool, its errors translated by `rules`.

    `statement()` gives a connection where each statement commits by itself (no BEGIN round
    trip); `transaction()` one that commits at the end, with the options the backend gives
    for a writing transaction (SQLite's BEGIN IMMEDIATE). With `one_at_a_time` (SQLite,
    which writes one at a time whatever the number of connections) callers queue here, woken
    as soon as the previous call ends, rather than in SQLite's busy handler, which sleeps.
    """

    kind = "sqlalchemy"

    def __init__(
        self,
        engine: AsyncEngine,
        rules: DatabaseRules,
        *,
        autocommit_options: dict[str, Any],
        write_options: dict[str, Any],
        one_at_a_time: bool = False,
    ) -> None:
        self._rules = rules
        self._autocommit = engine.execution_options(**autocommit_options)
        self._writing = engine.execution_options(**write_options) if write_options else engine
        self._turns = asyncio.Lock() if one_at_a_time else None
        self._refused = False

    def _turn(self) -> AbstractAsyncContextManager[Any]:
        return self._turns if self._turns is not None else nullcontext()

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection for statements that each commit by themselves."""
        async with self._turn():
            try:
                async with self._autocommit.connect() as conn:
                    self._refuse_if_closed()
                    yield conn
            except Exception as error:
                _raise(engine_error(error, self._rules), error)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction that commits on success and rolls back on error."""
        async with self._turn():
            try:
                async with self._writing.begin() as conn:
                    self._refuse_if_closed()
                    yield conn
            except Exception as error:
                _raise(engine_error(error, self._rules), error)

    async def open(self) -> None:
        return None

    async def fetch(self, stmt: ClauseElement, values: Values) -> list[Any]:
        """The rows as `NativeRow`s, the type the native executors return."""
        async with self.statement() as conn:
            result = await conn.execute(_executable(stmt), dict(values))
            return rows_of(tuple(result.keys()), result.all())

    async def write(self, stmt: ClauseElement, values: Values) -> int:
        async with self.statement() as conn:
            return int((await conn.execute(_executable(stmt), dict(values))).rowcount)

    async def insert_id(self, stmt: ClauseElement, values: Values) -> int:
        async with self.statement() as conn:
            return inserted_id(await conn.execute(_executable(stmt), dict(values)))

    async def steps(self, steps: Sequence[Step]) -> list[int | None]:
        ids: list[int | None] = []
        previous: int | None = None
        async with self.transaction() as conn:
            for step in steps:
                values = dict(step.values_after(previous))
                result = await conn.execute(_executable(step.stmt), values)
                if step.returns_id:
                    previous = inserted_id(result)
                    ids.append(previous)
                else:
                    ids.append(None)
        return ids

    def refuse(self) -> None:
        """Refuse every call from now on, those waiting in SQLAlchemy's pool included (each
        is refused as it gets its connection, running nothing); calls running go on."""
        self._refused = True

    def _refuse_if_closed(self) -> None:
        if self._refused:
            raise ProviderClosedError("the provider is closed: its connections are gone")

    async def close(self) -> None:
        return None


def _raise(found: BaseException, error: Exception) -> None:
    if found is error:
        raise error
    raise found from error


def _executable(stmt: ClauseElement) -> Executable:
    if not isinstance(stmt, Executable):  # pragma: no cover - callers pass statements
        raise TypeError(f"not an executable statement: {type(stmt).__name__}")
    return stmt
