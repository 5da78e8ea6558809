"""MySQL/MariaDB: pre-ping, the packet-size check, ON DUPLICATE KEY upserts, GET_LOCK,
asyncmy lanes."""

from __future__ import annotations

import functools
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Integer,
    Select,
    Table,
    bindparam,
    column,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy import table as sql_table
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from slack_agents_sa.backends.base import (
    Backend,
    ExecutorParts,
    SessionOptions,
    UpsertShape,
)
from slack_agents_sa.backends.connect import Connect
from slack_agents_sa.backends.host_list import comma_hosts_as_query, hosts_in_query
from slack_agents_sa.backends.migration_steps import (
    MIGRATION_LOCK_TIMEOUT_S,
    lock_not_taken,
)
from slack_agents_sa.backends.mysql_lease import LEASE_TABLE, drop_lease, take_lease
from slack_agents_sa.backends.search import MySQLSearch
from slack_agents_sa.executors.base import Fault
from slack_agents_sa.executors.packets import packet_too_large, parameters_size, utf8_size
from slack_agents_sa.models import table_of

if TYPE_CHECKING:
    from slack_agents_sa.executors import Executor

#: information_schema.tables, for the database's size.
_INFORMATION_SCHEMA_TABLES = sql_table(
    "tables",
    column("table_schema"),
    column("data_length"),
    column("index_length"),
    schema="information_schema",
)

#: Lock names are server-wide: ours adds the database's name (one lock per database, as
#: PostgreSQL's advisory locks are), cut to the 64 characters a name may have.
MIGRATION_LOCK_PREFIX = "slack_agents_sa_migrations:"
_log = logging.getLogger(__name__)
#: MySQL's default port, for a host of a comma list that names none.
DEFAULT_PORT = 3306
#: Where a migration connection keeps the lease it holds (`conn.info`).
_LEASE = "slack_agents_sa_lease"
_GET_LOCK = text(
    "SELECT name, GET_LOCK(name, :timeout) "
    "FROM (SELECT LEFT(CONCAT(:prefix, DATABASE()), 64) AS name) AS migration_lock"
)
_RELEASE_LOCK = text("SELECT RELEASE_LOCK(LEFT(CONCAT(:prefix, DATABASE()), 64))")
#: ER_LOCK_DEADLOCK: InnoDB chose this transaction as a deadlock's victim and rolled it back
#: (Galera's certification conflicts report it too).
DEADLOCK = 1213
#: Error codes and what each means for the call. The session ends with SQLAlchemy's
#: `MySQLDialect.is_disconnect` list (server gone away, lost during query, out of sync,
#: killed, idle timeout). A statement stops at MariaDB's max_statement_time (1969), MySQL's
#: MAX_EXECUTION_TIME (3024) or a KILL QUERY (1317); 1205 is innodb_lock_wait_timeout.
_FAULT_BY_CODE: dict[int, Fault] = {
    **dict.fromkeys((1927, 2006, 2013, 2014, 2045, 2055, 4031), Fault.SESSION_ENDED),
    **dict.fromkeys((1969, 3024, 1317), Fault.STATEMENT_TIMEOUT),
    1205: Fault.LOCK_TIMEOUT,
    DEADLOCK: Fault.CONFLICT,
}
#: Where a connection's max_allowed_packet is kept (its pool record's `info`).
_PACKET_LIMIT = "slack_agents_sa_max_allowed_packet"
#: Where a connection's statement-time setting is kept, to restore after a migration.
_STATEMENT_TIME = "slack_agents_sa_statement_time"


@functools.cache
def _insert_after_insert(table: Table, column: str) -> Insert:
    """LAST_INSERT_ID(): the first id this connection's previous INSERT generated (built
    once: building a statement costs more than running it)."""
    return insert(table).values({column: func.last_insert_id()})


class MySQL(Backend):
    """MySQL and MariaDB, through asyncmy or aiomysql."""

    family = "mysql"
    # The MySQL drivers cannot tell that a socket has closed without sending a command:
    # after a KILL or a server restart their next command fails, and SQLAlchemy's
    # autocommit switch at checkout is that command, raised raw and leaking the connection.
    # A ping first (one round trip) replaces it cleanly.
    needs_pre_ping = True
    # Below the servers' default wait_timeout (8 h) and common proxies' idle limits.
    default_pool_recycle = 3600
    connect_drivers = frozenset({"asyncmy", "aiomysql"})
    text_search = MySQLSearch()

    def url_text(self, raw: str) -> str:
        return comma_hosts_as_query(raw, DEFAULT_PORT)

    def driver_url(self, url: URL) -> URL:
        # The hosts of a list are the connect wrapper's (`driver_connect`), not the driver's.
        return super().driver_url(url).difference_update_query(["host"])

    def connect_servers(self, url: URL) -> str | None:
        hosts = hosts_in_query(url, DEFAULT_PORT)
        return ", ".join(f"{host}:{port}" for host, port in hosts) if hosts else None

    def driver_connect(self, url: URL) -> Connect | None:
        """The driver's connect, trying each host of a host list in order (a Galera cluster's
        nodes: the first that accepts serves), and for aiomysql with an `ssl.SSLContext`
        made from the URL's `ssl_*` options, which SQLAlchemy hands it as a dict (asyncmy
        takes the dict)."""
        connect = super().driver_connect(url)
        if connect is None:
            return None
        plain: Connect = connect
        hosts = hosts_in_query(url, DEFAULT_PORT)
        with_context = url.get_driver_name() == "aiomysql"
        if not hosts and not with_context:
            return plain

        async def connect_in_order(*args: Any, **kwargs: Any) -> Any:
            if with_context and isinstance(kwargs.get("ssl"), dict):
                kwargs["ssl"] = _tls_context(kwargs["ssl"])
            for host, port in hosts[:-1]:
                try:
                    return await plain(*args, **{**kwargs, "host": host, "port": port})
                except Exception as error:
                    _log.info("slack_agents_sa: %s:%s refused a connection: %s", host, port, error)
            if hosts:
                kwargs = {**kwargs, "host": hosts[-1][0], "port": hosts[-1][1]}
            return await plain(*args, **kwargs)

        return connect_in_order

    def checked_url(self, url: URL) -> URL:
        # Connections default to the server's character set, which may not hold emoji.
        charset = url.query.get("charset", "utf8mb4")
        if charset != "utf8mb4":
            raise ValueError(f"charset={charset!r} cannot hold all Unicode; use utf8mb4")
        return url.update_query_dict({"charset": "utf8mb4"})

    def engine_options(
        self, url: URL, pool_options: dict[str, Any], session: SessionOptions
    ) -> dict[str, Any]:
        return {"pool_recycle": self.default_pool_recycle, **pool_options}

    def check_session_options(self, url: URL, session: SessionOptions) -> None:
        return None

    def install_connection_hooks(self, engine: AsyncEngine, session: SessionOptions) -> None:
        """Refuse statements larger than the server's `max_allowed_packet` before sending;
        set the session's timeouts when connecting.

        The server answers an oversized packet by dropping the connection ("server has gone
        away"), which says nothing about the cause; this says it, and nothing is sent.
        """
        super().install_connection_hooks(engine, session)
        _quiet_primary_key_name_notes()

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT @@max_allowed_packet, VERSION()")
            limit, version = cursor.fetchone()
            record.info[_PACKET_LIMIT] = int(limit)
            for statement, value in _session_settings(str(version), session):
                cursor.execute(statement, (value,))
                if statement.startswith(_STATEMENT_TIME_SETTERS):
                    record.info[_STATEMENT_TIME] = (statement, value)
            if session.read_your_writes is not False:
                # A Galera node answers reads from what it has applied so far, which may lag
                # another node's commit: wait for the cluster's commits before each read.
                cursor.execute("SHOW VARIABLES LIKE 'wsrep_on'")
                found = cursor.fetchone()
                if found is not None and str(found[1]).upper() == "ON":
                    cursor.execute("SET SESSION wsrep_sync_wait = 1")
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
            size = utf8_size(statement) + sum(parameters_size(row) for row in rows)
            if (error := packet_too_large(size, limit)) is not None:
                raise error

    def driver_says_closed(self, driver_connection: Any) -> bool:
        """asyncmy sets `connected` to False only when a command fails; its
        `_stream_broken` (what asyncmy's own pool checks) is true as soon as the event loop
        has seen the server close the socket (KILL, restart, idle timeout), so a lane killed
        while idle is replaced without a round trip. aiomysql has `closed`."""
        if getattr(driver_connection, "connected", None) is False:
            return True
        if getattr(driver_connection, "_stream_broken", False):
            return True
        return super().driver_says_closed(driver_connection)

    def fault_of(self, error: BaseException) -> Fault | None:
        names = {kind.__name__ for kind in type(error).__mro__}
        if "InterfaceError" in names and "Error" in names:  # not connected, socket gone
            return Fault.SESSION_ENDED
        code = error.args[0] if error.args else None
        if "Error" in names and isinstance(code, int) and code in _FAULT_BY_CODE:
            return _FAULT_BY_CODE[code]
        return super().fault_of(error)

    async def ping(self, driver_connection: Any) -> None:
        await driver_connection.ping(reconnect=False)

    def has_native_executor(self, url: URL) -> bool:
        return url.get_driver_name() == "asyncmy"

    def native_executor(self, parts: ExecutorParts) -> Executor:
        from slack_agents_sa.executors.mysql import MySQLExecutor

        engine = parts.lane_engine()
        return MySQLExecutor(engine, parts.statements(engine), self, parts.policy)

    def json_bytes(self, value: ColumnElement[Any]) -> ColumnElement[int]:
        # LENGTH counts bytes of the LONGTEXT (CHAR_LENGTH would count characters).
        return func.length(value, type_=Integer)

    def database_bytes(self) -> Select[Any] | None:
        # InnoDB's own estimate; MySQL 8 caches it (information_schema_stats_expiry, a day
        # by default), MariaDB does not.
        tables = _INFORMATION_SCHEMA_TABLES.c
        return select(func.sum(tables.data_length + tables.index_length)).where(
            tables.table_schema == func.database()
        )

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

    def insert_after_insert(self, table: Table, column: str) -> Insert:
        return _insert_after_insert(table, column)

    async def take_migration_lock(
        self, conn: AsyncConnection, lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S
    ) -> None:
        """GET_LOCK (this server's migrators queue there), then the lease row that holds
        across a Galera cluster (`mysql_lease`); both kept until `release_migration_lock`,
        after COMMIT."""
        started = time.monotonic()
        values = {"prefix": MIGRATION_LOCK_PREFIX, "timeout": lock_timeout}
        name, got = (await conn.execute(_GET_LOCK, values)).one()
        if got != 1:  # 0: timed out; NULL: an error (the wait was killed, out of memory)
            name = name.decode() if isinstance(name, bytes) else name
            lock = f"MySQL/MariaDB GET_LOCK('{name}')"
            raise lock_not_taken(lock, lock_timeout, timed_out=got == 0)
        left = max(0.0, lock_timeout - (time.monotonic() - started))
        lease = await take_lease(conn.engine, left, self._worth_retrying)
        if lease is None:
            await conn.execute(_RELEASE_LOCK, {"prefix": MIGRATION_LOCK_PREFIX})
            raise lock_not_taken(f"the lease row of {LEASE_TABLE}", lock_timeout, timed_out=True)
        conn.info[_LEASE] = lease

    def _worth_retrying(self, error: BaseException) -> bool:
        """A deadlock or Galera certification conflict, or a lock wait that timed out."""
        return self.fault_of(error) in (Fault.CONFLICT, Fault.LOCK_TIMEOUT)

    async def release_migration_lock(self, conn: AsyncConnection) -> None:
        lease = conn.info.pop(_LEASE, None)
        try:
            if lease is not None:
                await drop_lease(lease)
        finally:
            await conn.execute(_RELEASE_LOCK, {"prefix": MIGRATION_LOCK_PREFIX})

    async def before_migration(self, conn: AsyncConnection) -> None:
        # A migration may rebuild a large table: option `statement_timeout` is for calls.
        found = conn.info.get(_STATEMENT_TIME)
        if found is not None:
            statement, _value = found
            await conn.run_sync(_set_session, statement, 0)

    async def after_migration(self, conn: AsyncConnection) -> None:
        found = conn.info.get(_STATEMENT_TIME)
        if found is not None:
            statement, value = found
            await conn.run_sync(_set_session, statement, value)


def _set_session(conn: Connection, statement: str, value: Any) -> None:
    """A session SET on the driver's connection, past SQLAlchemy's transaction handling:
    `exec_driver_sql` would autobegin, and `migration_transaction`'s BEGIN then fails."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(statement, (value,))
    finally:
        cursor.close()


#: The statements that set a session's statement time limit (MariaDB's, MySQL's).
_STATEMENT_TIME_SETTERS = ("SET SESSION max_statement_time", "SET SESSION MAX_EXECUTION_TIME")


def _session_settings(version: str, session: SessionOptions) -> list[tuple[str, Any]]:
    """The SET statements (with their one value) for `session` on a server of `version`.

    MariaDB stops any statement past `max_statement_time` (seconds); MySQL's
    `MAX_EXECUTION_TIME` (milliseconds) applies to read-only SELECTs only.
    `innodb_lock_wait_timeout` takes whole seconds, at least 1.
    """
    found: list[tuple[str, Any]] = []
    if session.statement_timeout is not None:
        if "mariadb" in version.lower():
            found.append(("SET SESSION max_statement_time = %s", session.statement_timeout))
        else:
            found.append(
                (
                    "SET SESSION MAX_EXECUTION_TIME = %s",
                    max(1, round(session.statement_timeout * 1000)),
                )
            )
    if session.lock_timeout is not None:
        found.append(
            ("SET SESSION innodb_lock_wait_timeout = %s", max(1, round(session.lock_timeout)))
        )
    return found


class _PrimaryKeyNameNote(logging.Filter):
    """Drops MariaDB's note that it ignores primary-key names, which our naming convention
    gives every table: asyncmy logs it once per table when migrations create them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "ignored for PRIMARY key" not in record.getMessage()


def _quiet_primary_key_name_notes() -> None:
    logger = logging.getLogger("asyncmy")
    if not any(isinstance(existing, _PrimaryKeyNameNote) for existing in logger.filters):
        logger.addFilter(_PrimaryKeyNameNote())


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    """A TLS context from SQLAlchemy's MySQL `ssl` dict, as asyncmy makes one: with a CA
    the certificate and (unless `check_hostname` is false) the host name are checked."""
    has_ca = "ca" in options or "capath" in options
    context = ssl.create_default_context(cafile=options.get("ca"), capath=options.get("capath"))
    context.check_hostname = has_ca and bool(options.get("check_hostname", True))
    context.verify_mode = ssl.CERT_REQUIRED if has_ca else ssl.CERT_NONE
    if "cert" in options:
        context.load_cert_chain(options["cert"], keyfile=options.get("key"))
    if "cipher" in options:
        context.set_ciphers(options["cipher"])
    return context
