"""Alembic environment for slack_agents_sa: from the command line or from `migrate.py`.

From the command line the URL comes from `-x url=...`, else SLACK_AGENTS_SA_URL, else the
embedded SQLite default; plain `postgresql://`/`sqlite:///` URLs get their async driver.
`-x schema=name` (PostgreSQL) migrates the tables of a provider with that `schema` option.
From code, `migrate.py` hands over an open connection in `config.attributes`.
"""

from __future__ import annotations

import asyncio
import logging

from alembic import context
from sqlalchemy.engine import Connection

from slack_agents_sa.database import make_engine
from slack_agents_sa.migrate import VERSION_TABLE, only_ours, run_locked, schema_state
from slack_agents_sa.models import metadata
from slack_agents_sa.settings import check_schema, normalize_url, safe_url, url_from_environment

config = context.config
if config.config_file_name is not None:
    from logging.config import fileConfig

    fileConfig(config.config_file_name, disable_existing_loggers=False)
log = logging.getLogger("alembic.env")


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=only_ours,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run_on(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _run_from_shell(connection: Connection) -> None:
    # A newer release's revision: Alembic would only say "Can't locate revision".
    state = schema_state(connection)
    if state.is_newer:
        raise SystemExit(str(state.too_new("migrate")))
    _run_on(connection)


async def _run_from_command_line() -> None:
    x_arguments = context.get_x_argument(as_dictionary=True)
    url = normalize_url(url_from_environment(x_arguments.get("url")))
    schema = x_arguments.get("schema")  # PostgreSQL: the provider's `schema` option
    if schema is not None:
        try:
            check_schema(url, schema)
        except ValueError as error:
            raise SystemExit(f"-x schema {error}") from None
    log.info("Database: %s", safe_url(url))
    engine = make_engine(url, schema=schema)
    try:
        await run_locked(engine, _run_from_shell, schema)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("slack_agents_sa migrations run online only (no --sql mode)")

connection = config.attributes.get("connection")
if connection is not None:
    _run_on(connection)
else:
    asyncio.run(_run_from_command_line())
