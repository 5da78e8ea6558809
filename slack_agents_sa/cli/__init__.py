"""`slack-agents-sa`: migrate, inspect and fill a slack_agents_sa database from the shell.

The database URL comes from `--url`, else SLACK_AGENTS_SA_URL, else an agent's
config.yaml (`--config`, its `storage.url`), else the embedded SQLite default. Exit codes
are stable for scripts; see `EXIT_*` and docs/cli.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from slack_agents_sa import keys, migrate, retention, stats
from slack_agents_sa.database import make_engine
from slack_agents_sa.errors import SlackAgentsSAError
from slack_agents_sa.settings import (
    DEFAULT_URL,
    URL_ENV_VAR,
    check_schema,
    normalize_url,
    safe_url,
)

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


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _connected(url: URL, schema: str | None) -> tuple[AsyncEngine, AsyncConnection]:
    engine = make_engine(url, schema=schema)
    try:
        return engine, await engine.connect()
    except Exception as error:
        await engine.dispose()
        raise _Unreachable(f"cannot connect to {safe_url(url)}: {error}") from None


class _Unreachable(SlackAgentsSAError):
    pass


async def _migrated(url: URL, schema: str | None, step: Callable[[AsyncEngine], Any]) -> int:
    """Connect (or report the database unreachable), run a migration step, print where it is."""
    engine, conn = await _connected(url, schema)
    await conn.close()
    try:
        await step(engine)
        async with engine.connect() as conn:
            heads = await conn.run_sync(migrate.current_revisions)
    finally:
        await engine.dispose()
    print(f"at {', '.join(sorted(heads)) or 'base'}")
    return EXIT_OK


async def cmd_upgrade(url: URL, args: argparse.Namespace) -> int:
    return await _migrated(
        url, args.schema, lambda engine: migrate.upgrade(engine, args.revision, args.schema)
    )


async def cmd_downgrade(url: URL, args: argparse.Namespace) -> int:
    return await _migrated(
        url, args.schema, lambda engine: migrate.downgrade(engine, args.revision)
    )


async def _schema_state(url: URL, schema: str | None) -> migrate.SchemaState:
    """Where the database's schema stands (connection failures become `_Unreachable`)."""
    engine, conn = await _connected(url, schema)
    try:
        return await conn.run_sync(migrate.schema_state)
    finally:
        await conn.close()
        await engine.dispose()


async def cmd_current(url: URL, args: argparse.Namespace) -> int:
    state = await _schema_state(url, args.schema)
    for revision in sorted(state.current) or ["base"]:
        if state.status is migrate.SchemaStatus.AT_HEAD:
            note = " (head)"
        elif state.status is migrate.SchemaStatus.NEWER_COMPATIBLE:
            note = f" (newer than this release's head {state.head}; compatible)"
        elif state.status is migrate.SchemaStatus.NEWER_INCOMPATIBLE:
            needs = state.oldest_compatible_head or "a release that knows it"
            note = (
                f" (unknown to this release, head {state.head}; needs slack_agents_sa at {needs})"
            )
        else:
            note = ""
        print(f"{revision}{note}")
    return EXIT_OK


async def cmd_check(url: URL, args: argparse.Namespace) -> int:
    state = await _schema_state(url, args.schema)
    if state.status is migrate.SchemaStatus.AT_HEAD:
        print(f"ok: connected, schema at head ({state.head})")
        return EXIT_OK
    if state.status is migrate.SchemaStatus.NEWER_COMPATIBLE:
        print(
            f"ok: connected, schema at {state.revision}, newer than this release's head "
            f"{state.head} and declared compatible with it"
        )
        return EXIT_OK
    if state.status is migrate.SchemaStatus.NEWER_INCOMPATIBLE:
        print(str(state.too_new()))
        return EXIT_NOT_AT_HEAD
    found = state.revision if state.current else "base (no schema)"
    print(f"schema at {found}; head is {state.head}: run `slack-agents-sa upgrade`")
    return EXIT_NOT_AT_HEAD


async def cmd_import(url: URL, args: argparse.Namespace) -> int:
    from slack_agents_sa.importer import import_database

    try:
        source = normalize_url(args.source)
    except ValueError as error:
        raise UsageError(f"--from: {error}") from None
    summary = await import_database(
        source, url, batch_size=args.batch_size, progress=not args.no_progress
    )
    print(summary.table())
    return EXIT_OK


Command = Callable[[URL, argparse.Namespace], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slack-agents-sa",
        description="Migrate, check, import, prune, inspect and re-key slack_agents_sa databases.",
        epilog=f"URL precedence: --url, ${URL_ENV_VAR}, --config, {DEFAULT_URL}. "
        "Exit codes: 0 ok, 1 failed, 2 usage or configuration, 3 unreachable, "
        "4 schema not at head (check, stats), 130 interrupted.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="database URL, e.g. postgresql://user@host/db")
    where.add_argument("--config", help="an agent's config.yaml, or its directory")
    parser.add_argument("--schema", help="PostgreSQL schema holding our tables (option `schema`)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    upgrade = commands.add_parser("upgrade", help="migrate to a revision (default: head)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(run=cmd_upgrade)

    downgrade = commands.add_parser("downgrade", help="migrate down to a revision ('base': none)")
    downgrade.add_argument("revision", help="target revision, e.g. 0001, -1 or base")
    downgrade.set_defaults(run=cmd_downgrade)

    current = commands.add_parser("current", help="print the database's revision")
    current.set_defaults(run=cmd_current)

    check = commands.add_parser("check", help="connection ok and schema at head? (exit 0/3/4)")
    check.set_defaults(run=cmd_check)

    importer = commands.add_parser(
        "import", help="copy a database of the host's built-in sqlite or postgres provider"
    )
    importer.add_argument("--from", dest="source", required=True, help="the source database URL")
    importer.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    importer.add_argument("--no-progress", action="store_true", help="no progress bar")
    importer.set_defaults(run=cmd_import)

    for verbs in (retention, stats, keys):
        verbs.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Command = args.run
    try:
        url = resolve_url(args)
        if args.schema is not None:
            try:
                check_schema(url, args.schema)
            except ValueError as error:
                raise UsageError(f"--schema {error}") from None
        _say(f"database: {safe_url(url)}")
        return asyncio.run(run(url, args))
    except UsageError as error:
        _say(f"error: {error}")
        return EXIT_USAGE
    except _Unreachable as error:
        _say(f"error: {error}")
        return EXIT_UNREACHABLE
    except OSError as error:  # connection refused, ConnectionLostError, DNS failure
        _say(f"error: cannot reach the database: {error}")
        return EXIT_UNREACHABLE
    except SlackAgentsSAError as error:
        _say(f"error: {error}")
        return EXIT_FAILED
    except Exception as error:  # a migration or import failure: say it, never a traceback
        _say(f"error: {type(error).__name__}: {error}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        # Each batch or migration is one transaction: what ran is whole, the rest absent.
        _say("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
