"""The databases tests run on: SQLite (file and memory) and servers named by environment variables.

A server test skips when its variable is unset, and fails when the variable is set but the
server cannot be reached: CI sets the variables, so CI never silently skips a database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

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

    @property
    def server_url(self) -> URL:
        """The configured server URL, or a skip saying which variable is unset."""
        assert self.env_var is not None
        raw = os.environ.get(self.env_var)
        if not raw:
            pytest.skip(f"{self.name} URL not set ({self.env_var})")
        url = normalize_url(raw)
        if self.driver is not None:
            url = normalize_url(
                url.set(drivername=f"{url.get_backend_name()}+{self.driver}").render_as_string(
                    hide_password=False
                )
            )
        return url


SQLITE_FILE = Backend("sqlite-file")
SQLITE_MEMORY = Backend("sqlite-memory")
POSTGRES = Backend("postgresql", POSTGRES_ENV)
MYSQL = Backend("mysql", MYSQL_ENV)
#: The same MySQL/MariaDB server through the other supported driver.
MYSQL_AIOMYSQL = Backend("mysql-aiomysql", MYSQL_ENV, driver="aiomysql")
ALL_BACKENDS = [SQLITE_FILE, SQLITE_MEMORY, POSTGRES, MYSQL, MYSQL_AIOMYSQL]
#: Backends whose data outlives a connection (migration and CLI tests need these).
PERSISTENT_BACKENDS = [SQLITE_FILE, POSTGRES, MYSQL]


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
