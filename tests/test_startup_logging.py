"""What a start-up logs at INFO: the migrations it ran and one line of ours, not Alembic's
set-up ("setup plugin ...", "Context impl ...", "Will assume ..."), which goes to DEBUG.

Run in a fresh interpreter: Alembic logs its plugins once, when it is first imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_START = """
import asyncio, logging, sys
logging.basicConfig(level=getattr(logging, sys.argv[2]), format="%(levelname)s %(message)s")
from slack_agents_sa import Provider

async def main() -> None:
    storage = Provider(url=f"sqlite:///{sys.argv[1]}")
    await storage.initialize()
    await storage.close()

asyncio.run(main())
"""

_SET_UP = ("setup plugin ", "Context impl ", "Will assume ")


def _start(database: Path, level: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _START, str(database), level],
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
