"""Rolling deploys: an older release meets a database a newer release has migrated.

It runs on the schema as it is when the newer revisions declare it compatible
(`compatible_with`), and otherwise refuses with `SchemaTooNewError` naming both
revisions, with `migrate: true` and `migrate: false` alike. Every persistent backend.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.database import make_engine
from slack_agents_sa.errors import MigrationError, SchemaTooNewError
from slack_agents_sa.migrate import (
    VERSION_TABLE,
    alembic_config,
    current_revisions,
    downgrade,
    oldest_compatible_head,
    run_our_migrations,
    upgrade,
)
from slack_agents_sa.models import SchemaCompatibility
from slack_agents_sa.settings import normalize_url
from tests.databases import MYSQL, MYSQL_AIOMYSQL, POSTGRES, SQLITE_FILE, Backend, scratch_database
from tests.releases import NewerRelease, revision_source
from tests.test_cli import run_cli

HEAD = "0009"
REPO_ROOT = Path(__file__).resolve().parent.parent
#: A newer release's revision: a table of its own, which older code never reads.
NEW_TABLE = """
op.create_table("agents_newer_feature", sa.Column("id", sa.Integer(), primary_key=True))
"""
DROP_NEW_TABLE = 'op.drop_table("agents_newer_feature")'


@pytest.fixture(
    params=[SQLITE_FILE, POSTGRES, MYSQL, MYSQL_AIOMYSQL], ids=lambda backend: backend.name
)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a new database of each persistent backend, migrated to our head."""
    backend: Backend = request.param
    if backend is SQLITE_FILE:
        async for made in _migrated(f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}"):
            yield made
        return
    async with scratch_database(backend) as url:
        async for made in _migrated(url):
            yield made


async def _migrated(url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(normalize_url(url))
    try:
        await upgrade(engine)
        yield engine
    finally:
        await engine.dispose()


def _alembic(*args: str) -> subprocess.CompletedProcess[str]:
    """The repository's `alembic` command line, as a user runs it from the root."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("alembic")), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _url(engine: AsyncEngine) -> str:
    return engine.url.render_as_string(hide_password=False)


async def _on(engine: AsyncEngine, probe: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.run_sync(probe)


def _marker(conn: Connection) -> str | None:
    if not inspect(conn).has_table("slack_agents_sa_compat"):
        return None
    return conn.execute(select(SchemaCompatibility.oldest_compatible_head)).scalar_one()


def _newer(tmp_path: Path, compatible_with: str | None) -> NewerRelease:
    source = revision_source("9100", HEAD, NEW_TABLE, DROP_NEW_TABLE, compatible_with)
    return NewerRelease(tmp_path / "newer", {"9100_newer_feature": source})


async def test_older_release_runs_on_a_newer_schema_that_declares_it_compatible(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert await _on(engine, _marker) == "0003"  # 0004 and 0005 are additive over 0003
    newer = _newer(tmp_path, compatible_with=HEAD)
    await newer.upgrade(engine)
    assert await _on(engine, current_revisions) == {"9100"}
    assert await _on(engine, _marker) == HEAD

    caplog.set_level(logging.INFO, logger="slack_agents_sa.migrate")
    for migrate in (True, False):
        storage = Provider(url=_url(engine), migrate=migrate)
        await storage.initialize()
        try:
            await storage.set("ns", "k", {"migrate": migrate})
            assert await storage.get("ns", "k") == {"migrate": migrate}
        finally:
            await storage.close()
    accepted = [r.getMessage() for r in caplog.records if r.name == "slack_agents_sa.migrate"]
    assert len(accepted) == 2
    assert all("9100" in message and HEAD in message for message in accepted)
    checked = await asyncio.to_thread(run_cli, "--url", _url(engine), "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "9100" in checked.stdout and "compatible" in checked.stdout
    current = await asyncio.to_thread(run_cli, "--url", _url(engine), "current")
    assert current.stdout.strip() == f"9100 (newer than this release's head {HEAD}; compatible)"

    # `slack-agents-sa upgrade` and a host app's env.py find nothing to do either.
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.run_sync(run_our_migrations)
    assert await _on(engine, current_revisions) == {"9100"}  # never migrated by the old code

    # The newer release can take the database back; the old code is then at head again.
    await newer.downgrade(engine, HEAD)
    assert await _on(engine, current_revisions) == {HEAD}
    assert await _on(engine, _marker) == "0003"


async def test_older_release_refuses_a_newer_schema_naming_both_revisions(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await _newer(tmp_path, compatible_with=None).upgrade(engine)
    assert await _on(engine, _marker) == "9100"

    for migrate in (True, False):
        storage = Provider(url=_url(engine), migrate=migrate)
        with pytest.raises(SchemaTooNewError, match="9100 or later") as refused:
            await storage.initialize()
        message = str(refused.value)
        assert "revision 9100" in message and f"head {HEAD}" in message
        assert "Upgrade slack_agents_sa" in message and f"downgrade {HEAD}" in message
        assert (refused.value.database_revision, refused.value.head) == ("9100", HEAD)
    checked = await asyncio.to_thread(run_cli, "--url", _url(engine), "check")
    assert checked.returncode == 4, checked.stdout + checked.stderr
    alembic = await asyncio.to_thread(_alembic, "-x", f"url={_url(engine)}", "upgrade", "head")
    assert alembic.returncode != 0
    assert "revision 9100" in alembic.stderr and "cannot migrate" in alembic.stderr
    assert "revision 9100" in checked.stdout and "9100 or later" in checked.stdout
    with pytest.raises(SchemaTooNewError, match="cannot downgrade to 0003"):
        await downgrade(engine, "0003")
    assert await _on(engine, current_revisions) == {"9100"}  # untouched


async def test_unknown_revision_without_a_marker_is_refused(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'ffff'"))
        await conn.execute(text("DELETE FROM slack_agents_sa_compat"))
    with pytest.raises(SchemaTooNewError, match="records no compatibility marker"):
        await Provider(url=_url(engine), migrate=False).initialize()


async def test_marker_follows_every_migration_run(engine: AsyncEngine) -> None:
    assert await _on(engine, _marker) == "0003"
    await downgrade(engine, "0003")
    assert await _on(engine, _marker) is None  # 0004 made its table
    plain = create_async_engine(engine.url)  # a host app's env.py, on its own connection
    try:
        async with plain.begin() as conn:
            await conn.run_sync(run_our_migrations)
    finally:
        await plain.dispose()
    assert await _on(engine, current_revisions) == {HEAD}
    assert await _on(engine, _marker) == "0003"


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (HEAD, HEAD, HEAD),  # both additive: code at HEAD runs on 9101
        (None, HEAD, "9100"),  # 9100 is not: 9101's claim cannot reach past it
        (HEAD, "9100", "9100"),
        (None, None, "9101"),
    ],
)
def test_oldest_compatible_head_honours_every_revision_in_between(
    tmp_path: Path, first: str | None, second: str | None, expected: str
) -> None:
    newer = NewerRelease(
        tmp_path / "newer",
        {
            "9100_a": revision_source("9100", HEAD, "pass", compatible_with=first),
            "9101_b": revision_source("9101", "9100", "pass", compatible_with=second),
        },
    )
    assert oldest_compatible_head(newer.script, "9101") == expected


def test_compatible_with_must_name_an_ancestor(tmp_path: Path) -> None:
    newer = NewerRelease(
        tmp_path / "newer",
        {"9100_a": revision_source("9100", HEAD, "pass", compatible_with="9999")},
    )
    with pytest.raises(MigrationError, match="9100 declares compatible_with = '9999'"):
        oldest_compatible_head(newer.script, "9100")


def test_our_revisions_declare_compatibility_with_their_own_history() -> None:
    ours = ScriptDirectory.from_config(alembic_config())
    for script in ours.walk_revisions():
        history = {step.revision for step in ours.iterate_revisions(script.revision, "base")}
        assert oldest_compatible_head(ours, script.revision) in history
