"""PostgreSQL: search_path for `schema`, INSERT CTEs, the advisory migration lock, asyncpg lanes.

Behind PgBouncer in transaction pooling (the `pgbouncer` option, which puts
`PGBOUNCER_URL_QUERY` in the URL) a client connection is served by any server connection,
one transaction (or one statement outside a transaction) at a time, so nothing may live on
a connection past that:

- prepared statements: asyncpg's and SQLAlchemy's caches are off, so every statement is
  the unnamed one. asyncpg sends Parse/Describe with a Flush, not a Sync, and the
  Bind/Execute that follows ends in the only Sync: PgBouncer hands the server connection
  back only at that ReadyForQuery, so both halves reach the same server (asyncpg >= 0.30
  behaviour; tests/test_pgbouncer.py runs it under concurrency on both executors).
- `schema`: no search_path at connect (PgBouncer refuses the startup parameter, and a
  `SET` would stay on one server connection): our statements are compiled with
  `schema_translate_map` (both executors), and every SQLAlchemy transaction not in
  autocommit sets the search_path for itself (`set_config(..., true)`), for Alembic and
  the version-table reads, which name tables without a schema.
- the migration lock is `pg_advisory_xact_lock`, which ends with its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Insert,
    Integer,
    Select,
    Table,
    Text,
    case,
    cast,
    event,
    func,
    literal_column,
    null,
    select,
    text,
    true,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Connection, ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from slack_agents_sa.backends.base import (
    Backend,
    ExecutorParts,
    SessionOptions,
    UpsertShape,
    on_conflict_upsert,
)
from slack_agents_sa.backends.host_list import comma_hosts_as_query
from slack_agents_sa.backends.migration_steps import (
    MIGRATION_LOCK_TIMEOUT_S,
    lock_not_taken,
)
from slack_agents_sa.backends.postgresql_url import (
    check_options,
    dsn_options,
    without_dsn_options,
)
from slack_agents_sa.backends.search import PostgreSQLSearch
from slack_agents_sa.executors.base import Fault
from slack_agents_sa.types import load_json_utf8

if TYPE_CHECKING:
    from slack_agents_sa.backends.builtin_source import BuiltinSource
    from slack_agents_sa.executors import Executor

#: URL query of a provider behind PgBouncer (option `pgbouncer`): asyncpg's statement cache
#: and SQLAlchemy's prepared-statement cache off, so only unnamed statements are used.
PGBOUNCER_URL_QUERY = {"statement_cache_size": "0", "prepared_statement_cache_size": "0"}
#: libpq's default port, for a host of a comma list that names none.
DEFAULT_PORT = 5432
#: Arbitrary, stable key for the advisory lock around migrations.
MIGRATION_LOCK_KEY = 0x51AC_A6E5
#: The search_path of one transaction (positional: the DBAPI cursor of asyncpg's adapter).
_SET_LOCAL_SEARCH_PATH = "SELECT set_config('search_path', $1, true)"
#: SQLSTATEs of a server that ended, or would not start, a session: connection_exception
#: (class 08), admin_shutdown, crash_shutdown, cannot_connect_now (shutting down, starting
#: up, in recovery). SQLAlchemy's asyncpg dialect calls none of them a disconnect on connect.
_SERVER_GONE = ("08", "57P01", "57P02", "57P03")
#: asyncpg's errors after which its connection is gone: a connection error (class 08, and
#: asyncpg's own ConnectionDoesNotExistError) and an operator ending the session (57P01-57P03;
#: its base class OperatorInterventionError also covers 57014, a cancelled statement only).
_SESSION_ENDED_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
)
#: `query` reads a namespace through a GIN index per key-value table (migration 0008 builds
#: them) over `{namespace: [the document's top-level strings]}`, for each document `jsonb`
#: reads. jsonb refuses `\u0000` and lone surrogates (legal in our values), and any `\u`
#: escape past 007F unless the database is UTF8, and its functions fail the whole statement
#: on such a document. So a document with a `\u` escape other than `\u0001`-`\u007f` (our
#: JSON text has them for control characters; a lone surrogate makes `dump_json` write the
#: whole document in ASCII; a string holding a backslash and a u may look like one: no harm)
#: is held as `{namespace: null}`, as is one over 128 KiB, where a number could overflow
#: jsonb's numeric (131,072 digits: Python writes longer ints only with its digit limit
#: lifted). Constants go into the SQL text, never bound, spelled as the migration spells
#: them: the planner uses an expression index only for that very expression.
_EMPTY_OBJECT = literal_column("'{}'::jsonb", JSONB)
_ESCAPE = literal_column("'\\u'", Text)
_NOT_FOUND = literal_column("0", Integer)
_UNREADABLE_ESCAPE = literal_column("'\\\\u(0000|00[89a-fA-F]|0[1-9a-fA-F]|[1-9a-fA-F])'", Text)
_READABLE_BYTES = literal_column("131072", Integer)
_TOP_LEVEL_STRINGS = literal_column("""'strict $.* ? (@.type() == "string")'""", Text)
_NOT_READ = literal_column("'null'::jsonb", JSONB)


#: SQLSTATE classes (and single states) and what each means for the call; the most
#: specific first. 57014 query_canceled: statement_timeout or pg_cancel_backend, the session
#: lives on. 55P03 lock_not_available: lock_timeout. 40001/40P01 and a statement made stale
#: by another session's schema change (0A000 from asyncpg's cache): rolled back, retryable.
_FAULT_BY_STATE: tuple[tuple[str, Fault], ...] = (
    ("57014", Fault.STATEMENT_TIMEOUT),
    ("55P03", Fault.LOCK_TIMEOUT),
    ("40001", Fault.CONFLICT),
    ("40P01", Fault.CONFLICT),
    *((state, Fault.SESSION_ENDED) for state in _SERVER_GONE),
    ("23", Fault.INTEGRITY),
    ("22", Fault.DATA),
    ("42", Fault.PROGRAMMING),
    ("0A", Fault.NOT_SUPPORTED),
    ("40", Fault.OPERATIONAL),
    ("53", Fault.OPERATIONAL),
    ("55", Fault.OPERATIONAL),
    ("57", Fault.OPERATIONAL),
    ("58", Fault.OPERATIONAL),
)


def behind_pgbouncer(url: URL) -> bool:
    """Whether `url` carries what the `pgbouncer` option puts in it (the option itself, not
    this, decides how the provider behaves: see `SessionOptions.pgbouncer`)."""
    return url.get_driver_name() == "asyncpg" and all(
        url.query.get(name) == value for name, value in PGBOUNCER_URL_QUERY.items()
    )


async def _setup_json_codec(conn: Any) -> None:
    """`json` values decoded straight from the UTF-8 bytes asyncpg receives (binary format:
    for `json` the same text), and encoded as SQLAlchemy's dialect does."""
    await conn.driver_connection.set_type_codec(
        "json",
        encoder=str.encode,
        decoder=load_json_utf8,
        schema="pg_catalog",
        format="binary",
    )


def _milliseconds(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


class PostgreSQL(Backend):
    """PostgreSQL through asyncpg (or any async PostgreSQL driver on SQLAlchemy's path)."""

    family = "postgresql"
    insert_ctes = True
    supports_schema = True
    # READ COMMITTED would give each statement its own snapshot.
    stats_isolation = "REPEATABLE READ"
    connect_drivers = frozenset({"asyncpg"})
    text_search = PostgreSQLSearch()

    def url_text(self, raw: str) -> str:
        return comma_hosts_as_query(raw, DEFAULT_PORT)

    def checked_url(self, url: URL) -> URL:
        if url.get_driver_name() == "asyncpg":
            check_options(url)
        return url

    def driver_url(self, url: URL) -> URL:
        url = super().driver_url(url)
        return without_dsn_options(url) if url.get_driver_name() == "asyncpg" else url

    def engine_options(
        self, url: URL, pool_options: dict[str, Any], session: SessionOptions
    ) -> dict[str, Any]:
        """`schema` becomes every connection's search_path, so unqualified names, ours and
        Alembic's alike, resolve there; `migration_transaction` creates it. The timeouts are
        session settings sent when connecting (no round trip).

        Behind PgBouncer: `schema` qualifies our names instead (see the module docstring).
        asyncpg wants its `statement_cache_size` as an int (the URL says "0").
        """
        options = dict(pool_options)
        connect_args: dict[str, Any] = {}
        if "statement_cache_size" in url.query:
            connect_args["statement_cache_size"] = int(str(url.query["statement_cache_size"]))
        settings: dict[str, str] = {}
        if session.statement_timeout is not None:
            settings["statement_timeout"] = _milliseconds(session.statement_timeout)
        if session.lock_timeout is not None:
            settings["lock_timeout"] = _milliseconds(session.lock_timeout)
        if session.pgbouncer:
            if session.schema is not None:
                options["execution_options"] = {"schema_translate_map": {None: session.schema}}
        elif session.schema is not None:
            settings["search_path"] = session.schema
        if settings:
            connect_args["server_settings"] = settings
        if url.get_driver_name() == "asyncpg" and (dsn := dsn_options(url)) is not None:
            connect_args["dsn"] = dsn
        if connect_args:
            options["connect_args"] = connect_args
        return options

    def check_session_options(self, url: URL, session: SessionOptions) -> None:
        if session.pgbouncer and (
            session.statement_timeout is not None or session.lock_timeout is not None
        ):
            # PgBouncer refuses session parameters at connect, and a SET would stay behind
            # on one server connection for whichever client gets it next.
            raise ValueError(
                "options 'statement_timeout' and 'lock_timeout' cannot be set behind "
                "PgBouncer (option 'pgbouncer'): set them on the server for the agent's role "
                "instead (ALTER ROLE ... SET statement_timeout = '5s')"
            )

    def fault_of(self, error: BaseException) -> Fault | None:
        if isinstance(error, _SESSION_ENDED_ERRORS):
            return Fault.SESSION_ENDED
        if isinstance(error, asyncpg.InvalidCachedStatementError):
            return Fault.CONFLICT  # nothing ran; asyncpg re-prepares on the next try
        if isinstance(error, asyncpg.DataError) and error.__cause__ is not None:
            # asyncpg could not encode an argument (text with a lone surrogate, a value of the
            # wrong type): raised client-side as SQLSTATE 22000, the encoder's error as its
            # cause, before the statement ran. A server's 22xxx has no cause.
            return Fault.INVALID_VALUE
        state = getattr(error, "sqlstate", None)
        if isinstance(error, asyncpg.PostgresError) or isinstance(state, str):
            state = str(state or "")
            for prefix, fault in _FAULT_BY_STATE:
                if state.startswith(prefix):
                    return fault
            return Fault.DATABASE
        if isinstance(error, asyncpg.InterfaceError):
            # asyncpg's client-side DataError (a ValueError; its public name is taken by
            # SQLSTATE class 22) is raised before anything is sent: a value the column cannot
            # take. Every other interface error leaves the protocol where nobody may trust it.
            return Fault.INVALID_VALUE if isinstance(error, ValueError) else Fault.SESSION_ENDED
        if isinstance(error, OSError | asyncpg.exceptions.InternalClientError):
            return Fault.SESSION_ENDED
        return None

    def driver_error(self, error: DBAPIError) -> BaseException:
        # SQLAlchemy's asyncpg adapter raises its own DB-API classes from asyncpg's error.
        orig = error.orig
        cause = orig.__cause__ if isinstance(orig, BaseException) else None
        if cause is not None and isinstance(cause, asyncpg.PostgresError | asyncpg.InterfaceError):
            found: BaseException = cause
            return found
        return super().driver_error(error)

    async def ping(self, driver_connection: Any) -> None:
        await driver_connection.execute(";")

    def pgbouncer_url(self, url: URL) -> URL:
        if url.get_driver_name() != "asyncpg":
            return super().pgbouncer_url(url)
        return url.update_query_dict(PGBOUNCER_URL_QUERY)

    def pgbouncer_in_url(self, url: URL) -> bool:
        return behind_pgbouncer(url)

    def install_connection_hooks(self, engine: AsyncEngine, session: SessionOptions) -> None:
        super().install_connection_hooks(engine, session)
        dialect = engine.dialect
        if dialect.driver == "asyncpg":
            # SQLAlchemy's codec decodes each `json` value's bytes to str, then calls our
            # deserializer: one copy and two Python calls a value. SQLAlchemy documents this
            # method as one a third-party dialect overrides; this engine's dialect gets ours.
            dialect.setup_asyncpg_json_codec = _setup_json_codec  # type: ignore[attr-defined]

        @event.listens_for(engine.sync_engine, "handle_error")
        def _server_gone(context: ExceptionContext) -> None:
            # A primary shutting down answers new connections with 57P03 until it is gone
            # (tests/test_failover.py): a lost connection, not an error of the call.
            state = getattr(context.original_exception, "sqlstate", None)
            if isinstance(state, str) and state.startswith(_SERVER_GONE):
                context.is_disconnect = True

        translate = engine.get_execution_options().get("schema_translate_map") or {}
        schema = translate.get(None)
        if schema is None:
            return

        @event.listens_for(engine.sync_engine, "begin")
        def _search_path_for_this_transaction(conn: Connection) -> None:
            # Our statements are qualified already; this is for Alembic and the version
            # table, whose names are not. Transaction-local, so no server connection keeps it.
            if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
                return
            dbapi_connection = conn.connection.dbapi_connection
            if dbapi_connection is None or getattr(dbapi_connection, "autocommit", False):
                return
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(_SET_LOCAL_SEARCH_PATH, (schema,))
            finally:
                cursor.close()

    def has_native_executor(self, url: URL) -> bool:
        return url.get_driver_name() == "asyncpg"

    def native_executor(self, parts: ExecutorParts) -> Executor:
        from slack_agents_sa.executors.postgresql import PostgresExecutor

        # Behind PgBouncer with `schema`, the lane engine's schema_translate_map names it.
        engine = parts.lane_engine()
        return PostgresExecutor(engine, parts.statements(engine), self, parts.policy)

    def json_bytes(self, value: ColumnElement[Any]) -> ColumnElement[int]:
        return func.octet_length(cast(value, Text), type_=Integer)

    def database_bytes(self) -> Select[Any] | None:
        return select(func.pg_database_size(func.current_database()))

    def builtin_source(self, conn: AsyncConnection) -> BuiltinSource:
        from slack_agents_sa.backends.postgresql_source import PostgreSQLSource

        return PostgreSQLSource(conn)

    def _build_upsert(self, shape: UpsertShape) -> Insert:
        return on_conflict_upsert(postgresql.insert, *shape)

    def key_value_rows(
        self,
        table: Table,
        namespace: BindParameter[str],
        fields: Sequence[tuple[BindParameter[str], BindParameter[str]]],
    ) -> ColumnElement[bool]:
        """With string filters: the namespace's documents holding every wanted string, and
        those held as null, through `ix_<table>_query` (migration 0008; what it holds: the
        comment on the constants above)."""
        if not fields:
            return super().key_value_rows(table, namespace, fields)
        document = table.c.value
        document_text = cast(document, Text)
        strings = case(
            (
                (
                    (func.strpos(document_text, _ESCAPE) == _NOT_FOUND)
                    | document_text.op("!~", is_comparison=True)(_UNREADABLE_ESCAPE)
                )
                & (func.octet_length(document_text) <= _READABLE_BYTES),
                func.jsonb_path_query_array(
                    cast(document, JSONB), _TOP_LEVEL_STRINGS, _EMPTY_OBJECT, true(), type_=JSONB
                ),
            ),
            else_=_NOT_READ,
        )
        held = func.jsonb_set(
            _EMPTY_OBJECT, postgresql.array([cast(table.c.namespace, Text)]), strings, type_=JSONB
        )
        # The values only: a document holding each is a candidate whichever field holds it.
        wanted = func.jsonb_build_array(*(cast(value, Text) for _, value in fields))
        # The namespace is in the index's paths, so no `namespace = :ns` beside it: with one,
        # a generic plan (asyncpg prepares every statement) takes the average namespace for
        # the one asked and also reads a large one's btree (docs/dev/query-index.md).
        namespace_text = cast(namespace, Text)
        return held.contains(func.jsonb_build_object(namespace_text, wanted)) | held.contains(
            func.jsonb_build_object(namespace_text, null())
        )

    async def take_migration_lock(
        self, conn: AsyncConnection, lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S
    ) -> None:
        """A transaction-level advisory lock: it ends with the migration's transaction."""
        lock = f"PostgreSQL pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
        # lock_timeout bounds the wait (advisory locks included; 0 would mean forever) for
        # this one statement.
        await conn.execute(
            text("SELECT set_config('lock_timeout', :ms, true)"),
            {"ms": str(max(1, round(lock_timeout * 1000)))},
        )
        try:
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            raise lock_not_taken(lock, lock_timeout, timed_out=True) from error
        # The migration itself may rebuild large tables and wait on a host's locks: options
        # `statement_timeout` and `lock_timeout` are for calls, not for it.
        await conn.execute(text("SELECT set_config('lock_timeout', '0', true)"))
        await conn.execute(text("SELECT set_config('statement_timeout', '0', true)"))
