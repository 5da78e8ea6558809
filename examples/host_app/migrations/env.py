"""The host app's Alembic environment, sharing one database with slack_agents_sa.

1. slack_agents_sa's migrations run first, to head, in their own version table
   (`slack_agents_sa_version`): the app's tables have foreign keys to ours.
2. Then the app's own migrations, in `alembic_version`. Autogenerate compares only the
   app's tables: ours are left out (`all_but_ours`), their drift is slack_agents_sa's business.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import host_app.models  # noqa: F401 - registers the app's tables on Base.metadata
from slack_agents_sa.migrate import all_but_ours, run_our_migrations
from slack_agents_sa.models import Base
from slack_agents_sa.settings import normalize_url, url_from_environment


def _run(connection: Connection) -> None:
    run_our_migrations(connection)
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_object=all_but_ours,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    url = normalize_url(url_from_environment(context.get_x_argument(as_dictionary=True).get("url")))
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: run against a database")
asyncio.run(_main())
