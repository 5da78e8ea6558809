"""What a start-up logs at INFO: the migrations it ran and one line of ours, not Alembic's
set-up ("setup plugin ...", "Context impl ...", "Will assume ..."), which goes to DEBUG.

Run in a fresh interpreter: Alembic logs its plugins once, when it is first imported.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from slack_agents_sa.schema_version import HEAD
from tests.databases import MYSQL, create_scratch_database, drop_scratch_database
from tests.test_cli import run_cli

_START = """
import asyncio, logging, sys
logging.basicConfig(level=getattr(logging, sys.argv[2]), format="%(levelname)s %(message)s")
from slack_agents_sa import Provider

async def main() -> None:
    storage = Provider(url=sys.argv[1])
    await storage.initialize()
    await storage.close()

asyncio.run(main())
"""

_SET_UP = ("setup plugin ", "Context impl ", "Will assume ")
#: The revision before head: a start-up there runs one migration.
PREVIOUS = f"{int(HEAD) - 1:04d}"


def _start(database: Path | str, level: str) -> list[str]:
    """What a start-up on `database` (a SQLite file, or a URL) logs at `level` and above."""
    url = f"sqlite:///{database}" if isinstance(database, Path) else database
    done = subprocess.run(
        [sys.executable, "-c", _START, url, level],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def test_a_migrating_start_up_logs_its_migrations_and_one_line_at_info(tmp_path: Path) -> None:
    lines = _start(tmp_path / "new.db", "INFO")
    assert all(line.startswith("INFO ") for line in lines), lines
    messages = [line.removeprefix("INFO ") for line in lines]
    assert not [m for m in messages if m.startswith(_SET_UP)], messages
    assert [m for m in messages if m.startswith("Running upgrade")], messages
    assert messages[-1].startswith("slack_agents_sa storage ready"), messages
    assert len(messages) == 1 + sum(m.startswith("Running upgrade") for m in messages)
    # At head: the one line, and no Alembic at all.
    again = _start(tmp_path / "new.db", "INFO")
    assert len(again) == 1 and "storage ready" in again[0], again


def test_alembics_set_up_messages_are_there_at_debug(tmp_path: Path) -> None:
    lines = _start(tmp_path / "new.db", "DEBUG")
    set_up = [line for line in lines if line.removeprefix("DEBUG ").startswith(_SET_UP)]
    assert set_up, lines


def test_a_migration_on_mysql_logs_no_warning() -> None:
    """The migration lease's table, there since the first migration, is not created again
    (CREATE TABLE IF NOT EXISTS would leave a note the driver logs as a WARNING)."""
    server = MYSQL.server_url
    url = asyncio.run(create_scratch_database(server))
    try:
        rendered = url.render_as_string(hide_password=False)
        _start(rendered, "INFO")
        assert run_cli("--url", rendered, "downgrade", PREVIOUS).returncode == 0
        assert _start(rendered, "WARNING") == []  # migrated back to head, quietly
    finally:
        asyncio.run(drop_scratch_database(server, url))
