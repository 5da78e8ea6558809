"""What every verb shares: exit codes, the database URL and options from an agent's
config.yaml, the reachability probe, and a maintenance job's database."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from slack_agents_sa.database import Database, make_engine
from slack_agents_sa.errors import ConfigError, SlackAgentsSAError
from slack_agents_sa.settings import (
    DEFAULT_URL,
    URL_ENV_VAR,
    ProviderSettings,
    normalize_url,
    safe_url,
)
from slack_agents_sa.startup import open_database

EXIT_OK = 0
#: The command ran and failed (a migration error, an import error).
EXIT_FAILED = 1
#: Bad arguments or configuration (unknown URL scheme, unreadable config.yaml).
EXIT_USAGE = 2
#: The database could not be reached.
EXIT_UNREACHABLE = 3
#: `check`, `stats`: connected, but the schema is not at the migrations' head.
EXIT_NOT_AT_HEAD = 4
#: Interrupted (Ctrl-C): the shell's convention, 128 + SIGINT.
EXIT_INTERRUPTED = 130

PROVIDER_TYPE = "slack_agents_sa"


class UsageError(SlackAgentsSAError):
    """Arguments or configuration the command cannot work with."""


class Unreachable(SlackAgentsSAError):
    """The database did not answer the command's first connection."""


class NotAtHead(SlackAgentsSAError):
    """Connected, but the schema is not one this release works on (exit 4)."""


def say(message: str) -> None:
    """A line for the person at the terminal (stderr: stdout is the command's answer)."""
    print(message, file=sys.stderr, flush=True)


def _env_substituted(text: str) -> str:
    """config.yaml's `{VAR}` placeholders, replaced as the host replaces them.

    As slack_agents.config does: whole-line comments are blanked first (a commented-out
    `# url: "{OLD_URL}"` needs no OLD_URL), then every `{VAR}` left must be set.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise UsageError(f"config.yaml uses {{{name}}}, but {name} is not set")
        return os.environ[name]

    uncommented = re.sub(r"(?m)^(\s*)#.*$", r"\1", text)
    return re.sub(r"\{([A-Z_][A-Z0-9_]*)\}", value, uncommented)


def storage_options(path: Path) -> dict[str, Any]:
    """The `storage:` mapping of an agent's config.yaml (or of the agent directory holding
    one), placeholders filled as the host fills them; UsageError unless it names us."""
    import yaml

    config_file = path / "config.yaml" if path.is_dir() else path
    try:
        data = yaml.safe_load(_env_substituted(config_file.read_text(encoding="utf-8")))
    except OSError as error:
        raise UsageError(f"cannot read {config_file}: {error.strerror}") from None
    except yaml.MarkedYAMLError as error:
        # Not str(error): it quotes the offending line, which may hold a password.
        line = f"line {error.problem_mark.line + 1}: " if error.problem_mark else ""
        problem = error.problem or "malformed"
        raise UsageError(f"{config_file} is not valid YAML ({line}{problem})") from None
    except yaml.YAMLError:
        raise UsageError(f"{config_file} is not valid YAML") from None
    storage = (data or {}).get("storage") if isinstance(data, dict) else None
    if not isinstance(storage, dict) or storage.get("type") != PROVIDER_TYPE:
        raise UsageError(f"{config_file} has no `storage:` with `type: {PROVIDER_TYPE}`")
    return storage


def url_from_config(path: Path) -> str:
    """`storage.url` of an agent's config.yaml (or of the agent directory holding one)."""
    url = storage_options(path).get("url", DEFAULT_URL)
    if not isinstance(url, str):
        raise UsageError(f"{path}: storage.url must be a string")
    return url


def resolve_url(args: argparse.Namespace) -> URL:
    """The database to work on, by the documented precedence."""
    if args.url:
        raw = args.url
    elif os.environ.get(URL_ENV_VAR):
        raw = os.environ[URL_ENV_VAR]
    elif args.config:
        raw = url_from_config(Path(args.config))
    else:
        raw = DEFAULT_URL
    try:
        return normalize_url(raw)
    except ValueError as error:
        raise UsageError(str(error)) from None


async def connected(url: URL, schema: str | None) -> tuple[AsyncEngine, AsyncConnection]:
    """An engine and one of its connections, or `Unreachable` (exit 3) naming the database."""
    engine = make_engine(url, schema=schema)
    try:
        return engine, await engine.connect()
    except Exception as error:
        await engine.dispose()
        raise Unreachable(f"cannot connect to {safe_url(url)}: {error}") from None


async def probe(url: URL, schema: str | None) -> None:
    """`Unreachable` (exit 3) unless the database answers; the drivers' own errors at
    start-up would each look different."""
    engine, conn = await connected(url, schema)
    await conn.close()
    await engine.dispose()


async def maintenance_database(url: URL, schema: str | None, **options: Any) -> Database:
    """The database a maintenance job works on: reachable, schema at head and left as it
    is (a maintenance job never migrates), with provider `options`."""
    await probe(url, schema)
    if schema is not None:
        options["schema"] = schema
    try:
        settings = ProviderSettings.from_options(
            {"url": url.render_as_string(hide_password=False), "migrate": False, **options}
        )
    except ConfigError as error:
        raise UsageError(str(error)) from None
    return await open_database(settings)
