"""The engine and the two ways the provider talks to it: one statement, or one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from typing import Any

from sqlalchemy import Insert
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from slack_agents_sa import dialects
from slack_agents_sa.errors import ProviderClosedError
from slack_agents_sa.settings import ProviderSettings
from slack_agents_sa.types import dump_json


@contextmanager
def _plain_value_errors() -> Iterator[None]:
    """Re-raise a value SQLAlchemy could not bind (not JSON, NaN, naive datetime) as itself.

    Such errors happen before the statement reaches the database, so nothing is written.
    """
    try:
        yield
    except StatementError as error:
        if isinstance(error.orig, TypeError | ValueError) and not isinstance(error, DBAPIError):
            raise type(error.orig)(f"cannot store value: {error.orig}") from None
        raise


async def insert_returning_id(conn: AsyncConnection, stmt: Insert) -> int:
    """Run a single-row INSERT on `conn` and return the new row's primary key."""
    key = (await conn.execute(stmt)).inserted_primary_key
    if key is None:  # pragma: no cover - every dialect we support reports it
        raise RuntimeError(f"{conn.dialect.name} did not report the inserted row's id")
    return int(key[0])


class Database:
    """One provider's engine; created in `initialize()`, disposed in `close()`."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.engine: AsyncEngine = create_async_engine(
            settings.url,
            echo=settings.echo,
            pool_pre_ping=settings.pool_pre_ping,
            json_serializer=dump_json,
            # Every checkout ends its own transaction (statement() autocommits, transaction()
            # commits or rolls back), so the pool's extra ROLLBACK per return is a wasted trip.
            pool_reset_on_return=None,
            **dialects.engine_options(settings.url, settings.pool_options()),
        )
        dialects.install_connection_hooks(self.engine)
        self.dialect_name = self.engine.dialect.name
        self._autocommit_engine = self.engine.execution_options(
            **dialects.autocommit_options(self.dialect_name)
        )
        # In-memory SQLite is one shared connection: interleaved transactions would mix,
        # so calls take turns.
        self._turns: asyncio.Lock | None = asyncio.Lock() if settings.is_memory_sqlite else None

    def _turn(self) -> AbstractAsyncContextManager[Any]:
        return self._turns if self._turns is not None else nullcontext()

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection for exactly one statement, which commits by itself (no BEGIN round trip)."""
        async with self._turn(), self._autocommit_engine.connect() as conn:
            with _plain_value_errors():
                yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction that commits on success and rolls back on error."""
        async with self._turn(), self.engine.begin() as conn:
            with _plain_value_errors():
                yield conn

    async def insert_returning_id(self, stmt: Insert) -> int:
        """Run a single-row INSERT on its own and return the new row's primary key."""
        async with self.statement() as conn:
            return await insert_returning_id(conn, stmt)

    async def dispose(self) -> None:
        await self.engine.dispose()


class UsesDatabase:
    """Mixin for the provider's method groups: access to the open `Database`."""

    _database: Database | None = None

    @property
    def db(self) -> Database:
        if self._database is None:
            raise ProviderClosedError(
                "slack_agents_sa provider is not open: call `await provider.initialize()` "
                "first (and not after `close()`)"
            )
        return self._database
