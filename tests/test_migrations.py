"""The four standard migration checks, plus start-up behaviour and the alembic command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider, SchemaOutOfDateError
from slack_agents_sa.migrate import (
    VERSION_TABLE,
    alembic_config,
    all_but_ours,
    is_ours,
    only_ours,
    script_location,
)
from slack_agents_sa.models import MIGRATION_LEASE_TABLE, OUR_TABLES, SEARCH_TABLE, metadata
from slack_agents_sa.schema_version import HEAD
from slack_agents_sa.settings import normalize_url

REPO_ROOT = Path(__file__).resolve().parent.parent


def _schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={"version_table": VERSION_TABLE, "compare_type": True, "include_object": only_ours},
    )
    return list(compare_metadata(context, metadata))


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _run_sync(url: str, fn: Any) -> Any:
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def test_migrations_have_a_single_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1


def test_the_head_start_up_checks_without_alembic_is_alembics_head() -> None:
    # A new migration moves `schema_version.HEAD` too: start-up at head reads only that.
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == [HEAD]


def test_checkout_uses_the_repo_alembic_folder() -> None:
    assert script_location() == REPO_ROOT / "alembic"


#: SQLite's FTS5 search table, the shadow tables FTS5 keeps beside it, and the row that
#: says how far the index goes (migration 0009).
SQLITE_SEARCH_TABLES = {SEARCH_TABLE} | {
    f"{SEARCH_TABLE}_{shadow}" for shadow in ("data", "idx", "docsize", "config", "state")
}


def _bookkeeping(url: str) -> set[str]:
    """The tables besides our models' at any revision: the version table, and on
    MySQL/MariaDB the migration lease's (it outlives a downgrade to base, as the version
    table does)."""
    mysql = make_url(url).get_backend_name() in ("mysql", "mariadb")
    return {VERSION_TABLE, MIGRATION_LEASE_TABLE} if mysql else {VERSION_TABLE}


def _at_head(url: str) -> set[str]:
    """Every table at head: our models', the bookkeeping, and on SQLite the search index."""
    sqlite = make_url(url).get_backend_name() == "sqlite"
    return set(OUR_TABLES) | _bookkeeping(url) | (SQLITE_SEARCH_TABLES if sqlite else set())


def test_bookkeeping_tables_are_ours_so_host_autogenerate_leaves_them() -> None:
    for table in (VERSION_TABLE, "slack_agents_sa_compat", MIGRATION_LEASE_TABLE):
        assert is_ours(table, "table")
        assert not all_but_ours(None, table, "table", True, None)
    for table in SQLITE_SEARCH_TABLES:
        assert is_ours(table, "table")
        assert not all_but_ours(None, table, "table", True, None)
    assert "slack_agents_sa_compat" in OUR_TABLES  # and our own `alembic check` compares it


async def test_initialize_migrates_an_empty_database_to_match_the_models(empty_url: str) -> None:
    assert await _run_sync(empty_url, _table_names) == set()
    storage = Provider(url=empty_url)
    await storage.initialize()
    await storage.close()
    assert await _run_sync(empty_url, _table_names) == _at_head(empty_url)
    assert await _run_sync(empty_url, _schema_diff) == []


async def test_in_memory_database_is_migrated_on_initialize() -> None:
    storage = Provider(url="sqlite://")
    await storage.initialize()
    try:
        async with storage.db.statement() as conn:
            assert await conn.run_sync(_schema_diff) == []
    finally:
        await storage.close()


async def test_migrate_off_refuses_an_empty_database_with_a_hint(empty_url: str) -> None:
    storage = Provider(url=empty_url, migrate=False)
    with pytest.raises(SchemaOutOfDateError, match="alembic upgrade head"):
        await storage.initialize()
    with pytest.raises(SchemaOutOfDateError):
        await storage.initialize()  # still refused: nothing half-open was kept
    assert await _run_sync(empty_url, _table_names) == set()


async def test_migrate_off_accepts_a_database_at_head(empty_url: str) -> None:
    migrating = Provider(url=empty_url)
    await migrating.initialize()
    await migrating.close()
    storage = Provider(url=empty_url, migrate=False)
    await storage.initialize()
    try:
        await storage.set("ns", "k", {"v": 1})
        assert await storage.get("ns", "k") == {"v": 1}
    finally:
        await storage.close()


def _alembic(url: str, *args: str, via_env: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    command = [sys.executable, "-m", "alembic", *args]
    if via_env:
        env["SLACK_AGENTS_SA_URL"] = url
    else:
        env.pop("SLACK_AGENTS_SA_URL", None)
        command[3:3] = ["-x", f"url={url}"]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def test_alembic_command_line_upgrade_check_downgrade_round_trip(empty_url: str) -> None:
    plain_url = empty_url.replace("+aiosqlite", "").replace("+asyncpg", "")
    upgrade = _alembic(plain_url, "upgrade", "head")
    assert upgrade.returncode == 0, upgrade.stderr
    assert await _run_sync(empty_url, _table_names) == _at_head(empty_url)

    check = _alembic(empty_url, "check", via_env=True)
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr

    downgrade = _alembic(empty_url, "downgrade", "base")
    assert downgrade.returncode == 0, downgrade.stderr
    assert await _run_sync(empty_url, _table_names) == _bookkeeping(empty_url)

    again = _alembic(empty_url, "upgrade", "head", via_env=True)
    assert again.returncode == 0, again.stderr
    assert await _run_sync(empty_url, _schema_diff) == []
