"""The `prune` verb: old conversations, or a key-value namespace's old data, in batches."""

from __future__ import annotations

import argparse
import asyncio
import re
from datetime import timedelta
from typing import Any

from slack_agents_sa.cli.common import (
    INTERRUPTED_BATCHES,
    Target,
    check_names,
    maintenance_database,
    say,
)
from slack_agents_sa.cli.exits import EXIT_OK
from slack_agents_sa.cli.progress import progress_bar, shows_progress
from slack_agents_sa.retention import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_NAMESPACE_BATCH_SIZE,
    PruneResult,
    count_old_conversations,
    count_old_key_values,
    prune_conversations,
    prune_key_values,
)
from slack_agents_sa.types import utcnow

#: The longest age `--older-than` takes (100 years): a longer one is surely a typo.
_LONGEST_AGE = timedelta(days=36_500)
_DURATION = re.compile(r"([0-9]{1,9})([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_duration(text: str) -> timedelta:
    """`90d`, `12h` or `30m` as a timedelta; argparse's type error (exit 2) otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write a whole number and d, h or m (90d, 12h, 30m)"
        )
    age = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if age <= timedelta(0):
        raise argparse.ArgumentTypeError("the duration must be more than 0")
    if age > _LONGEST_AGE:
        raise argparse.ArgumentTypeError("the duration may be at most 36500d (100 years)")
    return age


def whole_number(text: str) -> int:
    """A `--batch-size`: a whole number of at least 1 (argparse's type error otherwise)."""
    if not re.fullmatch(r"[0-9]{1,9}", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def format_prune(result: PruneResult) -> str:
    """What `prune` prints: rows per table, the batches and the longest of them."""
    verb = "would delete (dry run)" if result.dry_run else "deleted"
    lines = [f"{verb}: older than {result.cutoff.isoformat(timespec='seconds')}"]
    lines.append(f"{'table':<16}{'rows':>12}")
    lines += [f"{table:<16}{rows:>12}" for table, rows in result.counts.items()]
    lines.append(f"batches: {result.batches}, longest {result.longest_batch_ms:.1f} ms")
    return "\n".join(lines)


async def cmd_prune(target: Target, args: argparse.Namespace) -> int:
    check_names(("--agent", args.agent), ("--namespace", args.namespace))
    by_namespace = args.namespace is not None
    batch_size = args.batch_size or (
        DEFAULT_NAMESPACE_BATCH_SIZE if by_namespace else DEFAULT_BATCH_SIZE
    )
    db = await maintenance_database(target)
    try:
        cutoff = utcnow() - args.older_than
        show = shows_progress(not args.no_progress)
        total = None
        if show and by_namespace:
            total = await count_old_key_values(db, args.namespace, cutoff)
        elif show:
            total = await count_old_conversations(db, cutoff, args.agent)
        with progress_bar(
            total,
            unit="row" if by_namespace else "conversation",
            desc="counting" if args.dry_run else "pruning",
            wanted=show,
        ) as bar:
            try:
                if by_namespace:
                    result = await prune_key_values(
                        db, args.namespace, cutoff, args.dry_run, batch_size, bar.update
                    )
                else:
                    result = await prune_conversations(
                        db, cutoff, args.agent, args.dry_run, batch_size, bar.update
                    )
            except asyncio.CancelledError:  # Ctrl-C
                say(INTERRUPTED_BATCHES)
                raise
    finally:
        await db.dispose()
    print(format_prune(result))
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Register the `prune` verb on the command line's subparsers."""
    prune = commands.add_parser(
        "prune",
        help="delete conversations (or a namespace's key-value data) older than an age",
        description="Delete conversations last active before now minus --older-than, with "
        "their messages, blocks and tool calls, in short transactions; or, with --namespace, "
        "that namespace's set values last written and appended items appended before it. "
        "Interrupted, run it again: it carries on.",
    )
    prune.add_argument(
        "--older-than",
        required=True,
        type=parse_duration,
        metavar="AGE",
        help="90d, 12h or 30m: prune what is older than this",
    )
    which = prune.add_mutually_exclusive_group()
    which.add_argument("--agent", help="only this agent's conversations")
    which.add_argument("--namespace", help="prune this key-value namespace instead")
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    prune.add_argument(
        "--batch-size",
        type=whole_number,
        default=None,
        metavar="N",
        help=f"conversations per transaction (default {DEFAULT_BATCH_SIZE}); "
        f"with --namespace, rows per statement (default {DEFAULT_NAMESPACE_BATCH_SIZE})",
    )
    prune.add_argument("--no-progress", action="store_true", help="no progress bar")
    prune.set_defaults(run=cmd_prune)
