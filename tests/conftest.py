"""Fixtures that pick the database: every test body taking `provider` runs on each backend."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from slack_agents_sa import Provider
from tests.databases import (
    ALL_BACKENDS,
    PERSISTENT_BACKENDS,
    SQLITE_FILE,
    SQLITE_MEMORY,
    Backend,
    create_scratch_database,
    drop_scratch_database,
    empty_all_tables,
    opened_provider,
    scratch_database,
)

#: Set by .ci/run: a skipped test is a failure there.
STRICT_ENV = "SLACK_AGENTS_SA_STRICT"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get(STRICT_ENV) == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under {STRICT_ENV}=1, which forbids skips: {reason}"


@pytest.fixture(scope="session")
def server_databases() -> Iterator[dict[Backend, URL]]:
    """One migrated scratch database per server backend, made on first use, for the whole run."""
    made: dict[Backend, tuple[URL, URL]] = {}
    databases: dict[Backend, URL] = _LazyDatabases(made)
    try:
        yield databases
    finally:
        for server, url in made.values():
            asyncio.run(drop_scratch_database(server, url))


class _LazyDatabases(dict[Backend, URL]):
    """Creates (and remembers for dropping) a server's scratch database when first asked."""

    def __init__(self, made: dict[Backend, tuple[URL, URL]]) -> None:
        super().__init__()
        self._made = made

    def __missing__(self, backend: Backend) -> URL:
        server = backend.server_url
        url = asyncio.run(create_scratch_database(server))
        self._made[backend] = (server, url)
        asyncio.run(_migrate(url))
        self[backend] = url
        return url


async def _migrate(url: URL) -> None:
    storage = Provider(url=url.render_as_string(hide_password=False))
    await storage.initialize()
    await storage.close()


@pytest.fixture(params=ALL_BACKENDS, ids=lambda backend: backend.name)
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of each backend (migrated already for servers)."""
    backend: Backend = request.param
    if backend is SQLITE_FILE:
        return f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}"
    if backend is SQLITE_MEMORY:
        return "sqlite+aiosqlite:///:memory:"
    url: URL = request.getfixturevalue("server_databases")[backend]
    asyncio.run(empty_all_tables(url))
    return url.render_as_string(hide_password=False)


@pytest.fixture
async def provider(fresh_url: str) -> AsyncIterator[Provider]:
    """An initialized provider on an empty, migrated database of each backend."""
    async with opened_provider(fresh_url) as storage:
        yield storage


@pytest.fixture(params=PERSISTENT_BACKENDS, ids=lambda backend: backend.name)
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a brand-new empty database (no tables at all) of each persistent backend."""
    backend: Backend = request.param
    if backend is SQLITE_FILE:
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    async with scratch_database(backend) as url:
        yield url
