"""The engine, and how a provider call reaches the database: shielded from its caller's
cancellation, retried when the database rolled it back, refused once the provider closed."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import ClauseElement, Executable, Result
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from slack_agents_sa.backends import ExecutorParts, SessionOptions, backend_for
from slack_agents_sa.backends.connect import bounded, connect_timeout_in_url
from slack_agents_sa.errors import ProviderClosedError, TransactionConflictError
from slack_agents_sa.executors import EngineExecutor, Executor, LanePolicy, Step, Values
from slack_agents_sa.settings import ProviderSettings
from slack_agents_sa.types import dump_json, load_json


def make_engine(
    url: URL,
    *,
    schema: str | None = None,
    echo: bool = False,
    pool_options: dict[str, Any] | None = None,
    pool_pre_ping: bool = False,
    session: SessionOptions | None = None,
    connection_hooks: bool = True,
) -> AsyncEngine:
    """An engine set up as every part of this package wants it (provider, CLI, Alembic).

    `session` carries the provider's options; a caller that has only a URL (the CLI,
    Alembic's env.py) passes `schema`, and PgBouncer mode is then read from the URL the
    `pgbouncer` option made. `connection_hooks=False`: a database that is not ours (an
    import's source), connected as the URL says and left as it is (no SQLite pragmas).
    """
    backend = backend_for(url)
    if session is None:
        session = SessionOptions(schema=schema, pgbouncer=backend.pgbouncer_in_url(url))
    if session.schema is not None and not backend.supports_schema:
        raise ValueError(f"a schema is supported on PostgreSQL only, not {url.drivername}")
    options = backend.engine_options(url, pool_options or {}, session)
    connect = backend.driver_connect(url)
    timeout = connect_timeout_in_url(url)
    timeout = session.connect_timeout if timeout is None else timeout
    if connect is not None:
        options["connect_args"] = {
            **options.get("connect_args", {}),
            "async_creator_fn": bounded(connect, timeout, backend.connect_servers(url)),
        }
    engine = create_async_engine(
        backend.driver_url(url),
        echo=echo,
        pool_pre_ping=pool_pre_ping or backend.needs_pre_ping,
        # Values (OAuth secrets among them) stay out of logs and exception messages.
        hide_parameters=True,
        json_serializer=dump_json,
        json_deserializer=load_json,
        # Every checkout ends its own transaction (statement() autocommits, transaction()
        # commits or rolls back), so the pool's extra ROLLBACK per return is a wasted trip.
        pool_reset_on_return=None,
        **options,
    )
    if connection_hooks:
        backend.install_connection_hooks(engine, session)
    return engine


logger = logging.getLogger(__name__)

#: Attempts of a call the database rolled back as a serialization failure or a deadlock.
#: Six: one row written as fast as it goes by 9 writers through three Galera nodes had 6 of
#: 450 writes conflict on each of 4 attempts; with 6, none in most runs, 2 in the worst.
RETRY_ATTEMPTS = 6
#: Upper bound of the random pause before the first retry (s); it doubles each time.
RETRY_PAUSE_S = 0.005
_jitter = random.SystemRandom()

#: Lanes (held connections) of a native executor when `pool_size` is not set: SQLAlchemy's
#: default pool size.
DEFAULT_LANES = 5
#: Seconds a call waits for a lane when `pool_timeout` is not set: SQLAlchemy's default.
DEFAULT_POOL_TIMEOUT_S = 30.0


class Database:
    """One provider's engine and executor; created in `initialize()`, disposed in `close()`."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        #: What differs on this database (upserts, JSON access, locks, errors, the executor).
        self.backend = backend_for(settings.url)
        self._session = settings.session_options()
        self.engine = make_engine(
            settings.url,
            echo=settings.echo,
            pool_options=settings.pool_options(),
            pool_pre_ping=settings.pool_pre_ping,
            session=self._session,
        )
        self.dialect_name = self.engine.dialect.name
        # SQLAlchemy's path: the provider's calls with `executor: sqlalchemy` (or where no
        # native executor exists), and the batch work of retention, keys, stats, the importer.
        self._engine_path = EngineExecutor(
            self.engine,
            self.backend,
            autocommit_options=self.backend.autocommit_options(),
            write_options=self.backend.write_transaction_options(),
            one_at_a_time=self.backend.one_call_at_a_time,
        )
        self._executor: Executor = self._engine_path
        # Calls still running on the database after their caller was cancelled (see `_shielded`).
        self._calls: set[asyncio.Task[Any]] = set()
        self._closed = False

    async def open(self) -> None:
        """Get ready for calls (after migrations): the native executor where there is one."""
        url = self.settings.url
        if self.settings.executor != "sqlalchemy" and self.backend.has_native_executor(url):
            parts = ExecutorParts(
                url,
                self.engine.dialect,
                self._lane_policy(),
                self._lane_engine,
                self.settings.echo,
                self._session,
            )
            native = self.backend.native_executor(parts)
            await native.open()
            self._executor = native

    def _lane_policy(self) -> LanePolicy:
        """The pool options as they apply to a native executor's lanes."""
        settings = self.settings
        recycle = settings.pool_recycle
        return LanePolicy(
            size=settings.pool_size or DEFAULT_LANES,
            timeout=settings.pool_timeout or DEFAULT_POOL_TIMEOUT_S,
            recycle=self.backend.default_pool_recycle if recycle is None else recycle,
            pre_ping=settings.pool_pre_ping,
        )

    def _lane_engine(self) -> AsyncEngine:
        """A pool-less twin of the engine: lanes hold its connections for the provider's life."""
        return make_engine(
            self.settings.url,
            echo=self.settings.echo,
            pool_options={"poolclass": NullPool},
            session=self._session,
        )

    @property
    def executor_kind(self) -> str:
        """ "native" or "sqlalchemy": the path the provider's calls take."""
        return self._executor.kind

    @property
    def is_closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ProviderClosedError(
                "slack_agents_sa provider is closed: `close()` ended it, so no call runs and "
                "no connection opens any more"
            )

    async def fetch(self, stmt: ClauseElement, values: Values | None = None) -> list[Any]:
        """Every row a statement returns, as rows with named fields (`row.id`)."""
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
        return await self._call(lambda: self._executor.steps(steps))

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection for statements that each commit by themselves (no BEGIN round trip),
        on SQLAlchemy's path, errors translated as on every path."""
        self._check_open()
        async with self._engine_path.statement() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction that commits on success and rolls back on error."""
        self._check_open()
        async with self._engine_path.transaction() as conn:
            yield conn

    async def run[T](self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work` on a `statement()` connection, shielded from the caller's cancellation.

        Not retried: `work` may run several statements, each committed by itself.
        """

        async def in_statement() -> T:
            async with self.statement() as conn:
                return await work(conn)

        self._check_open()
        return await self._shielded(in_statement())

    async def run_transaction[T](self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work` in one `transaction()`, shielded, and run again whole if the database rolled
        it back as a conflict (see `_retrying`)."""

        async def in_transaction() -> T:
            async with self.transaction() as conn:
                return await work(conn)

        return await self._call(in_transaction)

    async def execute(self, stmt: Executable, values: dict[str, Any] | None = None) -> Result[Any]:
        """Run one statement through SQLAlchemy (it commits by itself), result fully buffered.

        For batch work (retention, key rotation, stats) that wants SQLAlchemy's `Result`;
        the provider's per-call methods use `fetch` / `write` / `insert_id` / `steps`.
        """

        async def one_statement() -> Result[Any]:
            async with self.statement() as conn:
                return await conn.execute(stmt, values)

        return await self._call(one_statement)

    async def _call[T](self, attempt: Callable[[], Awaitable[T]]) -> T:
        """One provider call: refused once closed, shielded from cancellation, retried when
        safe and useful."""
        self._check_open()
        return await self._shielded(self._retrying(attempt))

    async def _retrying[T](self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()`, and again when the database rolled it back as a conflict (a
        serialization failure, a deadlock, a statement made stale), up to RETRY_ATTEMPTS.

        Safe for every attempt given here: each is one statement or one transaction, and a
        conflict means the database undid all of it (the executors roll back on any error),
        so a retry cannot write anything twice. The pauses are short and random, so two
        calls that collided do not collide again in step.
        """
        tries = 1
        while True:
            try:
                return await attempt()
            except TransactionConflictError as error:
                if tries >= RETRY_ATTEMPTS:
                    raise TransactionConflictError(
                        f"{error} on each of {RETRY_ATTEMPTS} attempts"
                    ) from error
                logger.info(
                    "retrying a call the database rolled back (%s), attempt %d of %d",
                    type(error.__cause__).__name__,
                    tries + 1,
                    RETRY_ATTEMPTS,
                )
                await asyncio.sleep(_jitter.uniform(0, RETRY_PAUSE_S * 2**tries))
                self._check_open()
                tries += 1

    async def _shielded[T](self, call: Coroutine[Any, Any, T]) -> T:
        """Run `call` in a task of its own that the caller's cancellation does not reach.

        A cancelled caller gets CancelledError at once, while its statement runs to its end
        on the database: interrupting a driver mid-protocol leaves a connection no one can
        trust (SQLAlchemy then invalidates it, which on in-memory SQLite would lose the
        database), and a pooled connection abandoned mid-call leaks. So a cancelled write is
        whole or absent, usually whole: the contract lets callers assume neither. If it then
        fails, the failure is logged, since no caller is left to see it. `dispose` waits
        for such calls.
        """
        # Eager: the task runs at once up to its first wait on the database, rather than
        # in the loop's next turn (one turn less per call: measured 203 -> 187 µs per `get`).
        # The task hands its outcome to the caller itself (`_handing_to`), where
        # `asyncio.shield` would take one more turn through a done-callback.
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[T] = loop.create_future()
        task = asyncio.Task(_handing_to(outcome, call), loop=loop, eager_start=True)
        if not task.done():
            self._calls.add(task)
            task.add_done_callback(self._forget)
        try:
            return await outcome
        except asyncio.CancelledError:
            # Cancelled after the call failed but before this caller woke: nobody else
            # will see that failure.
            if outcome.done() and not outcome.cancelled():
                error = outcome.exception()
                if error is not None:
                    _log_failure_after_cancel(error)
            raise

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._calls.discard(task)
        if not task.cancelled():
            task.exception()  # read: a KeyboardInterrupt there is the loop's, not a leak

    async def settle(self) -> None:
        """Wait until no call is running on the database for a caller that was cancelled."""
        while self._calls:
            await asyncio.wait(set(self._calls))

    async def dispose(self) -> None:
        """End the provider: refuse every later call (a running prune's next batch
        included), wait for the calls still running, then close every connection."""
        self._closed = True
        # Calls queued for a connection are refused as they get one, rather than run.
        self._executor.refuse()
        self._engine_path.refuse()
        await self.settle()
        executor, self._executor = self._executor, self._engine_path
        await executor.close()
        await self.engine.dispose()


async def _handing_to[T](outcome: asyncio.Future[T], call: Coroutine[Any, Any, T]) -> None:
    """Run `call` and settle `outcome` with what it gives, unless its caller gave up
    (`outcome` cancelled): then a failure is logged, since nobody else will see it."""
    try:
        result = await call
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit):
        outcome.cancel()  # the task itself is cancelled (a loop shutting down)
        raise
    except BaseException as error:
        if not outcome.done():
            outcome.set_exception(error)
        else:
            _log_failure_after_cancel(error)
    else:
        if not outcome.done():
            outcome.set_result(result)


def _log_failure_after_cancel(error: BaseException) -> None:
    """Log a call that failed after its caller was cancelled (nobody else will see it)."""
    logger.warning(
        "a storage call whose caller was cancelled failed afterwards: %s: %s",
        type(error).__name__,
        error,
    )


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
