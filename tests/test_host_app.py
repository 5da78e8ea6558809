"""examples/host_app: a host app with its own tables and Alembic environment next to ours.

Its tables point at ours (foreign keys, relationships both ways); `alembic upgrade head` in
the app brings ours to head first, in our own version table; its autogenerate sees only its
own tables; upgrade and downgrade work on every persistent database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.migrate import VERSION_TABLE, all_but_ours, current_revisions, head_revisions
from slack_agents_sa.models import MIGRATION_LEASE_TABLE, Base, metadata
from slack_agents_sa.settings import normalize_url
from tests.test_cli import run_cli

APP = Path(__file__).resolve().parent.parent / "examples" / "host_app"
sys.path.insert(0, str(APP))
import host_app.models  # noqa: E402, F401 - the app's tables on Base.metadata

sys.path.remove(str(APP))


def _in_app(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command],
        cwd=APP,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(APP)},
        timeout=180,
        check=False,
    )


def _alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    alembic = Path(sys.executable).with_name("alembic")
    return _in_app(str(alembic), "-x", f"url={url}", *args)


async def _inspect(url: str, probe: Any) -> Any:
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(probe)
    finally:
        await engine.dispose()


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _app_version(conn: Connection) -> set[str]:
    return set(MigrationContext.configure(conn).get_current_heads())


async def test_upgrade_check_run_and_downgrade_both_schemas(empty_url: str) -> None:
    upgraded = _alembic(empty_url, "upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    assert await _inspect(empty_url, current_revisions) == head_revisions()  # ours, at head
    assert await _inspect(empty_url, _app_version) == {"h001"}  # the app's, in alembic_version
    tables = await _inspect(empty_url, _tables)
    assert {"host_feedback", "alembic_version", VERSION_TABLE} <= tables
    assert set(metadata.tables) - {"host_feedback"} <= tables

    checked = _alembic(empty_url, "check")
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert "No new upgrade operations detected" in checked.stdout

    app = _in_app(sys.executable, "-m", "host_app.main", "--url", empty_url)
    assert app.returncode == 0, app.stderr
    assert "in #ops: ratings [5]" in app.stdout
    assert "belongs to thread 1.1" in app.stdout

    down = _alembic(empty_url, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    tables = await _inspect(empty_url, _tables)
    assert "host_feedback" not in tables
    storage = Provider(url=empty_url, migrate=False)  # ours untouched, still at head
    await storage.initialize()
    assert await storage.has_conversation("helper", "C1", "1.1")
    await storage.close()

    ours_down = run_cli("--url", empty_url, "downgrade", "base")
    assert ours_down.returncode == 0, ours_down.stderr
    # Version tables stay (empty); every table of ours and of the app is gone.
    assert await _inspect(empty_url, _tables) <= {
        "alembic_version",
        VERSION_TABLE,
        MIGRATION_LEASE_TABLE,
    }


async def test_autogenerate_sees_exactly_the_app_table(empty_url: str) -> None:
    # Ours at head, the app's migration not applied: the only difference is the app table.
    ours = run_cli("--url", empty_url, "upgrade")
    assert ours.returncode == 0, ours.stderr
    diffs = await _inspect(empty_url, _app_diffs)
    changed = {_table_of(diff) for diff in diffs}
    assert changed == {"host_feedback"}, diffs


def _app_diffs(conn: Connection) -> list[Any]:
    """What the app's autogenerate would emit, filtered as its env.py filters."""
    context = MigrationContext.configure(conn, opts={"include_object": all_but_ours})
    return list(compare_metadata(context, Base.metadata))


def _table_of(diff: Any) -> str:
    operation = diff[0] if isinstance(diff, list) else diff
    for item in operation[1:]:
        name = getattr(item, "name", None)
        table = getattr(item, "table", None)
        if table is not None:
            return str(table.name)
        if name is not None:
            return str(name)
    return "?"
