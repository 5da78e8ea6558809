"""Fixtures that pick the database: every test body taking `provider` runs on each backend.

`fresh_url` (and so `provider`) runs on every backend of `tests.databases.ALL_BACKENDS`,
the ones with a native executor twice: natively (ids `sqlite-file`, `postgresql`, `mysql`)
and on SQLAlchemy's path (`...-sqlalchemy`). A test that builds its own provider passes
`provider_options` (`Provider(url=fresh_url, **provider_options)`), which carries the
backend's `executor`. Select by path with `-k native` / `-k sqlalchemy` (markers).

The conformance modules (`tests.databases.PGBOUNCER_MODULES`) also run on the PgBouncer
backends (`-k pgbouncer`) and on throwaway servers the run starts itself: PostgreSQL 18
(`-k postgresql-18`, fixture `pg18`) and a 3-node MariaDB Galera cluster (`-k galera`,
fixture `galera`), each started once, on first use, and stopped at the end of the run.
`fresh_url` is parametrized with them too (`tests.databases.CONFORMANCE_ONLY_BACKENDS`),
and `pytest_collection_modifyitems` deselects those items in every other module.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy.engine import URL

from slack_agents_sa import Provider
from tests.databases import (
    ALL_BACKENDS,
    CONFORMANCE_ONLY_BACKENDS,
    PERSISTENT_BACKENDS,
    PGBOUNCER_MODULES,
    POSTGRES,
    THROWAWAY_SERVER_FIXTURES,
    Backend,
    backend_params,
    brand_new_database,
    create_scratch_database,
    drop_scratch_database,
    empty_all_tables,
    opened_provider,
)
from tests.galera_cluster import GaleraCluster, GaleraUnavailable
from tests.pg18 import Pg18, Pg18Unavailable
from tests.pgbouncer import PgBouncer, PgBouncerUnavailable

#: The `alone` marker (tests/alone.py).
pytest_plugins = ["tests.alone"]

#: Set by .ci/run: a skipped test is a failure there.
STRICT_ENV = "SLACK_AGENTS_SA_STRICT"
#: How long a Galera node may take to apply a DDL statement another node ran (seconds).
GALERA_APPLY_S = 30
#: Modules whose module-scoped fixtures start a server of their own (TLS).
MODULE_SERVER_MODULES = frozenset({"test_tls", "test_mysql_tls"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "native: the providers run on a native executor")
    config.addinivalue_line("markers", "sqlalchemy: the providers run on SQLAlchemy's path")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get(STRICT_ENV) == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under {STRICT_ENV}=1, which forbids skips: {reason}"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the `xdist_group` marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PgBouncer and throwaway-server backends run the conformance modules only (CI
    time): deselect the rest. Under pytest-xdist (`--dist loadgroup`), the tests of one
    throwaway server, and of a module with a costly module-scoped fixture, go to one worker,
    so each is started once per run."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backends = [] if callspec is None else list(callspec.params.values())
        only_conformance = any(isinstance(b, Backend) and b.conformance_only for b in backends)
        module = item.path.stem
        (dropped if only_conformance and module not in PGBOUNCER_MODULES else kept).append(item)
        group = _worker_group(item, backends)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _worker_group(item: pytest.Item, params: list[object]) -> str | None:
    """The xdist group `item` must share a worker with, if any: its throwaway server's
    fixture name, or its module's when the module starts a server of its own."""
    for param in params:
        if isinstance(param, Backend) and param.server_fixture is not None:
            return param.server_fixture
    for fixture in THROWAWAY_SERVER_FIXTURES:
        if fixture in getattr(item, "fixturenames", ()):
            return fixture
    if item.path.stem in MODULE_SERVER_MODULES:
        return item.path.stem
    return None


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """A PgBouncer (transaction pooling) in front of the test PostgreSQL, for the whole run.

    Skips without the PostgreSQL URL or without pgbouncer; under SLACK_AGENTS_SA_STRICT=1
    (CI) a pgbouncer that cannot start fails every test that needs it instead.
    """
    server = POSTGRES.server_url
    try:
        bouncer = PgBouncer.start(server)
    except PgBouncerUnavailable as error:
        _cannot_start("pgbouncer", error)
    try:
        yield bouncer
    finally:
        bouncer.stop()


def _cannot_start(what: str, error: Exception) -> NoReturn:
    """Skip the tests needing `what`; under SLACK_AGENTS_SA_STRICT=1 (CI) fail them."""
    if os.environ.get(STRICT_ENV) == "1":
        pytest.fail(f"cannot start {what} under {STRICT_ENV}=1: {error}")
    pytest.skip(f"cannot start {what}: {error}")


def _report_start(config: pytest.Config, what: str, seconds: float) -> None:
    """Say how long a throwaway server took to start (past the output capture)."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if terminal is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(f"\n{what} started in {seconds:.1f} s")


@pytest.fixture(scope="session")
def pg18(pytestconfig: pytest.Config) -> Iterator[Pg18]:
    """A throwaway PostgreSQL 18 (tests/pg18.py) for the whole run, started on first use."""
    started = time.monotonic()
    try:
        server = Pg18.start()
    except Pg18Unavailable as error:
        _cannot_start("PostgreSQL 18", error)
    _report_start(pytestconfig, server.version, time.monotonic() - started)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def galera(pytestconfig: pytest.Config) -> Iterator[GaleraCluster]:
    """A throwaway 3-node MariaDB Galera cluster (tests/galera_cluster.py) for the whole run,
    started on first use; its `url` is node 1's."""
    started = time.monotonic()
    try:
        cluster = GaleraCluster.start()
    except GaleraUnavailable as error:
        _cannot_start("a Galera cluster", error)
    _report_start(pytestconfig, "Galera cluster (3 nodes)", time.monotonic() - started)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def galera_database(galera: GaleraCluster) -> AsyncIterator[list[str]]:
    """A new, empty database on the Galera cluster: its URL on each node, in node order."""
    first = await create_scratch_database(galera.url)
    try:
        await _seen_on_every_node(galera, first.database or "")
        yield [
            url.set(database=first.database).render_as_string(hide_password=False)
            for url in galera.urls()
        ]
    finally:
        await drop_scratch_database(galera.url, first)


async def _seen_on_every_node(galera: GaleraCluster, database: str) -> None:
    """Wait until each node has applied the CREATE DATABASE: the node that ran it answers
    first, and a connection naming the database on another node just after may find it
    unknown (MariaDB 1049)."""
    deadline = time.monotonic() + GALERA_APPLY_S
    for node in galera.nodes:
        while not galera.sql(
            node, f"SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{database}'"
        ).strip():
            assert time.monotonic() < deadline, f"{database} not applied on node {node.number}"
            await asyncio.sleep(0.05)


def server_url_of(backend: Backend, request: pytest.FixtureRequest) -> URL:
    """`backend`'s server URL: its variable's, or (a throwaway server) that of the server its
    fixture started, starting it now if this is its first use."""
    if backend.server_fixture is None:
        return backend.server_url
    server: Pg18 | GaleraCluster = request.getfixturevalue(backend.server_fixture)
    return backend.on_driver(server.url)


@pytest.fixture(scope="session")
def server_databases() -> Iterator[_LazyDatabases]:
    """One migrated scratch database per server and driver, made on first use, for the whole
    run: the twins of a backend (its `-sqlalchemy` twin) share it.

    `databases[backend]` for a server named by a variable; `databases.on(backend, server)`
    for any (a throwaway server's URL comes from its fixture: `server_url_of`)."""
    made: dict[tuple[str | None, str | None], tuple[URL, URL]] = {}
    databases = _LazyDatabases(made)
    try:
        yield databases
    finally:
        for backend_key, (server, url) in made.items():
            # A throwaway server's databases go with it (its fixture may be gone already).
            if backend_key[0] not in THROWAWAY_SERVER_FIXTURES:
                asyncio.run(drop_scratch_database(server, url))


class _LazyDatabases(dict[Backend, URL]):
    """Creates (and remembers for dropping) a server's scratch database when first asked."""

    def __init__(self, made: dict[tuple[str | None, str | None], tuple[URL, URL]]) -> None:
        super().__init__()
        self._made = made

    def __missing__(self, backend: Backend) -> URL:
        return self.on(backend, backend.server_url)

    def on(self, backend: Backend, server: URL) -> URL:
        """`backend`'s scratch database, made on `server` (its server URL) if not yet."""
        if backend in self:
            return self[backend]
        key = backend.server_key
        if key not in self._made:
            url = asyncio.run(create_scratch_database(server))
            self._made[key] = (server, url)
            asyncio.run(_migrate(url))
        url = self._made[key][1]
        self[backend] = url
        return url


async def _migrate(url: URL) -> None:
    storage = Provider(url=url.render_as_string(hide_password=False))
    await storage.initialize()
    await storage.close()


@pytest.fixture(params=backend_params(ALL_BACKENDS + CONFORMANCE_ONLY_BACKENDS))
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database of each backend (migrated already for servers); behind
    PgBouncer, the URL through it (the database is made and emptied directly)."""
    backend: Backend = request.param
    if backend.storage == "file":
        return f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}"
    if backend.storage == "memory":
        return "sqlite+aiosqlite:///:memory:"
    server = server_url_of(backend, request)
    databases: _LazyDatabases = request.getfixturevalue("server_databases")
    url = databases.on(backend, server)
    asyncio.run(empty_all_tables(url))
    if backend.pgbouncer:
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        url = bouncer.url_for(url)
    return url.render_as_string(hide_password=False)


def parametrized_backend(request: pytest.FixtureRequest) -> Backend | None:
    """The backend this test runs on (a `Backend` parameter of any fixture), if any."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None:
        return None
    found = [value for value in callspec.params.values() if isinstance(value, Backend)]
    assert len(found) <= 1, f"a test on two backends at once: {found}"
    return found[0] if found else None


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """The backend of this test's `fresh_url` / `empty_url` (or other backend parameter)."""
    found = parametrized_backend(request)
    assert found is not None, "`backend` needs a fixture parametrized by backend"
    return found


@pytest.fixture
def provider_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The options every provider of this test takes: its backend's `executor`."""
    found = parametrized_backend(request)
    return {} if found is None else found.options


@pytest.fixture
async def provider(fresh_url: str, provider_options: dict[str, Any]) -> AsyncIterator[Provider]:
    """An initialized provider on an empty, migrated database of each backend."""
    async with opened_provider(fresh_url, **provider_options) as storage:
        yield storage


@pytest.fixture(params=backend_params(PERSISTENT_BACKENDS))
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a brand-new empty database (no tables at all) of each persistent backend.

    On the default executor only: its tests are about migrations and the CLI, which do not
    take the executor's path (a module overrides it where that matters: test_concurrency).
    """
    async with brand_new_database(request.param, tmp_path) as url:
        yield url
