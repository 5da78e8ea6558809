"""Opening a database for work: the schema brought to head (or checked), then the executor.

What `Provider.initialize()` does, and what the command line's maintenance jobs and the
importer do without a provider. On a database at head this is one read, and Alembic is
never imported.
"""

from __future__ import annotations

from slack_agents_sa.database import Database
from slack_agents_sa.schema_version import is_at_head
from slack_agents_sa.settings import ProviderSettings


async def open_database(settings: ProviderSettings) -> Database:
    """A `Database` ready for calls; with `settings.migrate`, the schema migrated to head first,
    else `SchemaOutOfDateError` unless this release can run on it as it is.

    On failure, or when cancelled, everything it opened is closed again.
    """
    database = Database(settings)
    try:
        if not await is_at_head(database.engine):
            from slack_agents_sa import migrate

            if settings.migrate:
                await migrate.upgrade_to_head(database.engine, settings.db_schema)
            else:
                await migrate.require_head(database.engine)
        await database.open()
    except BaseException:
        await database.dispose()
        raise
    return database
