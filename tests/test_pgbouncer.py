"""PostgreSQL behind PgBouncer in transaction pooling (option `pgbouncer`), both executors.

The conformance suite runs through PgBouncer too (tests/databases.py, `PGBOUNCER_MODULES`);
here: that the option is what makes it work (without it, prepared statements land on the
wrong server connection), concurrent workloads, the `schema` option (qualified names, no
search_path at connect), and the migration lock across replicas behind PgBouncer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from slack_agents_sa import Provider
from slack_agents_sa.backends import SessionOptions, backend_for
from slack_agents_sa.backends.postgresql import behind_pgbouncer
from slack_agents_sa.database import make_engine
from slack_agents_sa.errors import ConfigError, MigrationLockError
from slack_agents_sa.migrate import VERSION_TABLE, head_revisions, run_locked
from slack_agents_sa.settings import ProviderSettings, normalize_url
from tests.admin import admin_rows
from tests.databases import (
    POSTGRES,
    create_scratch_database,
    drop_scratch_database,
    opened_provider,
)
from tests.pgbouncer import PgBouncer

EXECUTORS = pytest.mark.parametrize(
    "executor",
    [
        pytest.param("native", marks=pytest.mark.native),
        pytest.param("sqlalchemy", marks=pytest.mark.sqlalchemy),
    ],
)
#: Concurrent tasks of the workloads (more than the provider's lanes and pool).
TASKS = 16


@pytest.fixture
async def direct_url() -> AsyncIterator[URL]:
    """A brand-new empty database on the PostgreSQL server (no tables), dropped afterwards."""
    server = POSTGRES.server_url
    url = await create_scratch_database(server)
    try:
        yield url
    finally:
        await drop_scratch_database(server, url)


@pytest.fixture
def migrated_url(server_databases: dict[Any, URL]) -> URL:
    """The run's migrated PostgreSQL scratch database (direct URL); made outside the loop."""
    return server_databases[POSTGRES]


def _through(bouncer: PgBouncer, url: URL) -> str:
    return bouncer.url_for(url).render_as_string(hide_password=False)


async def _key_value_workload(storage: Provider, rounds: int = 20) -> None:
    """TASKS tasks, each writing, reading back and deleting its own keys, at once."""
    prefix = f"ns-{uuid.uuid4().hex[:8]}-"

    async def one(task: int) -> None:
        for n in range(rounds):
            await storage.set(f"{prefix}{task}", f"k{n}", {"task": task, "n": n})
            assert await storage.get(f"{prefix}{task}", f"k{n}") == {"task": task, "n": n}
        assert len(await storage.query(f"{prefix}{task}", {})) == rounds
        for n in range(0, rounds, 2):
            await storage.delete(f"{prefix}{task}", f"k{n}")
        assert len(await storage.query(f"{prefix}{task}", {})) == rounds // 2

    await asyncio.gather(*(one(task) for task in range(TASKS)))


async def _conversation_workload(storage: Provider) -> None:
    """TASKS conversations written at once: messages and their blocks, read back in order."""

    agent = f"agent-{uuid.uuid4().hex[:8]}"  # the run's database is shared: new threads

    async def one(task: int) -> None:
        conversation = await storage.get_or_create_conversation(agent, "C1", f"{task}.0", "general")
        for n in range(5):
            message = await storage.create_message(conversation, "U1", "user", "user")
            await storage.append_text_block(message, f"message {n} of {task}", is_user=True)
        history = await storage.get_message_blocks(conversation)
        texts = [blocks[0]["content"]["text"] for _, blocks in history]
        assert texts == [f"message {n} of {task}" for n in range(5)]

    await asyncio.gather(*(one(task) for task in range(TASKS)))


def test_the_option_is_for_asyncpg_and_puts_the_caches_off_in_the_url() -> None:
    settings = ProviderSettings.from_options({"url": "postgresql://u@h/db", "pgbouncer": True})
    assert settings.url.query["statement_cache_size"] == "0"
    assert settings.url.query["prepared_statement_cache_size"] == "0"
    assert behind_pgbouncer(settings.url)
    assert not behind_pgbouncer(ProviderSettings.from_options({"url": "postgresql://u@h/db"}).url)
    for url in ("sqlite:///x.db", "mysql://u@h/db"):
        with pytest.raises(ConfigError, match="option 'pgbouncer' is for postgresql"):
            ProviderSettings.from_options({"url": url, "pgbouncer": True})


def test_schema_behind_pgbouncer_qualifies_names_instead_of_a_search_path() -> None:
    url = normalize_url(
        "postgresql://u@h/db?statement_cache_size=0&prepared_statement_cache_size=0"
    )
    behind = SessionOptions(schema="tenant", pgbouncer=True)
    options = backend_for(url).engine_options(url, {}, behind)
    assert options["connect_args"] == {"statement_cache_size": 0}
    assert options["execution_options"] == {"schema_translate_map": {None: "tenant"}}
    direct = backend_for(url).engine_options(
        normalize_url("postgresql://u@h/db"), {}, SessionOptions(schema="tenant")
    )
    assert direct == {"connect_args": {"server_settings": {"search_path": "tenant"}}}


def test_pgbouncer_false_is_direct_mode_whatever_the_url_carries() -> None:
    """Only the option decides: the query parameters PgBouncer mode adds, written in the URL
    by hand, leave `pgbouncer: false` in direct mode (a search_path, timeouts allowed)."""
    url = "postgresql://u@h/db?statement_cache_size=0&prepared_statement_cache_size=0"
    settings = ProviderSettings.from_options({"url": url, "schema": "tenant", "lock_timeout": 2})
    session = settings.session_options()
    assert session.pgbouncer is False
    options = backend_for(settings.url).engine_options(settings.url, {}, session)
    server_settings = options["connect_args"]["server_settings"]
    assert server_settings == {"search_path": "tenant", "lock_timeout": "2000"}
    assert "execution_options" not in options  # no schema_translate_map: direct mode


@EXECUTORS
async def test_without_the_option_prepared_statements_break_behind_pgbouncer(
    pgbouncer: PgBouncer, migrated_url: URL, executor: str
) -> None:
    """What the option is for: asyncpg's named statements, prepared on one server connection,
    are looked for on another."""
    url = _through(pgbouncer, migrated_url)
    async with opened_provider(url, executor=executor) as storage:
        with pytest.raises(DBAPIError, match=r"prepared statement .* does not exist"):
            for _ in range(20):
                await _key_value_workload(storage, rounds=5)


@EXECUTORS
async def test_concurrent_workloads_through_pgbouncer(
    pgbouncer: PgBouncer, migrated_url: URL, executor: str
) -> None:
    url = _through(pgbouncer, migrated_url)
    async with opened_provider(url, executor=executor, pgbouncer=True) as storage:
        assert storage.db.executor_kind == executor
        await _key_value_workload(storage)
        await _conversation_workload(storage)


@EXECUTORS
async def test_schema_option_through_pgbouncer(
    pgbouncer: PgBouncer, direct_url: URL, executor: str
) -> None:
    """Migrated through PgBouncer into the schema, our tables and version table there only;
    a second provider (migrate: false) finds it at head; data apart from another schema's."""
    url = _through(pgbouncer, direct_url)
    options = {"executor": executor, "pgbouncer": True}
    async with opened_provider(url, schema="tenant_a", **options) as tenant_a:
        await tenant_a.set("ns", "k", {"who": "a"})
        await _key_value_workload(tenant_a, rounds=4)
        await _conversation_workload(tenant_a)
        async with opened_provider(url, schema="tenant_b", **options) as tenant_b:
            assert await tenant_b.get("ns", "k") is None
            await tenant_b.set("ns", "k", {"who": "b"})
        async with opened_provider(url, schema="tenant_a", migrate=False, **options) as again:
            assert await again.get("ns", "k") == {"who": "a"}
    tables = await admin_rows(
        direct_url,
        "SELECT table_schema, count(*) FROM information_schema.tables "
        "WHERE table_name LIKE 'agents%' OR table_name = :version GROUP BY table_schema",
        version=VERSION_TABLE,
    )
    counts = dict(tables)
    assert set(counts) == {"tenant_a", "tenant_b"}  # nothing in public
    assert counts["tenant_a"] == counts["tenant_b"]
    versions = await admin_rows(direct_url, f"SELECT version_num FROM tenant_a.{VERSION_TABLE}")
    assert {version for (version,) in versions} == head_revisions()
    rows = await admin_rows(direct_url, "SELECT count(*) FROM tenant_b.agents_kv_entries")
    assert rows == [(1,)]


@EXECUTORS
async def test_two_migrators_racing_through_pgbouncer_migrate_once(
    pgbouncer: PgBouncer, direct_url: URL, executor: str
) -> None:
    url = _through(pgbouncer, direct_url)
    providers = [Provider(url=url, executor=executor, pgbouncer=True) for _ in range(2)]
    try:
        await asyncio.gather(*(storage.initialize() for storage in providers))
        for n, storage in enumerate(providers):
            await storage.set("migrators", f"m{n}", {"ok": True})
        versions = await admin_rows(direct_url, f"SELECT version_num FROM {VERSION_TABLE}")
        assert sorted(version for (version,) in versions) == sorted(head_revisions())
    finally:
        for storage in providers:
            await storage.close()


async def test_the_migration_lock_holds_across_clients_of_pgbouncer(
    pgbouncer: PgBouncer, direct_url: URL
) -> None:
    """One migrator holds the transaction-level lock through PgBouncer: another, on another
    client connection of PgBouncer, waits and times out, and runs nothing unlocked."""
    url = normalize_url(_through(pgbouncer, direct_url))
    url = ProviderSettings(url=url, pgbouncer=True).url
    holder, other = make_engine(url), make_engine(url)
    ran: list[Any] = []
    try:
        async with backend_for(url).migration_transaction(holder) as conn:
            # The lock is held on a server connection PgBouncer pinned to this transaction.
            # Advisory locks belong to a database: other tests' (other workers') are not ours.
            locks = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                )
            )
            assert locks.scalar() == 1
            with pytest.raises(MigrationLockError, match="timed out after 1 s"):
                await run_locked(other, ran.append, None, lock_timeout=1)
            assert ran == []
        # Released: it takes the lock (held, it would fail after its 1 s); 120 s is a hang.
        await asyncio.wait_for(run_locked(other, ran.append, None, lock_timeout=1), 120)
        assert len(ran) == 1
    finally:
        await holder.dispose()
        await other.dispose()
