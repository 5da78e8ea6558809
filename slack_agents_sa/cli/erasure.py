"""The `erase-user` verb: delete what a person wrote, in batches, and print a receipt."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from slack_agents_sa.cli.common import (
    INTERRUPTED_BATCHES,
    Target,
    check_names,
    maintenance_database,
    say,
)
from slack_agents_sa.cli.exits import EXIT_OK, UsageError
from slack_agents_sa.cli.progress import progress_bar, shows_progress
from slack_agents_sa.cli.prune import whole_number
from slack_agents_sa.erasure import (
    DEFAULT_BATCH_SIZE,
    ErasureReceipt,
    count_user_conversations,
    erase_user_data,
)


def receipt_as_dict(receipt: ErasureReceipt) -> dict[str, Any]:
    """The receipt as JSON-ready data (times as ISO 8601 strings)."""
    data = asdict(receipt)
    for name, value in data.items():
        if isinstance(value, datetime):
            data[name] = value.isoformat()
    return data


def format_receipt(receipt: ErasureReceipt) -> str:
    """What `erase-user` prints: rows per table, the conversations touched, when."""
    verb = "would delete (dry run)" if receipt.dry_run else "deleted"
    scope = f"agent {receipt.agent_name}" if receipt.agent_name else "every agent"
    threads = ", whole threads" if receipt.whole_threads else ""
    lines = [f"{verb}: one person's data, {scope}{threads}"]
    lines.append(f"{'table':<16}{'rows':>12}")
    lines += [f"{table:<16}{rows:>12}" for table, rows in receipt.counts.items()]
    for label, ids in (
        ("conversations deleted whole", receipt.deleted_conversations),
        ("conversations kept, their messages deleted", receipt.trimmed_conversations),
    ):
        lines.append(f"{label}: {', '.join(map(str, ids)) or 'none'}")
    finished = receipt.finished_at or receipt.started_at
    lines.append(
        f"started {receipt.started_at.isoformat(timespec='seconds')}, "
        f"finished {finished.isoformat(timespec='seconds')}; "
        f"batches: {receipt.batches}, longest {receipt.longest_batch_ms:.1f} ms"
    )
    return "\n".join(lines)


async def cmd_erase_user(target: Target, args: argparse.Namespace) -> int:
    if not args.user_id:
        raise UsageError("user_id: give the Slack user id of the person to erase")
    check_names(("user_id", args.user_id), ("--agent", args.agent))
    db = await maintenance_database(target)
    try:
        show = shows_progress(not args.no_progress)
        total = await count_user_conversations(db, args.user_id, args.agent) if show else None
        with progress_bar(
            total,
            unit="conversation",
            desc="counting" if args.dry_run else "erasing",
            wanted=show,
        ) as bar:
            try:
                receipt = await erase_user_data(
                    db,
                    args.user_id,
                    args.agent,
                    args.whole_threads,
                    args.dry_run,
                    args.batch_size,
                    bar.update,
                )
            except asyncio.CancelledError:  # Ctrl-C
                say(INTERRUPTED_BATCHES)
                raise
    finally:
        await db.dispose()
    print(json.dumps(receipt_as_dict(receipt), indent=2) if args.json else format_receipt(receipt))
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Register the `erase-user` verb on the command line's subparsers."""
    erase = commands.add_parser(
        "erase-user",
        help="delete what one person wrote, and the conversations only they wrote in",
        description="Delete a person's messages with their blocks and tool calls, every "
        "conversation in which they are the only person who wrote, and their OAuth tokens; "
        "in short transactions. Interrupted, run it again: it carries on. Prints a receipt: "
        "rows per table and the conversation ids, never the content.",
    )
    erase.add_argument("user_id", metavar="USER_ID", help="the person's Slack user id")
    erase.add_argument(
        "--agent",
        help="only this agent's conversations (the OAuth tokens, shared by all agents, stay)",
    )
    erase.add_argument(
        "--whole-threads",
        action="store_true",
        help="delete every conversation they wrote in, other people's messages included",
    )
    erase.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    erase.add_argument("--json", action="store_true", help="print the receipt as JSON")
    erase.add_argument(
        "--batch-size",
        type=whole_number,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"conversations per transaction (default {DEFAULT_BATCH_SIZE})",
    )
    erase.add_argument("--no-progress", action="store_true", help="no progress bar")
    erase.set_defaults(run=cmd_erase_user)
