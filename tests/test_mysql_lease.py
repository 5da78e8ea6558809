"""The MySQL/MariaDB migration lease: one migrator at a time across a Galera cluster.

`GET_LOCK` is per server, so two nodes grant it at once; the lease row replicates. Two
providers starting on two nodes of a new database at once: one migrates, the other waits
and starts at head, and the version table says head once. On one server: a lease another
migrator holds makes a migrator fail with `MigrationLockError` after its timeout, having
run nothing; an expired one (its migrator crashed) is taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest
from sqlalchemy import text

from slack_agents_sa import Provider
from slack_agents_sa.backends.mysql_lease import LEASE_S
from slack_agents_sa.database import make_engine
from slack_agents_sa.errors import MigrationLockError
from slack_agents_sa.migrate import run_locked
from slack_agents_sa.models import MIGRATION_LEASE_TABLE
from slack_agents_sa.schema_version import HEAD, VERSION_TABLE
from slack_agents_sa.settings import normalize_url
from tests.databases import (
    MYSQL,
    opened_provider,
    scratch_database,
)

#: A test body not done after this many seconds is hung.
HANG_S = 120
#: Seconds each migrator holds the lock in the overlap test.
HOLD_S = 1.0


async def _versions(url: str) -> list[str]:
    engine = make_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
            return [row[0] for row in rows]
    finally:
        await engine.dispose()


async def test_two_nodes_migrating_a_new_database_at_once_migrate_it_once(
    galera_database: list[str],
) -> None:
    async def start(url: str) -> None:
        async with opened_provider(url) as storage:
            await storage.set("race", url, {"ok": True})

    await asyncio.wait_for(
        asyncio.gather(start(galera_database[0]), start(galera_database[1])), HANG_S
    )
    assert await _versions(galera_database[2]) == [HEAD]


_HOLDER_PROCESS = """
import asyncio, sys, time
from slack_agents_sa.backends.mysql_lease import LEASE_S
from slack_agents_sa.database import make_engine
from slack_agents_sa.migrate import run_locked
from slack_agents_sa.settings import normalize_url

def hold(_connection):
    entered = time.time()
    time.sleep(float(sys.argv[2]))  # the lock is held meanwhile
    print(entered, time.time())

async def main():
    engine = make_engine(normalize_url(sys.argv[1]))
    try:
        await run_locked(engine, hold, None, lock_timeout=60)
    finally:
        await engine.dispose()

asyncio.run(main())
"""


async def test_migration_locks_taken_on_two_nodes_never_overlap(
    galera_database: list[str],
) -> None:
    """Two processes (this process's own migration lock would queue two tasks of one) hold
    the lock a while each through two nodes: the second enters after the first left."""

    async def hold_on(url: str) -> tuple[float, float]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLDER_PROCESS,
            url,
            str(HOLD_S),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        entered, left = out.decode().split()
        return float(entered), float(left)

    spans = await asyncio.wait_for(
        asyncio.gather(*(hold_on(url) for url in galera_database[:2])), HANG_S
    )
    first, second = sorted(spans)
    assert first[1] <= second[0], spans


async def _lease(url: str, owner: str, seconds: int) -> None:
    """Write a lease row as another migrator would (expiring `seconds` from now)."""
    engine = make_engine(normalize_url(url))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {MIGRATION_LEASE_TABLE} (id INT PRIMARY KEY, "
                    "owner VARCHAR(64) NOT NULL, expires_at DATETIME(6) NOT NULL)"
                )
            )
            await conn.execute(
                text(
                    f"REPLACE INTO {MIGRATION_LEASE_TABLE} VALUES "
                    "(1, :owner, TIMESTAMPADD(SECOND, :s, NOW(6)))"
                ),
                {"owner": owner, "s": seconds},
            )
    finally:
        await engine.dispose()


async def test_a_lease_held_elsewhere_fails_after_the_timeout_having_run_nothing() -> None:
    async with scratch_database(MYSQL) as url:
        await _lease(url, "another-migrator", 600)
        engine = make_engine(normalize_url(url))
        ran: list[object] = []
        try:
            with pytest.raises(MigrationLockError, match="lease row"):
                await asyncio.wait_for(run_locked(engine, ran.append, None, lock_timeout=1), HANG_S)
        finally:
            await engine.dispose()
        assert ran == []


async def test_an_expired_lease_of_a_crashed_migrator_is_taken_over() -> None:
    async with scratch_database(MYSQL) as url:
        await _lease(url, "crashed-migrator", -5)
        storage = Provider(url=url)
        await asyncio.wait_for(storage.initialize(), HANG_S)
        await storage.close()
        assert await _versions(url) == [HEAD]


async def _lease_rows(url: str) -> int:
    engine = make_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            exists = await conn.scalar(
                text(
                    "SELECT COUNT(*) FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_name = :t"
                ),
                {"t": MIGRATION_LEASE_TABLE},
            )
            if not exists:
                return 0
            return int(await conn.scalar(text(f"SELECT COUNT(*) FROM {MIGRATION_LEASE_TABLE}")))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("cancel_after_s", [0.02, 0.1, 0.3, 0.6])
async def test_a_migration_cancelled_midway_lets_the_lease_go_at_once(
    cancel_after_s: float,
) -> None:
    """Cancelled while taking, holding or giving back the lease: the row is gone well before
    it would expire (LEASE_S), and the next start-up migrates."""
    async with scratch_database(MYSQL) as url:
        storage = Provider(url=url)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(storage.initialize(), cancel_after_s)
        finally:
            await storage.close()
        for _ in range(int(LEASE_S / 3 / 0.05)):  # a third of the lease, polled
            if not await _lease_rows(url):
                break
            await asyncio.sleep(0.05)
        assert await _lease_rows(url) == 0
        async with opened_provider(url) as again:
            await again.set("ns", "k", {"v": 1})
        assert await _versions(url) == [HEAD]
