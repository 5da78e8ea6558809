"""The `stats` verb: counts per agent and namespace, printed as tables or as JSON."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from slack_agents_sa import migrate
from slack_agents_sa.cli.common import Target, connected
from slack_agents_sa.cli.exits import EXIT_OK
from slack_agents_sa.cli.migrations import require_usable
from slack_agents_sa.stats import BLOCK_TYPES, Stats, collect_stats


async def cmd_stats(target: Target, args: argparse.Namespace) -> int:
    engine, conn = await connected(target)
    try:
        try:
            state = await conn.run_sync(migrate.schema_state)
        finally:
            await conn.close()
        require_usable(state)
        stats = await collect_stats(engine)
    finally:
        await engine.dispose()
    print(json.dumps(stats.as_dict(), indent=2) if args.json else format_stats(stats))
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Register the `stats` verb on the command line's subparsers."""
    parser = commands.add_parser(
        "stats", help="counts per agent and key-value namespace, and the database's size"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(run=cmd_stats)


_AGENT_HEADERS = ["agent", "conversations", "messages", "blocks", "tool calls", "file bytes"]
_ACTIVITY_HEADERS = ["oldest activity (UTC)", "newest activity (UTC)"]


def format_stats(stats: Stats) -> str:
    """`stats` as readable tables (what `stats` prints without `--json`)."""
    agents = stats.agents
    extra_types = sorted({name for agent in agents for name in agent.blocks} - set(BLOCK_TYPES))
    types = [*BLOCK_TYPES, *extra_types]
    size = "unknown" if stats.database_bytes is None else _bytes(stats.database_bytes)
    agent_rows = [
        [
            agent.agent,
            _n(agent.conversations),
            _n(agent.messages),
            _n(sum(agent.blocks.values())),
            _n(agent.tool_calls),
            _bytes(agent.file_bytes),
            _when(agent.oldest_activity),
            _when(agent.newest_activity),
        ]
        for agent in agents
    ]
    type_rows = [
        [agent.agent, *(_n(agent.blocks.get(name, 0)) for name in types)] for agent in agents
    ]
    namespace_rows = [
        [ns.namespace, _n(ns.entries), _n(ns.items), _bytes(ns.bytes)] for ns in stats.namespaces
    ]
    return "\n\n".join(
        [
            f"database size: {size}",
            _section("agents", [*_AGENT_HEADERS, *_ACTIVITY_HEADERS], agent_rows),
            _section("blocks by type", ["agent", *types], type_rows),
            _section(
                "key-value namespaces", ["namespace", "entries", "items", "bytes"], namespace_rows
            ),
        ]
    )


def _section(title: str, headers: list[str], rows: list[list[str]]) -> str:
    """A titled plain-text table: first column left-aligned, the figures right-aligned."""
    if not rows:
        return f"{title}: none"
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        aligned = [first.ljust(widths[0])]
        aligned += [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  ".join(aligned).rstrip()

    return "\n".join([f"{title}:", line(headers), *(line(row) for row in rows)])


def _n(count: int) -> str:
    return f"{count:,}"


def _bytes(size: int) -> str:
    if size < 1024:
        return f"{size:,} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TiB"


def _when(when: datetime | None) -> str:
    return "-" if when is None else when.strftime("%Y-%m-%d %H:%M:%S")
