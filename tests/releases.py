"""Another release's migrations, for tests: a copy of ours plus extra revisions.

`NewerRelease` plays a later slack_agents_sa (rolling deploys) or a migration a test needs
once (a table rebuild, a broken migration). It runs through our own runner
(`migrate.run_locked`), so locks, SQLite's foreign-key handling and the compatibility
marker behave as they do in a release.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent, indent

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from slack_agents_sa import migrate


def revision_source(
    revision: str,
    down_revision: str,
    upgrade: str,
    downgrade: str = "pass",
    compatible_with: str | None = None,
) -> str:
    """The text of a revision file whose `upgrade()`/`downgrade()` run the given lines."""
    declared = f"compatible_with = {compatible_with!r}\n" if compatible_with else ""
    return (
        f'"""Test revision {revision}."""\n\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        f"revision = {revision!r}\n"
        f"down_revision = {down_revision!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n"
        f"{declared}\n\n"
        "def upgrade() -> None:\n"
        f"{indent(dedent(upgrade).strip(), '    ')}\n\n\n"
        "def downgrade() -> None:\n"
        f"{indent(dedent(downgrade).strip(), '    ')}\n"
    )


class NewerRelease:
    """Our migrations copied to `directory`, plus `revisions` (file stem -> source)."""

    def __init__(self, directory: Path, revisions: dict[str, str]) -> None:
        shutil.copytree(
            migrate.script_location(), directory, ignore=shutil.ignore_patterns("__pycache__")
        )
        for stem, source in revisions.items():
            (directory / "versions" / f"{stem}.py").write_text(source)
        self.directory = directory
        self.script = ScriptDirectory(str(directory))

    def _config(self, connection: Connection) -> Config:
        config = Config()
        config.set_main_option("script_location", str(self.directory))
        config.attributes["connection"] = connection
        return config

    async def _run(self, engine: AsyncEngine, step: Callable[[Config], None]) -> None:
        await migrate.run_locked(
            engine, lambda connection: step(self._config(connection)), None, script=self.script
        )

    async def upgrade(self, engine: AsyncEngine, revision: str = "head") -> None:
        await self._run(engine, lambda config: command.upgrade(config, revision))

    async def downgrade(self, engine: AsyncEngine, revision: str) -> None:
        await self._run(engine, lambda config: command.downgrade(config, revision))
