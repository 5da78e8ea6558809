"""Several replicas on one database: concurrent writers, processes and migrators lose nothing.

Run on every persistent backend (SQLite file, PostgreSQL, MySQL/MariaDB), each on both
executors: an in-memory database cannot be shared by two engines or processes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from slack_agents_sa import Provider
from slack_agents_sa.migrate import VERSION_TABLE, head_revisions
from tests.databases import PERSISTENT_BACKENDS_BOTH, backend_params, brand_new_database

REPO_ROOT = Path(__file__).resolve().parent.parent

#: One process of the multi-process test: 50 tasks that append and set, then print what
#: they appended.
WRITER = r"""
import asyncio, json, sys
from slack_agents_sa import Provider

async def main(url, name, executor):
    storage = Provider(url=url, executor=executor or None)
    await storage.initialize()
    async def task(n):
        item_id = await storage.append("shared", f"list-{n % 3}", {"writer": name, "n": n})
        await storage.set("shared", "last", {"writer": name, "n": n})
        await storage.set("shared", f"{name}-{n}", {"n": n})
        return item_id
    ids = await asyncio.gather(*(task(n) for n in range(50)))
    await storage.close()
    print(json.dumps(ids))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""

#: One migrator of the concurrent-migrations test.
MIGRATOR = r"""
import asyncio, sys
from slack_agents_sa import Provider

async def main(url, name, executor):
    storage = Provider(url=url, executor=executor or None)
    await storage.initialize()
    await storage.set("migrators", name, {"ok": True})
    await storage.close()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    assert "database is locked" not in err
    return out


@pytest.fixture(params=backend_params(PERSISTENT_BACKENDS_BOTH))
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A brand-new empty database of each persistent backend, on each executor."""
    async with brand_new_database(request.param, tmp_path) as url:
        yield url


def _executor_argument(options: dict[str, Any]) -> str:
    """The option `executor` for a spawned process ("" for the default)."""
    return str(options.get("executor") or "")


@pytest.fixture
async def shared_url(empty_url: str, provider_options: dict[str, Any]) -> str:
    """An empty persistent database, migrated."""
    storage = Provider(url=empty_url, **provider_options)
    await storage.initialize()
    await storage.close()
    return empty_url


async def test_a_hundred_concurrent_get_or_create_from_two_replicas_make_one_row(
    shared_url: str, provider_options: dict[str, Any]
) -> None:
    replicas = [Provider(url=shared_url, **provider_options) for _ in range(2)]
    for replica in replicas:
        await replica.initialize()
    try:
        ids = await asyncio.gather(
            *(
                replicas[n % 2].get_or_create_conversation("bot", "C1", "1.1", f"name-{n}")
                for n in range(100)
            )
        )
        assert len(set(ids)) == 1
        assert len(await replicas[0].get_conversations_for_export("bot")) == 1
    finally:
        for replica in replicas:
            await replica.close()


async def test_two_processes_of_fifty_tasks_lose_no_write(
    shared_url: str, provider_options: dict[str, Any]
) -> None:
    executor = _executor_argument(provider_options)
    writers = [_spawn(WRITER, shared_url, name, executor) for name in ("a", "b")]
    appended = [json.loads(_finish(writer)) for writer in writers]
    storage = Provider(url=shared_url, **provider_options)
    await storage.initialize()
    try:
        every_id = [item_id for ids in appended for item_id in ids]
        lists = [await storage.get_list("shared", f"list-{k}") for k in range(3)]
        listed = [item["id"] for items in lists for item in items]
        assert sorted(listed, key=int) == sorted(every_id, key=int)  # each exactly once
        for items in lists:
            assert [int(item["id"]) for item in items] == sorted(int(item["id"]) for item in items)
        # Last writer wins, whole: the value is one that was written, never a mix.
        last = await storage.get("shared", "last")
        assert last is not None and last["writer"] in ("a", "b") and 0 <= last["n"] < 50
        for name in ("a", "b"):
            for n in range(50):
                assert await storage.get("shared", f"{name}-{n}") == {"n": n}
    finally:
        await storage.close()


async def test_three_processes_migrating_one_empty_database_at_once(
    empty_url: str, provider_options: dict[str, Any]
) -> None:
    executor = _executor_argument(provider_options)
    migrators = [_spawn(MIGRATOR, empty_url, f"m{n}", executor) for n in range(3)]
    for migrator in migrators:
        _finish(migrator)
    storage = Provider(url=empty_url, migrate=False, **provider_options)  # at head, or raises
    await storage.initialize()
    try:
        assert [value for value in await storage.query("migrators", {})] == [{"ok": True}] * 3
        async with storage.db.statement() as conn:
            versions = (await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))).all()
        assert {version for (version,) in versions} == head_revisions()
        assert len(versions) == len(head_revisions())
    finally:
        await storage.close()
