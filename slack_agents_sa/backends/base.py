"""The protocol every database implements, with the behaviour of any other async dialect.

A backend object is picked once from the URL (`backends.backend_for`); code elsewhere asks
it what differs (engine options, upserts, JSON field access, the migration lock, the
executor) and never compares dialect names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Insert,
    Integer,
    Select,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    event,
    func,
)
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.pool import ConnectionPoolEntry

from slack_agents_sa.backends.connect import (
    DEFAULT_CONNECT_TIMEOUT_S,
    URL_KEY,
    Connect,
)
from slack_agents_sa.backends.migration_steps import MigrationSteps
from slack_agents_sa.backends.search import TextSearch
from slack_agents_sa.errors import ImportSourceError
from slack_agents_sa.executors.base import Fault, LanePolicy
from slack_agents_sa.executors.statement_cache import StatementCache
from slack_agents_sa.models import Base, table_of

if TYPE_CHECKING:
    from slack_agents_sa.backends.builtin_source import BuiltinSource
    from slack_agents_sa.executors import Executor


@dataclass(frozen=True)
class SessionOptions:
    """The provider options that shape every connection's session (see ProviderSettings)."""

    #: PostgreSQL: our tables' schema.
    schema: str | None = None
    #: PostgreSQL behind a transaction-pooling PgBouncer (option `pgbouncer`), as said, never
    #: guessed from the URL.
    pgbouncer: bool = False
    #: Seconds a statement may run before the database stops it (None: no limit of ours).
    statement_timeout: float | None = None
    #: Seconds a statement may wait for a lock (None: the database's default).
    lock_timeout: float | None = None
    #: Seconds opening a connection may take, every host included (0: no limit).
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    #: MySQL/MariaDB on a Galera cluster: each read waits for the cluster's commits
    #: (`wsrep_sync_wait = 1`). None: on wherever the server reports `wsrep_on`.
    read_your_writes: bool | None = None


@dataclass(frozen=True)
class ExecutorParts:
    """What a native executor is made from: the provider's URL and options, the engine's
    dialect (compiled statements and the driver's codecs must come from one dialect), the
    pool options as they apply to lanes, and a maker of the pool-less engine whose
    connections become lanes."""

    url: URL
    dialect: Dialect
    policy: LanePolicy
    lane_engine: Callable[[], AsyncEngine]
    echo: bool
    session: SessionOptions

    def statements(self, engine: AsyncEngine | None = None) -> StatementCache:
        """The compiled-statement cache, with `engine`'s schema_translate_map if it has one
        (as SQLAlchemy's path applies the engine's execution option)."""
        options = engine.get_execution_options() if engine is not None else {}
        translate = options.get("schema_translate_map")
        return StatementCache(self.dialect, echo=self.echo, schema_translate_map=translate)


#: PEP 249's exception classes and what each means, most specific first in each MRO.
_FAULT_BY_DBAPI_NAME = {
    "IntegrityError": Fault.INTEGRITY,
    "DataError": Fault.DATA,
    "ProgrammingError": Fault.PROGRAMMING,
    "NotSupportedError": Fault.NOT_SUPPORTED,
    "OperationalError": Fault.OPERATIONAL,
    "InternalError": Fault.DATABASE,
    "DatabaseError": Fault.DATABASE,
}


#: What `upsert` builds: model, inserted columns, conflict keys, updated columns, RETURNING id.
type UpsertShape = tuple[type[Base], tuple[str, ...], tuple[str, ...], tuple[str, ...], bool]


class Backend(MigrationSteps):
    """Any async SQLAlchemy dialect: SQLAlchemy's execution path, no upsert, no pre-filter.

    Subclasses (one module each) override what their database does differently.
    """

    #: The backend family (`db.system` in traces); None: the dialect's own name.
    family: str | None = None
    #: Whether an INSERT ... RETURNING can feed another INSERT in one statement (a CTE).
    insert_ctes: bool = False
    #: Whether pooled connections are pinged at checkout (see `MySQL`).
    needs_pre_ping: bool = False
    #: `pool_recycle` when the option is not set (seconds; -1: never).
    default_pool_recycle: float = -1
    #: Whether the provider's calls take turns on SQLAlchemy's path (see `EngineExecutor`).
    one_call_at_a_time: bool = False
    #: Whether Alembic must rebuild tables to alter them (`render_as_batch`).
    migrates_in_batches: bool = False
    #: Whether the `schema` option applies.
    supports_schema: bool = False
    #: The isolation level that gives `collect_stats` on an engine one snapshot for all its
    #: statements (None: the dialect's default transaction already does).
    stats_isolation: str | None = None
    #: Drivers whose module-level `connect` coroutine SQLAlchemy's adapter calls (see
    #: `driver_connect`).
    connect_drivers: frozenset[str] = frozenset()
    #: Search over history: its index and how a search finds words through it.
    text_search: TextSearch = TextSearch()

    def __init__(self, dialect_name: str) -> None:
        self.dialect_name = dialect_name
        self._upserts: dict[UpsertShape, Insert] = {}

    @property
    def name(self) -> str:
        """ "sqlite", "postgresql", "mysql" (MariaDB too), or another dialect's own name."""
        return self.family or self.dialect_name

    # --- Connections ----------------------------------------------------------------------

    def checked_url(self, url: URL) -> URL:
        """`url` as the provider connects with it; ValueError for what this database cannot
        work with (the message names no password: the caller adds the URL, masked)."""
        return url

    def absent(self, url: URL) -> str | None:
        """Why connecting to `url` would create a new, empty database rather than open one
        (a reason for a message); None when it exists or this database cannot tell."""
        return None

    def url_text(self, raw: str) -> str:
        """A URL as typed, rewritten into a form SQLAlchemy parses (before `make_url`)."""
        return raw

    def driver_url(self, url: URL) -> URL:
        """`url` without the query options the dialect would hand the driver but that we
        apply ourselves (`connect_timeout` on drivers `driver_connect` knows)."""
        if self.driver_connect(url) is None:
            return url
        return url.difference_update_query([URL_KEY])

    def connect_servers(self, url: URL) -> str | None:
        """The servers a connect tries, for its errors, where the driver's arguments do not
        say them all; None: they do."""
        return None

    def driver_connect(self, url: URL) -> Connect | None:
        """The driver's `connect` coroutine SQLAlchemy's adapter calls, so the provider can
        bound it (option `connect_timeout`); None where it cannot."""
        driver = url.get_driver_name()
        if driver not in self.connect_drivers:
            return None
        connect: Connect = importlib.import_module(driver).connect
        return connect

    def is_memory(self, url: URL) -> bool:
        """Whether the database lives in the process's memory and goes with it."""
        return False

    def engine_options(
        self, url: URL, pool_options: dict[str, Any], session: SessionOptions
    ) -> dict[str, Any]:
        """Extra `create_async_engine` arguments."""
        return dict(pool_options)

    def check_session_options(self, url: URL, session: SessionOptions) -> None:
        """ValueError naming the option when this database cannot honour `session`."""
        if session.statement_timeout is not None or session.lock_timeout is not None:
            raise ValueError(
                f"options 'statement_timeout' and 'lock_timeout' are supported on SQLite, "
                f"PostgreSQL and MySQL/MariaDB, not {url.get_backend_name()}"
            )

    def install_connection_hooks(self, engine: AsyncEngine, session: SessionOptions) -> None:
        """Per-connection set-up; here: replace a connection the server closed at checkout.

        After a server restart or a killed session the driver has already seen the socket
        close; asking it costs no round trip (unlike `pool_pre_ping`). The pool retries the
        checkout with a new connection, so the next call just works.
        """

        @event.listens_for(engine.sync_engine, "checkout")
        def _drop_closed(_dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
            if self.driver_says_closed(record.driver_connection):
                raise DisconnectionError("connection closed by the server")

    def driver_says_closed(self, driver_connection: Any) -> bool:
        """Whether the driver knows its connection is closed, asked without a round trip."""
        is_closed = getattr(driver_connection, "is_closed", None)
        if callable(is_closed):
            return bool(is_closed())
        closed = getattr(driver_connection, "closed", None)
        return closed if isinstance(closed, bool) else False

    async def ping(self, driver_connection: Any) -> None:
        """One round trip that fails if the connection is unusable (lanes' `pool_pre_ping`)."""
        raise NotImplementedError(f"no lanes on {self.dialect_name}")

    def pgbouncer_url(self, url: URL) -> URL:
        """`url` set up for a transaction-pooling PgBouncer in front (option `pgbouncer`)."""
        raise ValueError(f"is for postgresql+asyncpg, not {url.drivername}")

    def pgbouncer_in_url(self, url: URL) -> bool:
        """Whether `url` carries what `pgbouncer_url` adds (for callers that have a URL only)."""
        return False

    def autocommit_options(self) -> dict[str, Any]:
        """Execution options for a connection where every statement is its own transaction.

        One statement is atomic by itself, so single-statement calls skip BEGIN/COMMIT
        round trips.
        """
        return {"isolation_level": "AUTOCOMMIT"}

    def write_transaction_options(self) -> dict[str, Any]:
        """Execution options for the provider's own writing transactions."""
        return {}

    # --- Errors: the one authority for this database (see executors/errors.py) ------------

    def fault_of(self, error: BaseException) -> Fault | None:
        """What a driver's `error` means (None: not the driver's). Here: by the DB-API
        exception class names every driver follows (PEP 249); a lost connection is what
        SQLAlchemy's dialect says (`connection_invalidated`), on its path only. Text a
        driver cannot encode (a lone surrogate) is a value that cannot be stored."""
        if isinstance(error, UnicodeEncodeError):
            return Fault.INVALID_VALUE
        for kind in type(error).__mro__:
            fault = _FAULT_BY_DBAPI_NAME.get(kind.__name__)
            if fault is not None:
                return fault
        if isinstance(error, OSError):
            return Fault.SESSION_ENDED
        return None

    def driver_error(self, error: DBAPIError) -> BaseException:
        """The driver's own error inside SQLAlchemy's wrapper."""
        orig: BaseException = error.orig if error.orig is not None else error
        return orig

    # --- Executors ------------------------------------------------------------------------

    def has_native_executor(self, url: URL) -> bool:
        """Whether a native executor serves `url` (see `executors`)."""
        return False

    def native_executor(self, parts: ExecutorParts) -> Executor:
        """The native executor for `url` (only asked when `has_native_executor`)."""
        raise NotImplementedError(f"no native executor for {self.dialect_name}")

    # --- Statements -----------------------------------------------------------------------

    def upsert(
        self,
        model: type[Base],
        columns: tuple[str, ...],
        keys: tuple[str, ...],
        update: tuple[str, ...],
        returning_id: bool = False,
    ) -> Insert:
        """INSERT the `columns` (bound by name at execution), or when a row with the same
        `keys` exists, UPDATE its `update` columns to the new values (an empty `update`
        leaves the row as it is but still touches it). With `returning_id`, the statement
        reports the row's `id` (RETURNING, or the driver's lastrowid on MySQL).

        Built once per shape and reused: building a statement costs more than running it.
        """
        shape = (model, columns, keys, update, returning_id)
        found = self._upserts.get(shape)
        if found is None:
            found = self._upserts[shape] = self._build_upsert(shape)
        return found

    def _build_upsert(self, shape: UpsertShape) -> Insert:
        """The statement `upsert` returns for `shape`, built once per shape."""
        raise NotImplementedError(f"no upsert for dialect {self.dialect_name!r}")

    def insert_after_insert(self, table: Table, column: str) -> Insert | None:
        """An INSERT into `table` (other columns bound by name) whose `column` takes the id
        the connection's previous INSERT generated, read by the server: the steps of a
        transaction then need nothing back between them, so an executor may send them
        together. None where the caller must hand the id over itself."""
        return None

    def json_field_is_text(
        self,
        document: ColumnElement[Any] | InstrumentedAttribute[Any],
        field: BindParameter[str],
        value: BindParameter[str],
    ) -> ColumnElement[bool] | None:
        """SQL true when the JSON object `document` may have top-level `field` equal to the
        string `value` (both bound parameters); None where the dialect has no safe way to say
        it.

        A pre-filter only (callers still compare in Python): it lets the database skip rows
        without decoding them. `field` is compared as data, never put into a JSON path, so
        no field name can reach another field.
        """
        return None

    def key_value_rows(
        self,
        table: Table,
        namespace: BindParameter[str],
        fields: Sequence[tuple[BindParameter[str], BindParameter[str]]],
    ) -> ColumnElement[bool]:
        """The WHERE clause of `query` on a key-value table (`agents_kv_entries` or
        `agents_list_items`): true for every row in `namespace` whose JSON object `value`
        has each top-level field equal to its string value (names and values bound as
        data), never for a row of another namespace, and maybe for other rows of the
        namespace (callers still compare in Python).

        Here: the namespace, narrowed by `json_field_is_text` where the dialect has it.
        """
        conditions = [table.c.namespace == namespace]
        for field, value in fields:
            condition = self.json_field_is_text(table.c.value, field, value)
            if condition is not None:
                conditions.append(condition)
        return and_(*conditions)

    # --- Statistics and import ------------------------------------------------------------

    def json_bytes(self, value: ColumnElement[Any]) -> ColumnElement[int]:
        """The stored size of a JSON value; here its length in characters, the closest
        portable figure."""
        return func.length(cast(value, Text), type_=Integer)

    def database_bytes(self) -> Select[Any] | None:
        """A statement for the whole database's size in bytes; None where it cannot tell."""
        return None

    def builtin_source(self, conn: AsyncConnection) -> BuiltinSource:
        """A reader of the host's built-in provider's tables on `conn`, for the importer."""
        raise ImportSourceError(
            f"the host's built-in providers are sqlite and postgres, not {self.name}"
        )


def on_conflict_upsert(
    make_insert: Callable[[Any], Any],
    model: type[Base],
    columns: tuple[str, ...],
    keys: tuple[str, ...],
    update: tuple[str, ...],
    returning_id: bool,
) -> Insert:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, as SQLite and PostgreSQL spell it."""
    table = table_of(model)
    stmt = make_insert(table).values(
        {name: bindparam(name, type_=table.c[name].type) for name in columns}
    )
    set_ = {name: stmt.excluded[name] for name in update}
    # A no-op update rather than DO NOTHING, so RETURNING reports an existing row too.
    set_ = set_ or {keys[0]: stmt.excluded[keys[0]]}
    upserted: Insert = stmt.on_conflict_do_update(index_elements=list(keys), set_=set_)
    return upserted.returning(table.c.id) if returning_id else upserted
