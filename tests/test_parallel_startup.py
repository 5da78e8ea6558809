"""Providers starting at once in one process: each migrates its own database, and only it.

Alembic's `alembic.context` and `alembic.op` are process-wide, so two migrations
interleaving at their driver awaits would run on each other's database. `migrate.py` runs
one migration at a time per process (`in_process_migration_lock`); these tests start many
providers at once, and hold, cancel and time out waits for that lock.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_agents_sa import Provider, migration_lock
from slack_agents_sa import migrate as migrate_module
from slack_agents_sa.backends.base import SessionOptions
from slack_agents_sa.backends.sqlite import connection_pragmas
from slack_agents_sa.database import make_engine
from slack_agents_sa.errors import MigrationLockError
from slack_agents_sa.executors.sqlite_connection import set_up_connection
from slack_agents_sa.migrate import VERSION_TABLE, SchemaStatus, head_revisions
from slack_agents_sa.models import OUR_TABLES
from slack_agents_sa.settings import normalize_url
from tests.databases import MYSQL, POSTGRES, SQLITE_FILE, Backend, brand_new_database

#: Long enough for any start-up here; a hang fails the test instead of stalling the run.
START_UP_S = 120
#: How long a waiter is left waiting before a test looks at it.
WAITING_S = 0.3


# --- Many providers on many databases ---------------------------------------------------


@asynccontextmanager
async def _brand_new_databases(backends: list[Backend], tmp_path: Path) -> AsyncIterator[list[str]]:
    """One brand-new empty database per entry of `backends` (scratch ones dropped after)."""
    async with AsyncExitStack() as stack:
        urls = []
        for index, backend in enumerate(backends):
            folder = tmp_path / f"db{index}"
            folder.mkdir()
            urls.append(await stack.enter_async_context(brand_new_database(backend, folder)))
        yield urls


async def _close_all(providers: list[Provider]) -> None:
    # Bounded: on the code before the fix a start-up could hang, and close() waits for it.
    for storage in providers:
        with suppress(TimeoutError):
            await asyncio.wait_for(storage.close(), START_UP_S)


async def _table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))


async def _start_all_at_once_each_on_its_own(urls: list[str]) -> None:
    """Start a provider per URL with one gather: each comes up at head on its own database,
    serves calls, and sees only what was written through it."""
    providers = [Provider(url=url) for url in urls]
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(storage.initialize() for storage in providers), return_exceptions=True
            ),
            START_UP_S,
        )
        failed = [(urls[i], o) for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
        assert failed == [], failed

        for i, storage in enumerate(providers):
            state = await migrate_module.read_schema_state(storage.db.engine)
            assert state.status is SchemaStatus.AT_HEAD, (urls[i], state)
            assert set(state.current) == head_revisions()
            tables = await _table_names(storage.db.engine)
            assert OUR_TABLES | {VERSION_TABLE} <= tables, urls[i]
        for i, storage in enumerate(providers):
            await storage.set("ns", "k", {"v": i})
            await storage.set("ns", f"only-{i}", {"v": i})
        for i, storage in enumerate(providers):
            assert await storage.get("ns", "k") == {"v": i}
            for j in range(len(providers)):
                expected = {"v": i} if j == i else None
                assert await storage.get("ns", f"only-{j}") == expected, (i, j)
    finally:
        await _close_all(providers)


async def test_five_providers_on_five_sqlite_files_start_at_once(tmp_path: Path) -> None:
    async with _brand_new_databases([SQLITE_FILE] * 5, tmp_path) as urls:
        await _start_all_at_once_each_on_its_own(urls)


@pytest.mark.parametrize(
    "servers",
    [[POSTGRES] * 3, [MYSQL] * 3, [POSTGRES, MYSQL, POSTGRES, MYSQL]],
    ids=["postgresql", "mysql", "postgresql-and-mysql"],
)
async def test_server_and_sqlite_providers_start_at_once(
    servers: list[Backend], tmp_path: Path
) -> None:
    # Skips (through `brand_new_database`) when a server's URL is unset.
    backends = [SQLITE_FILE, *servers, SQLITE_FILE]
    async with _brand_new_databases(backends, tmp_path) as urls:
        await _start_all_at_once_each_on_its_own(urls)


async def test_two_providers_of_one_database_migrate_it_once(
    empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrades: list[str] = []
    real_upgrade = command.upgrade

    def counted(config: Any, revision: str, *args: Any, **kwargs: Any) -> None:
        upgrades.append(revision)
        real_upgrade(config, revision, *args, **kwargs)

    monkeypatch.setattr(command, "upgrade", counted)
    providers = [Provider(url=empty_url) for _ in range(2)]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(storage.initialize() for storage in providers)), START_UP_S
        )
        assert upgrades == ["head"]
        for n, storage in enumerate(providers):
            await storage.set("ns", f"p{n}", {"n": n})
        for storage in providers:
            assert await storage.get("ns", "p0") == {"n": 0}
            assert await storage.get("ns", "p1") == {"n": 1}
    finally:
        await _close_all(providers)


# --- A new SQLite file switched to WAL while another connection writes to it ------------
#
# SQLite answers `PRAGMA journal_mode = WAL` with "database is locked" at once, without the
# busy timeout, while another connection holds the write lock of a file not yet in WAL: two
# providers opening one new file together race for it (1 run in ~40 of two at once).


@contextmanager
def _write_lock_held_for(path: Path, seconds: float) -> Iterator[None]:
    """Another connection holds `path`'s write lock (rollback journal) for `seconds`."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE someone_elses (x)")
    release = threading.Timer(seconds, holder.execute, ("COMMIT",))
    release.start()
    try:
        yield
    finally:
        release.join()
        holder.close()


def _journal_mode(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


@pytest.mark.parametrize("executor", ["sqlalchemy", "native"])
async def test_a_provider_waits_for_a_lock_held_while_it_switches_a_new_file_to_wal(
    tmp_path: Path, executor: str
) -> None:
    path = tmp_path / "new.db"
    storage = Provider(url=f"sqlite+aiosqlite:///{path}", executor=executor)
    try:
        with _write_lock_held_for(path, WAITING_S):
            await asyncio.wait_for(storage.initialize(), START_UP_S)
        await storage.set("ns", "k", {"v": 1})
        assert await storage.get("ns", "k") == {"v": 1}
        assert _journal_mode(path) == "wal"
    finally:
        await _close_all([storage])


def test_the_native_executor_waits_for_a_lock_held_while_it_switches_to_wal(
    tmp_path: Path,
) -> None:
    # The native executor opens its own connection on its first call: the same set-up.
    path = tmp_path / "new.db"
    pragmas = connection_pragmas(SessionOptions(), is_file=True)
    with _write_lock_held_for(path, WAITING_S), closing(sqlite3.connect(path)) as conn:
        set_up_connection(conn.execute, pragmas, lock_wait=START_UP_S, pause=time.sleep)
    assert _journal_mode(path) == "wal"


def test_a_lock_held_past_the_lock_wait_still_fails_as_locked(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    pragmas = connection_pragmas(SessionOptions(), is_file=True)
    with _write_lock_held_for(path, 1.0), closing(sqlite3.connect(path)) as conn:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            set_up_connection(conn.execute, pragmas, lock_wait=0.2, pause=time.sleep)
        assert time.monotonic() - started < 1.0


# --- The in-process lock: held, cancelled, timed out --------------------------------------


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a brand-new SQLite file (no tables)."""
    engine = make_engine(normalize_url(f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"))
    try:
        yield engine
    finally:
        await engine.dispose()


async def _is_at_head(engine: AsyncEngine) -> bool:
    state = await migrate_module.read_schema_state(engine)
    return state.status is SchemaStatus.AT_HEAD


async def _lock_is_free() -> bool:
    """The in-process lock can be taken at once (and is released again)."""
    try:
        async with migration_lock.in_process_migration_lock(lock_timeout=0):
            return True
    except MigrationLockError:
        return False


async def test_a_cancelled_waiter_leaves_the_lock_free(engine: AsyncEngine) -> None:
    async with migration_lock.in_process_migration_lock():
        waiter = asyncio.create_task(migrate_module.upgrade(engine))
        await asyncio.sleep(WAITING_S)
        assert not waiter.done()  # queued behind the lock
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not await _lock_is_free()  # still ours
    assert await _lock_is_free()
    assert not await _is_at_head(engine)  # the cancelled waiter migrated nothing
    await asyncio.wait_for(migrate_module.upgrade(engine), START_UP_S)
    assert await _is_at_head(engine)


async def test_a_holder_cancelled_while_holding_releases_the_lock(engine: AsyncEngine) -> None:
    holding = asyncio.Event()

    async def holder() -> None:
        async with migration_lock.in_process_migration_lock():
            holding.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(holder())
    await holding.wait()
    assert not await _lock_is_free()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _lock_is_free()
    await asyncio.wait_for(migrate_module.upgrade(engine), START_UP_S)
    assert await _is_at_head(engine)


async def test_a_migration_waiting_past_lock_timeout_fails_naming_the_lock(
    engine: AsyncEngine,
) -> None:
    ran: list[Connection] = []
    async with migration_lock.in_process_migration_lock():
        with pytest.raises(MigrationLockError, match=r"timed out after 0\.2 s") as failed:
            await asyncio.wait_for(migrate_module.upgrade(engine, lock_timeout=0.2), START_UP_S)
        assert failed.value.lock == migration_lock.IN_PROCESS_LOCK
        assert failed.value.timeout == 0.2
        assert migration_lock.IN_PROCESS_LOCK in str(failed.value)
        with pytest.raises(MigrationLockError):
            await migrate_module.run_locked(engine, ran.append, None, lock_timeout=0.2)
        assert ran == []  # the step never ran unlocked
        with pytest.raises(MigrationLockError):
            await migrate_module.downgrade(engine, "base", lock_timeout=0.2)
    assert not await _is_at_head(engine)
    assert await _table_names(engine) == set()  # nothing was migrated


async def test_start_up_at_head_does_not_queue_behind_a_migration(engine: AsyncEngine) -> None:
    await migrate_module.upgrade(engine)
    url = engine.url.render_as_string(hide_password=False)
    async with migration_lock.in_process_migration_lock():
        for migrate in (True, False):
            storage = Provider(url=url, migrate=migrate)
            try:
                await asyncio.wait_for(storage.initialize(), START_UP_S)
                await storage.set("ns", "k", {"migrate": migrate})
            finally:
                await storage.close()


async def test_a_waiter_holds_no_database_lock(engine: AsyncEngine) -> None:
    """The in-process lock comes before the database's: while queued, a migrator leaves the
    database free (another writer of the same SQLite file is not blocked by it)."""
    async with migration_lock.in_process_migration_lock():
        waiter = asyncio.create_task(migrate_module.upgrade(engine))
        try:
            await asyncio.sleep(WAITING_S)
            assert not waiter.done()
            other = make_engine(engine.url)
            try:
                async with other.begin() as conn:
                    await asyncio.wait_for(
                        conn.execute(text("CREATE TABLE probe (x INT)")), START_UP_S
                    )
            finally:
                await other.dispose()
        except BaseException:
            waiter.cancel()
            raise
    await asyncio.wait_for(waiter, START_UP_S)
    assert await _is_at_head(engine)


async def test_run_our_migrations_waits_for_the_lock_too(engine: AsyncEngine) -> None:
    """A host env.py's `run_our_migrations` (under `run_sync`) queues on the same lock,
    without blocking the event loop, and fails after its `lock_timeout`."""
    ticks: list[int] = []

    async def tick() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0.01)

    async def run_ours(step: Callable[[Connection], None]) -> None:
        async with engine.begin() as conn:
            await conn.run_sync(step)

    ticker = asyncio.create_task(tick())
    try:
        async with migration_lock.in_process_migration_lock():
            with pytest.raises(MigrationLockError, match=r"timed out after 0\.2 s"):
                await run_ours(
                    functools.partial(migrate_module.run_our_migrations, lock_timeout=0.2)
                )
        assert len(ticks) >= 5  # the loop ran while it waited
    finally:
        ticker.cancel()
    assert await _lock_is_free()
    await asyncio.wait_for(run_ours(migrate_module.run_our_migrations), START_UP_S)
    assert await _is_at_head(engine)


async def test_another_thread_holding_the_lock_does_not_block_this_loop(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """A migration in another thread (its own loop) holds the lock: a waiter here polls it,
    the loop keeps running, a cancelled waiter leaves it, and the next one gets it."""
    holding = threading.Event()
    release = threading.Event()

    async def hold_in_thread() -> None:
        async with migration_lock.in_process_migration_lock():
            holding.set()
            await asyncio.to_thread(release.wait, 60)

    thread = threading.Thread(target=asyncio.run, args=(hold_in_thread(),))
    thread.start()
    try:
        assert await asyncio.to_thread(holding.wait, 10)
        waiter = asyncio.create_task(migrate_module.upgrade(engine))
        before = asyncio.get_running_loop().time()
        await asyncio.sleep(WAITING_S)  # returns on time: the waiter does not block the loop
        assert asyncio.get_running_loop().time() - before < WAITING_S + 1
        assert not waiter.done()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        next_one = asyncio.create_task(migrate_module.upgrade(engine))
        await asyncio.sleep(WAITING_S)
        assert not next_one.done()  # the thread still holds it
    finally:
        release.set()
        await asyncio.to_thread(thread.join, 10)
    await asyncio.wait_for(next_one, START_UP_S)
    assert await _is_at_head(engine)

    # A thread migrating its own database while this loop migrates another.
    await migrate_module.downgrade(engine, "base")
    other_url = normalize_url(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    await asyncio.wait_for(
        asyncio.gather(
            asyncio.to_thread(asyncio.run, _upgrade_and_dispose(other_url)),
            migrate_module.upgrade(engine),
        ),
        START_UP_S,
    )
    assert await _is_at_head(engine)
    other = make_engine(other_url)
    try:
        assert await _is_at_head(other)
    finally:
        await other.dispose()


async def _upgrade_and_dispose(url: URL) -> None:
    """`migrate.upgrade` on an engine of its own (for another thread's event loop)."""
    engine = make_engine(url)
    try:
        await migrate_module.upgrade(engine)
    finally:
        await engine.dispose()
