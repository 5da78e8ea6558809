"""The engine and the two ways the provider talks to it: one statement, or one transaction."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from sqlalchemy import ClauseElement, Executable, Insert, Result
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from slack_agents_sa.backends import ExecutorParts, backend_for
from slack_agents_sa.errors import ConnectionLostError, ProviderClosedError
from slack_agents_sa.executors import EngineExecutor, Executor, Step, Values
from slack_agents_sa.executors.base import lost_connection_message
from slack_agents_sa.executors.engine import inserted_id
from slack_agents_sa.settings import ProviderSettings
from slack_agents_sa.types import dump_json


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Turn SQLAlchemy's wrappers into errors a caller can act on.

    A value SQLAlchemy could not bind (not JSON, NaN, naive datetime) is re-raised as itself:
    it fails before the statement reaches the database, so nothing is written. A lost
    connection becomes `ConnectionLostError`. Parameters are never part of the message.
    """
    try:
        yield
    except StatementError as error:
        if isinstance(error.orig, TypeError | ValueError) and not isinstance(error, DBAPIError):
            raise type(error.orig)(f"cannot store value: {error.orig}") from None
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            raise ConnectionLostError(lost_connection_message(error.orig or error)) from error
        raise
    except OSError as error:
        raise ConnectionLostError(f"cannot reach the database: {error}") from error


async def insert_returning_id(
    conn: AsyncConnection, stmt: Insert, values: dict[str, Any] | None = None
) -> int:
    """Run a single-row INSERT or upsert (of `values`, if given) on `conn`; the row's id."""
    return inserted_id(await conn.execute(stmt, values))


def make_engine(
    url: URL,
    *,
    schema: str | None = None,
    echo: bool = False,
    pool_options: dict[str, Any] | None = None,
    pool_pre_ping: bool = False,
) -> AsyncEngine:
    """An engine set up as every part of this package wants it (provider, CLI, Alembic)."""
    backend = backend_for(url)
    if schema is not None and not backend.supports_schema:
        raise ValueError(f"a schema is supported on PostgreSQL only, not {url.drivername}")
    engine = create_async_engine(
        url,
        echo=echo,
        pool_pre_ping=pool_pre_ping or backend.needs_pre_ping,
        # Values (OAuth secrets among them) stay out of logs and exception messages.
        hide_parameters=True,
        json_serializer=dump_json,
        # Every checkout ends its own transaction (statement() autocommits, transaction()
        # commits or rolls back), so the pool's extra ROLLBACK per return is a wasted trip.
        pool_reset_on_return=None,
        **backend.engine_options(url, pool_options or {}, schema),
    )
    backend.install_connection_hooks(engine)
    return engine


logger = logging.getLogger(__name__)

#: Attempts of a call the database rolled back as a serialization failure or a deadlock.
RETRY_ATTEMPTS = 4
#: Upper bound of the random pause before the first retry (s); it doubles each time.
RETRY_PAUSE_S = 0.005
_jitter = random.SystemRandom()

#: Lanes (held connections) of a native executor when `pool_size` is not set: SQLAlchemy's
#: default pool size, which the measurements in issue 11 used.
DEFAULT_LANES = 5


class Database:
    """One provider's engine; created in `initialize()`, disposed in `close()`."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.engine = make_engine(
            settings.url,
            schema=settings.db_schema,
            echo=settings.echo,
            pool_options=settings.pool_options(),
            pool_pre_ping=settings.pool_pre_ping,
        )
        self.dialect_name = self.engine.dialect.name
        #: What differs on this database (upserts, JSON access, locks, the executor).
        self.backend = backend_for(settings.url)
        self._autocommit_engine = self.engine.execution_options(**self.backend.autocommit_options())
        # SQLite: every call of this provider uses one connection, taking turns (see `open`).
        self._shared: AsyncConnection | None = None
        self._turns = asyncio.Lock()
        # Calls still running on the database after their caller was cancelled (see `_shielded`).
        self._calls: set[asyncio.Task[Any]] = set()
        # How the provider's calls reach the database (see `fetch` and `open`).
        self._executor: Executor = EngineExecutor(self.statement, self.transaction)

    async def open(self) -> None:
        """Get ready for calls (after migrations).

        SQLite writes one at a time whatever the number of connections, so one connection
        serves all calls of a provider: callers queue here (woken as soon as it is free)
        rather than in SQLite's busy handler, which sleeps and retries, and no call pays
        for a pool checkout. Other processes still queue on the file lock (busy_timeout).
        """
        if self.backend.shares_one_connection and self._shared is None:
            self._shared = await self._autocommit_engine.connect()
        url = self.settings.url
        if self.settings.executor != "sqlalchemy" and self.backend.has_native_executor(url):
            parts = ExecutorParts(
                url,
                self.engine.dialect,
                self.settings.pool_size or DEFAULT_LANES,
                self._lane_engine,
                self.settings.echo,
            )
            native = self.backend.native_executor(parts)
            await native.open()
            self._executor = native

    def _lane_engine(self) -> AsyncEngine:
        """A pool-less twin of the engine: lanes hold its connections for the provider's life."""
        return make_engine(
            self.settings.url,
            schema=self.settings.db_schema,
            echo=self.settings.echo,
            pool_options={"poolclass": NullPool},
        )

    @property
    def executor_kind(self) -> str:
        """ "native" or "sqlalchemy": the path the provider's calls take."""
        return self._executor.kind

    async def fetch(self, stmt: ClauseElement, values: Values | None = None) -> list[Any]:
        """Every row a statement returns, as tuples with named fields (`row.id`)."""
        given = values or {}
        return await self._call(lambda: self._executor.fetch(stmt, given))

    async def write(self, stmt: ClauseElement, values: Values | None = None) -> int:
        """Run one statement that commits by itself; how many rows it touched."""
        given = values or {}
        return await self._call(lambda: self._executor.write(stmt, given))

    async def insert_id(self, stmt: ClauseElement, values: Values | None = None) -> int:
        """Run one INSERT (or upsert) by itself; the inserted (or upserted) row's id."""
        given = values or {}
        return await self._call(lambda: self._executor.insert_id(stmt, given))

    async def steps(self, steps: Sequence[Step]) -> list[int | None]:
        """Run `steps` as one transaction; the ids of the rows the `returns_id` steps inserted."""
        return await self._call(lambda: self._executor.transaction(steps))

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection for exactly one statement, which commits by itself (no BEGIN round trip)."""
        if self._shared is not None:
            async with self._turns:
                with _translated_errors():
                    yield self._shared
            return
        with _translated_errors():
            async with self._autocommit_engine.connect() as conn:
                yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction that commits on success and rolls back on error."""
        if self._shared is not None:
            async with self._turns, self.backend.shared_transaction(self._shared) as conn:
                with _translated_errors():
                    yield conn
            return
        with _translated_errors():
            async with self.engine.begin() as conn:
                yield conn

    async def run[T](self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work` on a `statement()` connection, shielded from the caller's cancellation."""

        async def in_statement() -> T:
            async with self.statement() as conn:
                return await work(conn)

        return await self._call(in_statement)

    async def run_transaction[T](self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work` in one `transaction()`, shielded from the caller's cancellation."""

        async def in_transaction() -> T:
            async with self.transaction() as conn:
                return await work(conn)

        return await self._call(in_transaction)

    async def execute(self, stmt: Executable, values: dict[str, Any] | None = None) -> Result[Any]:
        """Run one statement through SQLAlchemy (it commits by itself), result fully buffered.

        For batch work (retention, key rotation, stats) that wants SQLAlchemy's `Result`;
        the provider's per-call methods use `fetch` / `write` / `insert_id` / `steps`.
        """
        return await self.run(lambda conn: conn.execute(stmt, values))

    async def _call[T](self, attempt: Callable[[], Awaitable[T]]) -> T:
        """One provider call: shielded from cancellation, retried when safe and useful."""
        return await self._shielded(self._retrying(attempt))

    async def _retrying[T](self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()`, and again when the database rolled it back as a serialization failure
        or a deadlock (`Backend.is_retryable`), up to RETRY_ATTEMPTS in all.

        Safe for every call here: each is one statement or one transaction, and those errors
        mean the database undid all of it (the executors roll back on any error), so a retry
        cannot write anything twice. The pauses are short and random, so two calls that
        collided do not collide again in step.
        """
        tries = 1
        while True:
            try:
                return await attempt()
            except DBAPIError as error:
                if tries >= RETRY_ATTEMPTS or not self.backend.is_retryable(error):
                    raise
                logger.info(
                    "retrying a call the database rolled back (%s), attempt %d of %d",
                    type(error.orig).__name__,
                    tries + 1,
                    RETRY_ATTEMPTS,
                )
                await asyncio.sleep(_jitter.uniform(0, RETRY_PAUSE_S * 2**tries))
                tries += 1

    async def _shielded[T](self, call: Coroutine[Any, Any, T]) -> T:
        """Run `call` in a task of its own that the caller's cancellation does not reach.

        A cancelled caller gets CancelledError at once, while its statement runs to its end
        on the database: interrupting a driver mid-protocol leaves a connection no one can
        trust (SQLAlchemy then invalidates it, which on SQLite's one shared connection, and
        above all in memory, would lose the provider), and a pooled connection abandoned
        mid-call leaks. So a cancelled write is whole or absent, usually whole: the
        contract lets callers assume neither. `dispose` waits for such calls.
        """
        # Eager: the task runs at once up to its first wait on the database, rather than
        # in the loop's next turn (one turn less per call: measured 203 -> 187 µs per `get`).
        task = asyncio.Task(call, loop=asyncio.get_running_loop(), eager_start=True)
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        return await asyncio.shield(task)

    async def settle(self) -> None:
        """Wait until no call is running on the database for a caller that was cancelled."""
        while self._calls:
            await asyncio.wait(set(self._calls))

    async def dispose(self) -> None:
        """Wait for calls still running for cancelled callers, then close every connection."""
        await self.settle()
        executor, self._executor = self._executor, EngineExecutor(self.statement, self.transaction)
        await executor.close()
        shared, self._shared = self._shared, None
        if shared is not None:
            await shared.close()
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
