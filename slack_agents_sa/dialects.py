"""The only place that knows one database from another: connection set-up, upserts, locks.

Everything else builds portable statements and asks here for what differs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Text,
    bindparam,
    case,
    cast,
    event,
    exists,
    func,
    text,
    true,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.schema import CreateSchema

from slack_agents_sa.errors import MigrationError, MigrationLockError
from slack_agents_sa.models import Base, table_of

#: SQLite: how long a writer waits for another's lock before "database is locked" (ms).
SQLITE_BUSY_TIMEOUT_MS = 30_000
# PRAGMA takes no bound parameters: the one statement we spell with a number in it.
_SQLITE_BUSY_TIMEOUT_PRAGMA = "PRAGMA busy_timeout = 30000"
#: Execution option marking a connection whose statements each commit on their own.
AUTOCOMMIT_OPTION = "slack_agents_sa_autocommit"
#: Execution option: SQLite transactions on this connection take the write lock at BEGIN
#: (migrations; a host app's writing session may set it too). Others BEGIN deferred.
WRITE_LOCK_OPTION = "slack_agents_sa_write_lock"
#: Arbitrary, stable key for PostgreSQL's advisory lock around migrations.
_PG_MIGRATION_LOCK_KEY = 0x51AC_A6E5
#: MySQL/MariaDB lock names are server-wide: ours adds the database's name (one lock per
#: database, as PostgreSQL's advisory locks are), cut to the 64 characters a name may have.
_MYSQL_MIGRATION_LOCK = "slack_agents_sa_migrations:"
#: How long a migrator waits for another's migration lock before giving up (seconds;
#: PostgreSQL and MySQL/MariaDB. SQLite's lock is its write lock: busy_timeout applies).
MIGRATION_LOCK_TIMEOUT_S = 600.0


def backend(dialect_name: str) -> str:
    """Fold dialect names to the backend family: 'mariadb' behaves as 'mysql' here."""
    return "mysql" if dialect_name in ("mysql", "mariadb") else dialect_name


def engine_options(
    url: URL, pool_options: dict[str, Any], schema: str | None = None
) -> dict[str, Any]:
    """Extra `create_async_engine` arguments a backend needs.

    `schema` (PostgreSQL) becomes every connection's search_path, so unqualified names,
    ours and Alembic's alike, resolve there; `ensure_schema` creates it.
    """
    if schema is not None:
        if url.get_backend_name() != "postgresql":
            raise ValueError(f"a schema is supported on PostgreSQL only, not {url.drivername}")
        options = dict(pool_options)
        options["connect_args"] = {"server_settings": {"search_path": schema}}
        return options
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:"):
            # One shared connection (StaticPool): pool sizing does not apply.
            return {}
        return dict(pool_options)
    if backend(url.get_backend_name()) == "mysql":
        return {"pool_recycle": 3600, **pool_options}
    return dict(pool_options)


def needs_pre_ping(url: URL) -> bool:
    """Whether pooled connections must be pinged at checkout to notice a server-side close.

    asyncpg sees its socket close by itself (`_install_closed_connection_check` asks it, no
    round trip). The MySQL drivers do not: after a KILL or a server restart their next
    command fails, and SQLAlchemy's autocommit switch at checkout is that command, raised
    raw and leaking the connection. A ping first (one round trip) replaces it cleanly.
    """
    return backend(url.get_backend_name()) == "mysql"


def install_connection_hooks(engine: AsyncEngine) -> None:
    """Register per-connection set-up: SQLite pragmas and transaction control, MySQL limits."""
    if backend(engine.dialect.name) == "mysql":
        _install_mysql_hooks(engine)
    if engine.dialect.name != "sqlite":
        _install_closed_connection_check(engine)
        return
    sync_engine = engine.sync_engine
    is_file = (engine.url.database or "") not in ("", ":memory:")

    @event.listens_for(sync_engine, "connect")
    def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control from the sqlite3 module, so BEGIN is ours (see _sqlite_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(_SQLITE_BUSY_TIMEOUT_PRAGMA)
        if is_file:
            # WAL: readers never block the writer; NORMAL sync is durable across app crashes
            # and loses at most the last commits on power loss (SQLite's documented trade-off).
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _sqlite_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get(AUTOCOMMIT_OPTION):
            return  # each statement commits by itself
        if options.get(WRITE_LOCK_OPTION):
            # IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout
            # instead of one failing when it upgrades a read lock.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            return
        # Deferred: a reader (a host app's AsyncSession on our engine) takes no write lock,
        # so other processes keep writing while its transaction is open. The provider's own
        # writes lock up front in `sqlite_transaction`, migrations through WRITE_LOCK_OPTION.
        connection.exec_driver_sql("BEGIN")


def _install_closed_connection_check(engine: AsyncEngine) -> None:
    """Swap a pooled connection the server has closed for a fresh one at checkout.

    After a server restart or `pg_terminate_backend`, the driver has already seen the
    socket close; asking it costs no round trip (unlike `pool_pre_ping`). The pool
    retries the checkout with a new connection, so the next call just works.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _drop_closed(_dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        if _driver_says_closed(record.driver_connection):
            raise DisconnectionError("connection closed by the server")


def _driver_says_closed(driver_connection: Any) -> bool:
    is_closed = getattr(driver_connection, "is_closed", None)  # asyncpg
    if callable(is_closed):
        return bool(is_closed())
    closed = getattr(driver_connection, "closed", None)  # aiomysql
    if isinstance(closed, bool):
        return closed
    connected = getattr(driver_connection, "connected", None)  # asyncmy
    return connected is False


def _install_mysql_hooks(engine: AsyncEngine) -> None:
    """Refuse statements larger than the server's `max_allowed_packet` before sending them.

    The server answers an oversized packet by dropping the connection ("server has gone
    away"), which says nothing about the cause; this says it, and nothing is sent.
    """
    sync_engine = engine.sync_engine
    _quiet_primary_key_name_notes()

    @event.listens_for(sync_engine, "connect")
    def _mysql_on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT @@max_allowed_packet")
        record.info[_PACKET_LIMIT] = int(cursor.fetchone()[0])
        cursor.close()

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _mysql_check_size(
        conn: Connection,
        _cursor: Any,
        statement: str,
        parameters: Any,
        _context: Any,
        executemany: bool,
    ) -> None:
        limit = conn.info.get(_PACKET_LIMIT)
        if limit is None:
            return
        rows = parameters if executemany else [parameters]
        size = _utf8_size(statement) + sum(_parameters_size(row) for row in rows)
        if (error := packet_too_large(size, limit)) is not None:
            raise error


class _PrimaryKeyNameNote(logging.Filter):
    """Drops MariaDB's note that it ignores primary-key names, which our naming convention
    gives every table: asyncmy logs it once per table when migrations create them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "ignored for PRIMARY key" not in record.getMessage()


def _quiet_primary_key_name_notes() -> None:
    logger = logging.getLogger("asyncmy")
    if not any(isinstance(existing, _PrimaryKeyNameNote) for existing in logger.filters):
        logger.addFilter(_PrimaryKeyNameNote())


_PACKET_LIMIT = "slack_agents_sa_max_allowed_packet"
#: Room for the protocol's framing and for quotes the driver escapes when it inlines values.
_PACKET_HEADROOM = 64 * 1024


def _utf8_size(text_value: str) -> int:
    return len(text_value) if text_value.isascii() else len(text_value.encode("utf-8"))


def _parameters_size(parameters: Any) -> int:
    values = parameters.values() if isinstance(parameters, dict) else parameters or ()
    size = 0
    for value in values:
        if isinstance(value, str):
            size += _utf8_size(value)
        elif isinstance(value, bytes | bytearray):
            size += len(value)
    return size


def statement_size(statement: str, parameters: Any) -> int:
    """Bytes a MySQL statement with its (dict or sequence of) values takes on the wire,
    near enough to compare with `max_allowed_packet` (see `_install_mysql_hooks`)."""
    return _utf8_size(statement) + _parameters_size(parameters)


def packet_too_large(size: int, limit: int) -> ValueError | None:
    """The error for a statement of `size` bytes on a server with this packet limit, if any."""
    if size <= limit - _PACKET_HEADROOM:
        return None
    return ValueError(
        f"value too large for this server: the statement takes {size} bytes and "
        f"MySQL/MariaDB's max_allowed_packet is {limit} bytes (raise it on the server)"
    )


def shares_one_connection(dialect_name: str) -> bool:
    """Whether a provider serves every call from one connection (SQLite; see Database.open)."""
    return dialect_name == "sqlite"


@asynccontextmanager
async def sqlite_transaction(conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    """BEGIN IMMEDIATE ... COMMIT on SQLite's shared autocommit connection, ROLLBACK on error.

    The connection is in autocommit mode (the sqlite3 module manages no transactions), so
    these statements are the transaction. IMMEDIATE takes the write lock up front.
    """
    if await conn.run_sync(_in_sqlite_transaction):
        # A call cancelled mid-ROLLBACK left one open: end it before starting anew.
        await conn.exec_driver_sql("ROLLBACK")
    await conn.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        await conn.exec_driver_sql("ROLLBACK")
        raise
    await conn.exec_driver_sql("COMMIT")


def _in_sqlite_transaction(conn: Connection) -> bool:
    return bool(conn.connection.driver_connection.in_transaction)  # type: ignore[union-attr]


def autocommit_options(dialect_name: str) -> dict[str, Any]:
    """Execution options for a connection where every statement is its own transaction.

    One statement is atomic by itself, so single-statement calls skip BEGIN/COMMIT
    round trips.
    """
    if dialect_name == "sqlite":
        return {AUTOCOMMIT_OPTION: True}
    return {"isolation_level": "AUTOCOMMIT"}


@cache
def upsert(
    dialect_name: str,
    model: type[Base],
    columns: tuple[str, ...],
    keys: tuple[str, ...],
    update: tuple[str, ...],
    returning_id: bool = False,
) -> Insert:
    """INSERT the `columns` (bound by name at execution), or when a row with the same `keys`
    exists, UPDATE its `update` columns to the new values (an empty `update` leaves the
    row as it is but still touches it). With `returning_id`, the statement returns the
    row's `id` where the dialect can (see `upsert_returning_id`).

    Built once per shape and reused: statement construction and cache-key generation
    would otherwise cost more than the round trip on a hot path.
    """
    table = table_of(model)
    values = {name: bindparam(name, type_=table.c[name].type) for name in columns}
    family = backend(dialect_name)
    if family in ("postgresql", "sqlite"):
        stmt = (postgresql.insert if family == "postgresql" else sqlite.insert)(table)
        stmt = stmt.values(values)
        set_ = {name: stmt.excluded[name] for name in update}
        # A no-op update rather than DO NOTHING, so RETURNING reports an existing row too.
        set_ = set_ or {keys[0]: stmt.excluded[keys[0]]}
        upserted = stmt.on_conflict_do_update(index_elements=list(keys), set_=set_)
        return upserted.returning(table.c.id) if returning_id else upserted
    if family == "mysql":
        my_stmt = mysql.insert(table).values(values)
        my_set: dict[str, Any] = {name: my_stmt.inserted[name] for name in update}
        if "id" in table.c:
            # LAST_INSERT_ID(id) makes the driver's lastrowid the existing row's id.
            my_set["id"] = func.last_insert_id(table.c.id)
        return my_stmt.on_duplicate_key_update(my_set or {keys[0]: table.c[keys[0]]})
    raise NotImplementedError(f"no upsert for dialect {dialect_name!r}")


async def upsert_returning_id(
    conn: AsyncConnection,
    model: type[Base],
    values: dict[str, Any],
    keys: tuple[str, ...],
    update: tuple[str, ...],
) -> int:
    """`upsert` `values`, returning the inserted or existing row's `id` in the same round trip."""
    stmt = upsert(conn.dialect.name, model, tuple(values), keys, update, returning_id=True)
    result = await conn.execute(stmt, values)
    if backend(conn.dialect.name) == "mysql":
        return int(result.lastrowid)
    return int(result.scalar_one())


def supports_insert_ctes(dialect_name: str) -> bool:
    """Whether an INSERT ... RETURNING can feed another INSERT in one statement (a CTE)."""
    return backend(dialect_name) == "postgresql"


#: The start of a JSON `\uXXXX` escape, as it appears in the stored text.
_JSON_ESCAPE = "\\u"


def json_field_is_text(
    dialect_name: str,
    document: ColumnElement[Any] | InstrumentedAttribute[Any],
    field: str,
    value: str,
) -> ColumnElement[bool] | None:
    """SQL true when the JSON object `document` may have top-level `field` equal to the
    string `value`; None where the dialect has no safe way to say it.

    A pre-filter only (callers still compare in Python): it lets the database skip rows
    without decoding them. `field` is a bound parameter compared as data, never put into
    a JSON path, so no field name can reach another field.
    """
    family = backend(dialect_name)
    if family == "postgresql":
        # PostgreSQL's JSON functions fail the whole statement on a document holding
        # `\u0000` or a lone surrogate escape anywhere (legal data: `dump_json` writes both),
        # so such documents skip the pre-filter; CASE evaluates only the branch it takes.
        # Our JSON text has a `\u` escape only for those, other control characters and
        # documents written in ASCII: a cheap test that lets a few rows through unfiltered.
        may_poison = func.strpos(cast(document, Text), _JSON_ESCAPE) > 0
        return case(
            (may_poison, true()),
            else_=func.json_extract_path_text(document, field) == value,
        )
    if family == "sqlite":
        members = func.json_each(document).table_valued("key", "value", "type")
        return exists().where(
            members.c.key == field, members.c.type == "text", members.c.value == value
        )
    return None


async def ensure_schema(conn: AsyncConnection, schema: str | None) -> None:
    """Create `schema` if it does not exist yet (before migrating into it)."""
    if schema is not None:
        await conn.execute(CreateSchema(schema, if_not_exists=True))


@asynccontextmanager
async def migration_transaction(
    engine: AsyncEngine, schema: str | None = None, lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S
) -> AsyncIterator[AsyncConnection]:
    """One transaction for a migration run, holding the migration lock: commits on success.

    SQLite: foreign keys are off for the run, because a batch migration copies a table and
    drops the old one, and with them on that DROP deletes or nulls every row referring to it
    (ON DELETE CASCADE / SET NULL) without a word. `PRAGMA foreign_key_check` must then find
    nothing before COMMIT, and they are on again before the connection returns to the pool.
    """
    async with engine.connect() as conn:
        await conn.execution_options(**{WRITE_LOCK_OPTION: True})
        is_sqlite = conn.dialect.name == "sqlite"
        if is_sqlite:
            # SQLite ignores this pragma inside a transaction: set it before BEGIN.
            await conn.run_sync(_sqlite_pragma, "PRAGMA foreign_keys = OFF")
        try:
            async with conn.begin():
                await take_migration_lock(conn, lock_timeout)
                await ensure_schema(conn, schema)
                yield conn
                await conn.run_sync(check_foreign_keys)
        finally:
            # Released after COMMIT (MySQL's lock belongs to the session): a migrator taking
            # it before our COMMIT would read the old version table and migrate again.
            await _end_migration(conn, is_sqlite)


async def _end_migration(conn: AsyncConnection, is_sqlite: bool) -> None:
    try:
        await release_migration_lock(conn)
        if is_sqlite:
            await conn.run_sync(_sqlite_pragma, "PRAGMA foreign_keys = ON")
    except BaseException:
        # Never pool a connection that may still hold the lock or have foreign keys off.
        await conn.invalidate()
        raise


def _sqlite_pragma(conn: Connection, statement: str) -> None:
    """Run a PRAGMA on the driver's connection, past SQLAlchemy's transaction handling (which
    would BEGIN first: `foreign_keys` does nothing inside a transaction)."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


def sqlite_foreign_keys_on(conn: Connection) -> bool:
    """Whether `conn` is SQLite enforcing foreign keys (servers always do, and need no switch)."""
    if conn.dialect.name != "sqlite":
        return False
    return bool(conn.exec_driver_sql("PRAGMA foreign_keys").scalar())


def check_foreign_keys(conn: Connection) -> None:
    """SQLite: raise `MigrationError` if a row refers to a missing row (a migration run with
    foreign keys off must not leave one behind). Elsewhere the server checked as it went."""
    if conn.dialect.name != "sqlite":
        return
    problems = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if not problems:
        return
    counts = Counter((str(table), str(parent)) for table, _rowid, parent, _fk in problems)
    found = "; ".join(
        f"{count} row(s) of {table} refer to missing rows of {parent}"
        for (table, parent), count in sorted(counts.items())
    )
    raise MigrationError(
        f"migration rolled back: foreign key check failed after it ran: {found} "
        "(PRAGMA foreign_key_check lists them)"
    )


_MYSQL_GET_LOCK = text(
    "SELECT name, GET_LOCK(name, :timeout) "
    "FROM (SELECT LEFT(CONCAT(:prefix, DATABASE()), 64) AS name) AS migration_lock"
)
_MYSQL_RELEASE_LOCK = text("SELECT RELEASE_LOCK(LEFT(CONCAT(:prefix, DATABASE()), 64))")


async def take_migration_lock(
    conn: AsyncConnection, lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S
) -> None:
    """Serialise concurrent migrators on one database; raise `MigrationLockError` after
    waiting `lock_timeout` seconds for another's lock (rather than migrate unlocked).

    PostgreSQL's lock ends with `conn`'s transaction; MySQL's with `release_migration_lock`.
    SQLite needs nothing: the migration transaction's BEGIN IMMEDIATE already is that lock.
    """
    family = backend(conn.dialect.name)
    if family == "postgresql":
        await _take_postgresql_lock(conn, lock_timeout)
    elif family == "mysql":
        name, got = (
            await conn.execute(
                _MYSQL_GET_LOCK, {"prefix": _MYSQL_MIGRATION_LOCK, "timeout": lock_timeout}
            )
        ).one()
        if got != 1:  # 0: timed out; NULL: an error (the wait was killed, out of memory)
            name = name.decode() if isinstance(name, bytes) else name
            lock = f"MySQL/MariaDB GET_LOCK('{name}')"
            raise _lock_not_taken(lock, lock_timeout, timed_out=got == 0)


def _lock_not_taken(lock: str, lock_timeout: float, timed_out: bool) -> MigrationLockError:
    why = f"timed out after {lock_timeout:g} s" if timed_out else "was refused by the server"
    return MigrationLockError(
        f"the migration lock ({lock}) {why}: another migrator may still be running. "
        "Nothing was migrated; retry once it has finished",
        lock=lock,
        timeout=lock_timeout,
    )


async def _take_postgresql_lock(conn: AsyncConnection, lock_timeout: float) -> None:
    lock = f"PostgreSQL pg_advisory_xact_lock({_PG_MIGRATION_LOCK_KEY})"
    # PostgreSQL's lock_timeout bounds the wait (advisory locks included; 0 would mean
    # forever) for this one statement.
    await conn.execute(
        text("SELECT set_config('lock_timeout', :ms, true)"),
        {"ms": str(max(1, round(lock_timeout * 1000)))},
    )
    try:
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
        )
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) != "55P03":  # lock_not_available
            raise
        raise _lock_not_taken(lock, lock_timeout, timed_out=True) from error
    await conn.execute(text("SET LOCAL lock_timeout TO DEFAULT"))


async def release_migration_lock(conn: AsyncConnection) -> None:
    """Release what `take_migration_lock` took where the transaction's end does not."""
    if backend(conn.dialect.name) == "mysql":
        await conn.execute(_MYSQL_RELEASE_LOCK, {"prefix": _MYSQL_MIGRATION_LOCK})


def native_executor_name(url: URL) -> str | None:
    """Which native executor serves `url` ("postgresql", "sqlite", "mysql"), None if none.

    In-memory SQLite has none: its data lives in one connection, which a worker thread's
    own connection cannot see.
    """
    backend_name, driver = url.get_backend_name(), url.get_driver_name()
    if backend_name == "postgresql" and driver == "asyncpg":
        return "postgresql"
    if backend_name == "sqlite" and (url.database or "") not in ("", ":memory:"):
        # The worker's sqlite3.connect takes the path only: URL options (uri, mode, timeout)
        # would be ignored there, so such URLs keep SQLAlchemy's path.
        return None if url.query else "sqlite"
    if backend(backend_name) == "mysql" and driver == "asyncmy":
        return "mysql"
    return None


def native_executor(
    url: URL, chosen: str | None, lanes: int, dialect: Any, lane_engine: Any, echo: bool
) -> Any:
    """The native executor for `url`, or None for SQLAlchemy's path (`executor` option)."""
    name = native_executor_name(url)
    if chosen == "sqlalchemy" or name is None:
        return None
    from slack_agents_sa.executors.compiled import StatementCache

    statements = StatementCache(dialect, echo=echo)
    if name == "postgresql":
        from slack_agents_sa.executors.postgresql import PostgresExecutor

        return PostgresExecutor(lane_engine(), statements, lanes)
    if name == "sqlite":
        from slack_agents_sa.executors.sqlite import SQLiteExecutor

        return SQLiteExecutor(url.database or "", statements)
    if name == "mysql":
        from slack_agents_sa.executors.mysql import MySQLExecutor

        return MySQLExecutor(lane_engine(), statements, lanes)
    return None
