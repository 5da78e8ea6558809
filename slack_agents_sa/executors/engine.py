"""The generic executor: SQLAlchemy's own execution path, for any async dialect.

It is also `executor: sqlalchemy` on the databases that have a native executor, which is
how the test suite proves the two paths equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import ClauseElement, CursorResult, Executable
from sqlalchemy.ext.asyncio import AsyncConnection

from slack_agents_sa.executors.base import Step, Values

type Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection]]


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


class EngineExecutor:
    """Every call on a connection from SQLAlchemy's pool (or SQLite's shared connection)."""

    kind = "sqlalchemy"

    def __init__(self, statement: Connect, transaction: Connect) -> None:
        # `statement()`: a connection where each statement commits by itself;
        # `transaction()`: one that commits at the end. Both translate errors.
        self._statement = statement
        self._transaction = transaction

    async def open(self) -> None:
        return None

    async def fetch(self, stmt: ClauseElement, values: Values) -> list[Any]:
        async with self._statement() as conn:
            return list((await conn.execute(_executable(stmt), dict(values))).all())

    async def write(self, stmt: ClauseElement, values: Values) -> int:
        async with self._statement() as conn:
            return int((await conn.execute(_executable(stmt), dict(values))).rowcount)

    async def insert_id(self, stmt: ClauseElement, values: Values) -> int:
        async with self._statement() as conn:
            return inserted_id(await conn.execute(_executable(stmt), dict(values)))

    async def transaction(self, steps: Sequence[Step]) -> list[int | None]:
        ids: list[int | None] = []
        previous: int | None = None
        async with self._transaction() as conn:
            for step in steps:
                values = dict(step.values_after(previous))
                result = await conn.execute(_executable(step.stmt), values)
                if step.returns_id:
                    previous = inserted_id(result)
                    ids.append(previous)
                else:
                    ids.append(None)
        return ids

    async def close(self) -> None:
        return None


def _executable(stmt: ClauseElement) -> Executable:
    if not isinstance(stmt, Executable):  # pragma: no cover - callers pass statements
        raise TypeError(f"not an executable statement: {type(stmt).__name__}")
    return stmt
