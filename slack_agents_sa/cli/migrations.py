"""The schema verbs: `upgrade`, `downgrade`, `current`, `check`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from slack_agents_sa import migrate
from slack_agents_sa.cli.common import Target, connected
from slack_agents_sa.cli.exits import EXIT_NOT_AT_HEAD, EXIT_OK, NotAtHead
from slack_agents_sa.migrate import SchemaState, SchemaStatus


async def _migrated(
    target: Target, step: Callable[[AsyncEngine], Any], *, creates: bool = False
) -> int:
    """Connect (or report the database unreachable), run a migration step, print where it is."""
    engine, conn = await connected(target, creates=creates)
    try:
        await conn.close()
        await step(engine)
        async with engine.connect() as conn:
            heads = await conn.run_sync(migrate.current_revisions)
    finally:
        await engine.dispose()
    print(f"at {', '.join(sorted(heads)) or 'base'}")
    return EXIT_OK


async def cmd_upgrade(target: Target, args: argparse.Namespace) -> int:
    return await _migrated(
        target,
        lambda engine: migrate.upgrade(engine, args.revision, target.schema),
        creates=True,
    )


async def cmd_downgrade(target: Target, args: argparse.Namespace) -> int:
    return await _migrated(target, lambda engine: migrate.downgrade(engine, args.revision))


async def schema_state(target: Target) -> SchemaState:
    """Where the database's schema stands (connection failures become `Unreachable`)."""
    engine, conn = await connected(target)
    try:
        return await conn.run_sync(migrate.schema_state)
    finally:
        await conn.close()
        await engine.dispose()


def behind_message(state: SchemaState) -> str:
    """What to say of a schema behind this release's head."""
    found = state.revision if state.current else "base (no schema)"
    return f"schema at {found}; head is {state.head}: run `slack-agents-sa upgrade`"


def require_usable(state: SchemaState) -> None:
    """`NotAtHead` (exit 4) unless this release reads the schema as it is."""
    if state.status is SchemaStatus.NEWER_INCOMPATIBLE:
        raise NotAtHead(str(state.too_new()))
    if state.status is SchemaStatus.BEHIND:
        raise NotAtHead(behind_message(state))


async def cmd_current(target: Target, args: argparse.Namespace) -> int:
    state = await schema_state(target)
    for revision in sorted(state.current) or ["base"]:
        if state.status is SchemaStatus.AT_HEAD:
            note = " (head)"
        elif state.status is SchemaStatus.NEWER_COMPATIBLE:
            note = f" (newer than this release's head {state.head}; compatible)"
        elif state.status is SchemaStatus.NEWER_INCOMPATIBLE:
            needs = state.oldest_compatible_head or "a release whose head is this revision or later"
            needs += " (CHANGELOG.md lists each release's head)"
            note = (
                f" (unknown to this release, head {state.head}; needs slack_agents_sa at {needs})"
            )
        else:
            note = ""
        print(f"{revision}{note}")
    return EXIT_OK


async def cmd_check(target: Target, args: argparse.Namespace) -> int:
    state = await schema_state(target)
    if state.status is SchemaStatus.AT_HEAD:
        print(f"ok: connected, schema at head ({state.head})")
        return EXIT_OK
    if state.status is SchemaStatus.NEWER_COMPATIBLE:
        print(
            f"ok: connected, schema at {state.revision}, newer than this release's head "
            f"{state.head} and declared compatible with it"
        )
        return EXIT_OK
    if state.status is SchemaStatus.NEWER_INCOMPATIBLE:
        print(str(state.too_new()))
        return EXIT_NOT_AT_HEAD
    print(behind_message(state))
    return EXIT_NOT_AT_HEAD


def add_commands(commands: Any) -> None:
    """Register the schema verbs on the command line's subparsers."""
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
