"""Migrations never lose rows, never run unlocked, and start-up at head takes no lock.

- SQLite: a migration that rebuilds a parent table keeps the rows referring to it
  (foreign keys off for the run), and one that leaves a dangling reference is rolled back.
- The migration lock held elsewhere past the timeout: `MigrationLockError`, nothing run.
- At head, start-up reads and goes, even while another migrator holds the lock; behind
  head, it waits for the lock, then migrates.
- SQLite: a host app's read transaction on our engine does not hold the write lock.
- The indexes that deletes of blocks follow exist after migration.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from slack_agents.conversations import ConversationManager
from sqlalchemy import delete, func, inspect, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.backends import backend_for
from slack_agents_sa.backends.postgresql import MIGRATION_LOCK_KEY
from slack_agents_sa.database import make_engine
from slack_agents_sa.errors import MigrationError, MigrationLockError
from slack_agents_sa.migrate import (
    current_revisions,
    downgrade,
    run_locked,
    run_our_migrations,
    upgrade,
)
from slack_agents_sa.models import Block, Conversation
from slack_agents_sa.settings import normalize_url
from tests.agent_turns import drive_conversation
from tests.databases import (
    MYSQL,
    MYSQL_AIOMYSQL,
    POSTGRES,
    SQLITE_FILE,
    SQLITE_MEMORY,
    Backend,
    opened_provider,
    scratch_database,
)
from tests.releases import NewerRelease, revision_source

HEAD = "0009"
PERSISTENT = [SQLITE_FILE, POSTGRES, MYSQL, MYSQL_AIOMYSQL]
SERVERS = [POSTGRES, MYSQL, MYSQL_AIOMYSQL]
#: A migrator or start-up not done after this many seconds is hung (a busy machine is
#: slow, not hung). One waiting for a lock held elsewhere would wait 10 minutes on a server
#: (MIGRATION_LOCK_TIMEOUT_S) or fail after SQLite's 30 s busy timeout: this still tells.
HANG_S = 120

#: Adds a column to agents_messages; on SQLite by copying the table and dropping the old
#: one (what Alembic's batch mode does for most changes there).
REBUILD_MESSAGES = """
recreate = "always" if op.get_bind().dialect.name == "sqlite" else "auto"
with op.batch_alter_table("agents_messages", recreate=recreate) as batch:
    batch.add_column(sa.Column("note", sa.Text(), nullable=True))
"""
#: Leaves a block whose message does not exist.
DANGLING_BLOCK = """
op.execute(
    sa.text(
        "INSERT INTO agents_blocks (message_id, block_type, in_history, created_at) "
        "VALUES (999999, 'text', :yes, CURRENT_TIMESTAMP)"
    ).bindparams(yes=True)
)
"""


@asynccontextmanager
async def _new_database(backend: Backend, tmp_path: Path) -> AsyncIterator[str]:
    if backend is SQLITE_FILE:
        yield f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}"
    elif backend is SQLITE_MEMORY:
        yield "sqlite+aiosqlite:///:memory:"
    else:
        async with scratch_database(backend) as url:
            yield url


@pytest.fixture(params=[*PERSISTENT, SQLITE_MEMORY], ids=lambda backend: backend.name)
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Provider]:
    """A provider on a new database of each backend (schema changes stay in the test)."""
    async with _new_database(request.param, tmp_path) as url, opened_provider(url) as provider:
        yield provider


@pytest.fixture(params=PERSISTENT, ids=lambda backend: backend.name)
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a new, empty database of each persistent backend."""
    async with _new_database(request.param, tmp_path) as made:
        yield made


async def _on(engine: AsyncEngine, probe: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.run_sync(probe)


async def _at(url: str, revision: str) -> AsyncEngine:
    """An engine on `url`, the database migrated to `revision`."""
    engine = make_engine(normalize_url(url))
    await upgrade(engine, revision)
    return engine


# --- SQLite's foreign keys during migrations -----------------------------------------------


async def test_rebuilding_a_parent_table_keeps_the_rows_referring_to_it(
    storage: Provider, tmp_path: Path
) -> None:
    conversation_id = await drive_conversation(ConversationManager(storage))
    before = await storage.get_messages_with_blocks(conversation_id)
    assert sum(len(message["blocks"]) for message in before) >= 10
    engine = storage.db.engine
    rebuild = revision_source("9001", HEAD, REBUILD_MESSAGES)
    await NewerRelease(tmp_path / "release", {"9001_rebuild": rebuild}).upgrade(engine)

    assert await _on(engine, current_revisions) == {"9001"}
    assert await storage.get_messages_with_blocks(conversation_id) == before
    call = await storage.get_tool_call("toolu_weather_1")
    assert call is not None and call["tool_name"] == "get_weather"

    # Foreign keys are enforced again on every pooled connection: deleting the conversation
    # takes its messages, blocks and tool calls with it.
    async with AsyncExitStack() as stack:
        idle = getattr(engine.sync_engine.pool, "checkedin", lambda: 1)()  # StaticPool: one
        for _ in range(idle):
            conn = await stack.enter_async_context(engine.connect())
            if conn.dialect.name == "sqlite":
                assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    async with engine.begin() as conn:
        await conn.execute(delete(Conversation).where(Conversation.id == int(conversation_id)))
    assert await storage.get_messages_with_blocks(conversation_id) == []
    assert await storage.get_tool_call("toolu_weather_1") is None
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(Block))).scalar() == 0


async def test_a_migration_leaving_a_dangling_reference_is_rolled_back(
    storage: Provider, tmp_path: Path
) -> None:
    engine = storage.db.engine
    broken = NewerRelease(
        tmp_path / "release", {"9002_broken": revision_source("9002", HEAD, DANGLING_BLOCK)}
    )
    if storage.db.dialect_name == "sqlite":  # foreign keys off: the final check catches it
        message = r"1 row\(s\) of agents_blocks refer to missing rows of agents_messages"
        expected: Any = pytest.raises(MigrationError, match=message)
    else:  # the server checks every statement
        expected = pytest.raises(IntegrityError)
    with expected:
        await broken.upgrade(engine)

    assert await _on(engine, current_revisions) == {HEAD}
    async with engine.connect() as conn:
        dangling = select(func.count()).select_from(Block).where(Block.message_id == 999999)
        assert (await conn.execute(dangling)).scalar() == 0


async def test_host_env_on_sqlite_needs_foreign_keys_off_and_gets_the_check(
    tmp_path: Path,
) -> None:
    refused, dangling = (f"sqlite+aiosqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    for url in (refused, dangling):
        await (await _at(url, "0003")).dispose()

    # Our engine's connections enforce foreign keys, inside a transaction already: refused
    # before anything runs.
    ours = make_engine(normalize_url(refused))
    try:
        with pytest.raises(MigrationError, match="need foreign keys off"):
            async with ours.begin() as conn:
                await conn.run_sync(run_our_migrations)
        assert await _on(ours, current_revisions) == {"0003"}
        assert "ix_agents_blocks_source_file_id" not in await _on(ours, _block_indexes)
    finally:
        await ours.dispose()
    # A plain engine (a host env.py's): foreign keys off, as SQLite has them by default.
    await _run_our_migrations_plainly(refused)
    assert await _run_our_migrations_plainly(refused, current_revisions) == {HEAD}

    # The run ends with the foreign key check (this row was there before; it fails all the same).
    plain = create_async_engine(dangling)
    try:
        async with plain.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO agents_blocks (message_id, block_type, in_history, created_at) "
                    "VALUES (999999, 'text', 1, CURRENT_TIMESTAMP)"
                )
            )
    finally:
        await plain.dispose()
    with pytest.raises(MigrationError, match="agents_blocks refer to missing rows"):
        await _run_our_migrations_plainly(dangling)
    assert await _run_our_migrations_plainly(dangling, current_revisions) == {"0003"}


async def _run_our_migrations_plainly(url: str, step: Any = run_our_migrations) -> Any:
    plain = create_async_engine(url)
    try:
        async with plain.begin() as conn:
            return await conn.run_sync(step)
    finally:
        await plain.dispose()


# --- SQLite: who takes the write lock --------------------------------------------------------


def _write_from_another_process(path: str) -> None:
    """What another process does: a plain sqlite3 write that gives up after 2 s."""
    other = sqlite3.connect(path, timeout=2)
    try:
        other.execute("INSERT INTO agents_heartbeats VALUES ('elsewhere', 1.5)")
        other.commit()
    finally:
        other.close()


async def test_a_host_read_transaction_on_our_engine_leaves_writers_free(tmp_path: Path) -> None:
    path = tmp_path / "agents.db"
    storage = Provider(url=f"sqlite+aiosqlite:///{path}")
    await storage.initialize()
    try:
        async with AsyncSession(storage.db.engine) as session:
            counted = await session.execute(select(func.count()).select_from(Conversation))
            assert counted.scalar() == 0
            assert session.in_transaction()  # and holding its read snapshot
            await asyncio.to_thread(_write_from_another_process, str(path))
            await storage.upsert_heartbeat("mine", 2.5)  # the provider's own write
            await session.commit()
        assert await storage.get_heartbeat("elsewhere") == {"last_ping_pong_time": 1.5}
        assert await storage.get_heartbeat("mine") == {"last_ping_pong_time": 2.5}
    finally:
        await storage.close()


# --- The migration lock ----------------------------------------------------------------------


@asynccontextmanager
async def _migration_lock_held_elsewhere(url: str) -> AsyncIterator[None]:
    """Another migrator holding the lock: SQLite's write lock, PostgreSQL's advisory lock,
    MySQL's named lock, each on a connection of its own."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        holder = sqlite3.connect(str(parsed.database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_async_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            if parsed.get_backend_name() == "postgresql":
                key = {"key": MIGRATION_LOCK_KEY}
                await conn.execute(text("SELECT pg_advisory_lock(:key)"), key)
                try:
                    yield
                finally:
                    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), key)
            else:  # one lock per database (lock names are server-wide)
                name = {"name": f"slack_agents_sa_migrations:{parsed.database}"}
                assert await conn.scalar(text("SELECT GET_LOCK(:name, 0)"), name) == 1
                try:
                    yield
                finally:
                    await conn.execute(text("SELECT RELEASE_LOCK(:name)"), name)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", SERVERS, ids=lambda backend: backend.name)
async def test_migration_lock_held_elsewhere_fails_after_the_timeout(backend: Backend) -> None:
    async with scratch_database(backend) as url:
        await _lock_times_out(backend, url)


async def _lock_times_out(backend: Backend, url: str) -> None:
    engine = make_engine(normalize_url(url))
    ran: list[Connection] = []
    try:
        async with _migration_lock_held_elsewhere(url):
            async with engine.begin() as conn:
                with pytest.raises(MigrationLockError, match="timed out after 1 s") as failed:
                    await backend_for(conn.dialect.name).take_migration_lock(conn, lock_timeout=1)
            assert failed.value.timeout == 1
            lock = "pg_advisory" if backend is POSTGRES else f"migrations:{make_url(url).database}"
            assert lock in failed.value.lock and lock in str(failed.value)
            with pytest.raises(MigrationLockError):
                await run_locked(engine, ran.append, None, lock_timeout=1)
            assert ran == []  # the step never ran unlocked
        # Released: the next migrator takes it (held, it would fail after its 1 s).
        await asyncio.wait_for(run_locked(engine, ran.append, None, lock_timeout=1), HANG_S)
        assert len(ran) == 1
    finally:
        await engine.dispose()


async def test_start_up_at_head_takes_no_migration_lock(url: str) -> None:
    await (await _at(url, "head")).dispose()
    async with _migration_lock_held_elsewhere(url):
        for migrate in (True, False):
            storage = Provider(url=url, migrate=migrate)
            await asyncio.wait_for(storage.initialize(), HANG_S)
            try:
                assert not await storage.has_conversation("helper", "C1", "1.1")
            finally:
                await storage.close()


async def test_start_up_behind_head_waits_for_the_lock_then_migrates(url: str) -> None:
    engine = await _at(url, "0003")
    storage = Provider(url=url)
    try:
        async with _migration_lock_held_elsewhere(url):
            starting = asyncio.create_task(storage.initialize())
            await asyncio.sleep(1)
            assert not starting.done()  # queued on the lock
        await asyncio.wait_for(starting, HANG_S)
        assert await _on(engine, current_revisions) == {HEAD}
    finally:
        await storage.close()
        await engine.dispose()


# --- Indexes that deletes follow --------------------------------------------------------------


def _block_indexes(conn: Connection) -> dict[str | None, list[str | None]]:
    return {
        index["name"]: index["column_names"] for index in inspect(conn).get_indexes("agents_blocks")
    }


async def test_block_link_indexes_exist_after_migration(url: str) -> None:
    engine = await _at(url, "head")
    try:
        indexes = await _on(engine, _block_indexes)
        assert indexes["ix_agents_blocks_source_file_id"] == ["source_file_id"]
        assert indexes["ix_agents_blocks_tool_block_id"] == ["tool_block_id"]
        await downgrade(engine, "0003")
        assert not {"ix_agents_blocks_source_file_id", "ix_agents_blocks_tool_block_id"} & set(
            await _on(engine, _block_indexes)
        )
        await upgrade(engine)
        assert await _on(engine, _block_indexes) == indexes
    finally:
        await engine.dispose()
