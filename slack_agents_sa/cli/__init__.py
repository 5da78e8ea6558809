"""`slack-agents-sa`: migrate, inspect and fill a slack_agents_sa database from the shell.

The database comes from `--url`, else an agent's config.yaml (`--config`: its `storage:`
options, validated as the agent validates them), else SLACK_AGENTS_SA_URL, else the
embedded SQLite default. Exit codes are stable for scripts; see `EXIT_*` and docs/cli.md.
The verbs live one group to a module; this one parses, runs a verb, and turns what it
raised into an exit code.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from slack_agents_sa import __version__
from slack_agents_sa.cli import erasure, importing, keys, migrations, prune, stats
from slack_agents_sa.cli.common import Target, resolve_target, say
from slack_agents_sa.cli.exits import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_AT_HEAD,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    NotAtHead,
    Unreachable,
    UsageError,
)
from slack_agents_sa.errors import SlackAgentsSAError
from slack_agents_sa.settings import DEFAULT_URL, URL_ENV_VAR, safe_url

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_AT_HEAD",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "main",
]

Command = Callable[[Target, argparse.Namespace], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slack-agents-sa",
        description="Migrate, check, import, prune, erase, inspect and re-key slack_agents_sa "
        "databases.",
        epilog=f"URL precedence: --url, --config (refused when ${URL_ENV_VAR} names another "
        f"database), ${URL_ENV_VAR}, {DEFAULT_URL}. "
        "Exit codes: 0 ok, 1 failed, 2 usage or configuration, 3 unreachable, "
        "4 schema not at head (check, stats), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help="database URL, e.g. postgresql://user@host/db")
    where.add_argument("--config", help="an agent's config.yaml, or its directory")
    parser.add_argument("--schema", help="PostgreSQL schema holding our tables (option `schema`)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for verbs in (migrations, importing, prune, erasure, stats, keys):
        verbs.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Command = args.run
    try:
        target = resolve_target(args)
        say(f"database: {safe_url(target.url)} (from {target.source})")
        return asyncio.run(run(target, args))
    except UsageError as error:
        say(f"error: {error}")
        return EXIT_USAGE
    except Unreachable as error:
        say(f"error: {error}")
        return EXIT_UNREACHABLE
    except NotAtHead as error:
        say(f"error: {error}")
        return EXIT_NOT_AT_HEAD
    except OSError as error:  # connection refused, ConnectionLostError, DNS failure
        say(f"error: cannot reach the database: {error}")
        return EXIT_UNREACHABLE
    except SlackAgentsSAError as error:
        say(f"error: {error}")
        return EXIT_FAILED
    except Exception as error:  # a migration or import failure: say it, never a traceback
        say(f"error: {type(error).__name__}: {error}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        # Each batch or migration is one transaction: what ran is whole, the rest absent.
        say("interrupted")
        return EXIT_INTERRUPTED
