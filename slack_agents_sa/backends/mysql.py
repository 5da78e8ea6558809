"""MySQL/MariaDB: pre-ping, the packet-size check, ON DUPLICATE KEY upserts, GET_LOCK,
asyncmy lanes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import Insert, bindparam, event, func, text
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from slack_agents_sa.backends.base import (
    MIGRATION_LOCK_TIMEOUT_S,
    Backend,
    ExecutorParts,
    UpsertShape,
    lock_not_taken,
)
from slack_agents_sa.models import table_of

if TYPE_CHECKING:
    from slack_agents_sa.executors import Executor

#: Lock names are server-wide: ours adds the database's name (one lock per database, as
#: PostgreSQL's advisory locks are), cut to the 64 characters a name may have.
MIGRATION_LOCK_PREFIX = "slack_agents_sa_migrations:"
_GET_LOCK = text(
    "SELECT name, GET_LOCK(name, :timeout) "
    "FROM (SELECT LEFT(CONCAT(:prefix, DATABASE()), 64) AS name) AS migration_lock"
)
_RELEASE_LOCK = text("SELECT RELEASE_LOCK(LEFT(CONCAT(:prefix, DATABASE()), 64))")
#: ER_LOCK_DEADLOCK: InnoDB chose this transaction as a deadlock's victim and rolled it back.
DEADLOCK = 1213
#: Where a connection's max_allowed_packet is kept (its pool record's `info`).
_PACKET_LIMIT = "slack_agents_sa_max_allowed_packet"
#: Room for the protocol's framing and for quotes the driver escapes when it inlines values.
_PACKET_HEADROOM = 64 * 1024


class MySQL(Backend):
    """MySQL and MariaDB, through asyncmy or aiomysql."""

    family = "mysql"
    # The MySQL drivers cannot tell that a socket has closed without sending a command:
    # after a KILL or a server restart their next command fails, and SQLAlchemy's
    # autocommit switch at checkout is that command, raised raw and leaking the connection.
    # A ping first (one round trip) replaces it cleanly.
    needs_pre_ping = True

    def engine_options(
        self, url: URL, pool_options: dict[str, Any], schema: str | None
    ) -> dict[str, Any]:
        # Below the servers' default wait_timeout (8 h) and common proxies' idle limits.
        return {"pool_recycle": 3600, **pool_options}

    def install_connection_hooks(self, engine: AsyncEngine) -> None:
        """Refuse statements larger than the server's `max_allowed_packet` before sending.

        The server answers an oversized packet by dropping the connection ("server has gone
        away"), which says nothing about the cause; this says it, and nothing is sent.
        """
        super().install_connection_hooks(engine)
        _quiet_primary_key_name_notes()

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT @@max_allowed_packet")
            record.info[_PACKET_LIMIT] = int(cursor.fetchone()[0])
            cursor.close()

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _check_size(
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

    def driver_says_closed(self, driver_connection: Any) -> bool:
        connected = getattr(driver_connection, "connected", None)  # asyncmy
        if connected is False:
            return True
        return super().driver_says_closed(driver_connection)  # aiomysql's `closed`

    def is_retryable(self, error: DBAPIError) -> bool:
        # 1213 ER_LOCK_DEADLOCK: InnoDB rolled the whole transaction back.
        args: tuple[Any, ...] = getattr(error.orig, "args", ())
        return bool(args) and args[0] == DEADLOCK

    def has_native_executor(self, url: URL) -> bool:
        return url.get_driver_name() == "asyncmy"

    def native_executor(self, parts: ExecutorParts) -> Executor:
        from slack_agents_sa.executors.mysql import MySQLExecutor

        engine = parts.lane_engine()
        return MySQLExecutor(engine, parts.statements(engine), parts.lanes)

    def _build_upsert(self, shape: UpsertShape) -> Insert:
        # MySQL has no RETURNING: the id of the row comes back as the driver's lastrowid.
        model, columns, keys, update, _returning_id = shape
        table = table_of(model)
        stmt = mysql.insert(table).values(
            {name: bindparam(name, type_=table.c[name].type) for name in columns}
        )
        set_: dict[str, Any] = {name: stmt.inserted[name] for name in update}
        if "id" in table.c:
            # LAST_INSERT_ID(id) makes the driver's lastrowid the existing row's id.
            set_["id"] = func.last_insert_id(table.c.id)
        upserted: Insert = stmt.on_duplicate_key_update(set_ or {keys[0]: table.c[keys[0]]})
        return upserted

    async def take_migration_lock(
        self, conn: AsyncConnection, lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S
    ) -> None:
        """GET_LOCK, held by the session until `release_migration_lock` (after COMMIT)."""
        values = {"prefix": MIGRATION_LOCK_PREFIX, "timeout": lock_timeout}
        name, got = (await conn.execute(_GET_LOCK, values)).one()
        if got != 1:  # 0: timed out; NULL: an error (the wait was killed, out of memory)
            name = name.decode() if isinstance(name, bytes) else name
            lock = f"MySQL/MariaDB GET_LOCK('{name}')"
            raise lock_not_taken(lock, lock_timeout, timed_out=got == 0)

    async def release_migration_lock(self, conn: AsyncConnection) -> None:
        await conn.execute(_RELEASE_LOCK, {"prefix": MIGRATION_LOCK_PREFIX})


def statement_size(statement: str, parameters: Any) -> int:
    """Bytes a statement with its (dict or sequence of) values takes on the wire, near
    enough to compare with `max_allowed_packet`."""
    return _utf8_size(statement) + _parameters_size(parameters)


def packet_too_large(size: int, limit: int) -> ValueError | None:
    """The error for a statement of `size` bytes on a server with this packet limit, if any."""
    if size <= limit - _PACKET_HEADROOM:
        return None
    return ValueError(
        f"value too large for this server: the statement takes {size} bytes and "
        f"MySQL/MariaDB's max_allowed_packet is {limit} bytes (raise it on the server)"
    )


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


class _PrimaryKeyNameNote(logging.Filter):
    """Drops MariaDB's note that it ignores primary-key names, which our naming convention
    gives every table: asyncmy logs it once per table when migrations create them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "ignored for PRIMARY key" not in record.getMessage()


def _quiet_primary_key_name_notes() -> None:
    logger = logging.getLogger("asyncmy")
    if not any(isinstance(existing, _PrimaryKeyNameNote) for existing in logger.filters):
        logger.addFilter(_PrimaryKeyNameNote())
