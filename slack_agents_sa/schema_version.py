"""Where a database's schema stands, read without Alembic: start-up at head needs no more.

`HEAD` names this release's newest migration (a test holds it to Alembic's own answer), so
a provider starting on an up-to-date database reads one version row and never imports
Alembic; `migrate.py` does the rest when there is something to migrate or to explain.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import column, inspect, select, table
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

#: This release's head revision: the newest file in the migrations' `versions/` folder.
HEAD: Final = "0009"

#: Our own version table, so a host app's `alembic_version` is never touched.
VERSION_TABLE: Final = "slack_agents_sa_version"

_VERSIONS = table(VERSION_TABLE, column("version_num"))


def stored_revisions(connection: Connection) -> frozenset[str]:
    """The revisions the database records (empty: no schema of ours), as Alembic reads them:
    the version table found through the connection's search path."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return frozenset()
    return frozenset(connection.execute(select(_VERSIONS.c.version_num)).scalars())


async def is_at_head(engine: AsyncEngine) -> bool:
    """Whether the database is exactly at `HEAD` (reads only; no lock)."""
    async with engine.connect() as conn:
        return await conn.run_sync(stored_revisions) == {HEAD}
