"""What every verb shares: the database it works on (built from `--url`, `--config` or the
environment exactly as the agent builds its settings), the reachability probe, and a
maintenance job's database."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from slack_agents_sa.backends import backend_for
from slack_agents_sa.cli.agent_config import storage_options
from slack_agents_sa.cli.exits import Unreachable, UsageError
from slack_agents_sa.database import Database, make_engine
from slack_agents_sa.errors import ConfigError, SchemaOutOfDateError
from slack_agents_sa.models import NAME_LENGTH
from slack_agents_sa.settings import (
    DEFAULT_URL,
    URL_ENV_VAR,
    ProviderSettings,
    check_schema,
    normalize_url,
    safe_url,
)
from slack_agents_sa.startup import open_database
from slack_agents_sa.validation import check_text


def say(message: str) -> None:
    """A line for the person at the terminal (stderr: stdout is the command's answer)."""
    print(message, file=sys.stderr, flush=True)


#: What a batched job (prune, erase-user) says when Ctrl-C stops it.
INTERRUPTED_BATCHES = "interrupted: every batch is whole; run the same command to carry on"


def check_names(*options: tuple[str, str | None]) -> None:
    """Each given (option, value) a storable name (an agent, a namespace, a user id): a
    usage error, exit 2, before connecting, rather than the provider's ValueError."""
    for option, value in options:
        if value is not None:
            try:
                check_text(option, value, NAME_LENGTH)
            except ValueError as error:
                raise UsageError(str(error)) from None


@dataclass(frozen=True)
class Target:
    """The database a command works on, with the agent's storage options."""

    #: Every option validated as the agent validates it (a typo is refused, not ignored).
    settings: ProviderSettings
    #: The options `settings` was built from, `url` included.
    options: dict[str, Any]
    #: Where the URL came from: `--url`, `--config PATH`, `$SLACK_AGENTS_SA_URL`, the default.
    source: str

    @property
    def url(self) -> URL:
        return self.settings.url

    @property
    def schema(self) -> str | None:
        return self.settings.db_schema


def _parsed(raw: Any, source: str) -> URL:
    if not isinstance(raw, str):
        raise UsageError(f"storage.url must be a string (from {source})")
    try:
        return normalize_url(raw)
    except ValueError as error:
        raise UsageError(f"{error} (from {source})") from None


def _named(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The storage options and where the URL came from, by the documented precedence:
    `--url`, then `--config` (refused when $SLACK_AGENTS_SA_URL names another database: a
    URL exported for one job must not silently redirect another), then the variable, then
    the embedded default."""
    from_env = os.environ.get(URL_ENV_VAR)
    if args.url:
        return {"url": args.url}, "--url"
    if args.config:
        source = f"--config {args.config}"
        options = storage_options(Path(args.config))
        options.setdefault("url", DEFAULT_URL)
        url = _parsed(options["url"], source)
        if from_env and _parsed(from_env, f"${URL_ENV_VAR}") != url:
            raise UsageError(
                f"{source} and ${URL_ENV_VAR} name different databases: unset "
                f"{URL_ENV_VAR}, or leave out --config"
            )
        return options, source
    if from_env:
        return {"url": from_env}, f"${URL_ENV_VAR}"
    return {"url": DEFAULT_URL}, "the default"


def resolve_target(args: argparse.Namespace) -> Target:
    """The database to work on; `--schema` joins the options (a config naming another
    schema is refused: the command would read or delete another tenant's tables)."""
    options, source = _named(args)
    url = _parsed(options["url"], source)
    if args.schema is not None:
        try:
            check_schema(url, args.schema)
        except ValueError as error:
            raise UsageError(f"--schema {error}") from None
        if options.get("schema") not in (None, args.schema):
            raise UsageError(
                f"--schema {args.schema} and the schema {options['schema']!r} of {source} "
                "differ: leave one out"
            )
        options["schema"] = args.schema
    try:
        settings = ProviderSettings.from_options(dict(options))
    except ConfigError as error:
        raise UsageError(f"{error} (from {source})") from None
    return Target(settings, options, source)


async def connected(
    target: Target, *, creates: bool = False
) -> tuple[AsyncEngine, AsyncConnection]:
    """An engine and one of its connections, or `Unreachable` (exit 3) naming the database.

    Unless the command `creates` its database (`upgrade`), a database that connecting would
    create (a SQLite path with no file) is unreachable: a typo makes no empty file.
    """
    url = target.url
    if not creates and (reason := backend_for(url).absent(url)) is not None:
        raise Unreachable(
            f"cannot connect to {safe_url(url)}: {reason} (only `upgrade` creates one)"
        )
    engine = make_engine(url, schema=target.schema)
    try:
        return engine, await engine.connect()
    except Exception as error:
        await engine.dispose()
        raise Unreachable(f"cannot connect to {safe_url(url)}: {error}") from None
    except BaseException:  # Ctrl-C while connecting
        await engine.dispose()
        raise


async def probe(target: Target) -> None:
    """`Unreachable` (exit 3) unless the database answers; the drivers' own errors at
    start-up would each look different."""
    engine, conn = await connected(target)
    try:
        await conn.close()
    finally:
        await engine.dispose()


async def maintenance_database(target: Target, **overrides: Any) -> Database:
    """The database a maintenance job works on, opened with the agent's options and
    `overrides`: reachable, schema at head and left as it is (a job never migrates)."""
    await probe(target)
    # A job's batches may take longer, and wait longer for an agent's locks, than the
    # agent's calls do: its statement and lock timeouts are the agent's, not the job's.
    job = {"migrate": False, "statement_timeout": None, "lock_timeout": None}
    try:
        settings = ProviderSettings.from_options({**target.options, **job, **overrides})
    except ConfigError as error:
        raise UsageError(str(error)) from None
    try:
        return await open_database(settings)
    except SchemaOutOfDateError as error:
        # The provider's advice (alembic, option `migrate`) is not this command's.
        raise SchemaOutOfDateError(
            f"schema at {error.database_revision}; head is {error.head}: run "
            "`slack-agents-sa upgrade` first (this command never migrates)",
            database_revision=error.database_revision,
            head=error.head,
        ) from None
