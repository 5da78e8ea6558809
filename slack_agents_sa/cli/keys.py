"""The `rotate-keys` verb: re-encrypt the OAuth secrets under the first of the keys."""

from __future__ import annotations

import argparse
import os
from typing import Any

from slack_agents_sa.cli.common import Target, maintenance_database, say
from slack_agents_sa.cli.exits import EXIT_FAILED, EXIT_OK, UsageError
from slack_agents_sa.cli.progress import progress_bar, shows_progress
from slack_agents_sa.keys import RotationSummary, count_sealed_rows, rotate_keys
from slack_agents_sa.secretbox import split_keys

#: The keys `rotate-keys` uses when set (comma-separated), before `--config`'s option.
KEYS_ENV_VAR = "SLACK_AGENTS_SA_ENCRYPTION_KEYS"


def configured_keys(target: Target) -> Any:
    """The keys for `rotate-keys`: $SLACK_AGENTS_SA_ENCRYPTION_KEYS, else the option
    `encryption_keys` of `--config` (a list, or one comma-separated string)."""
    if os.environ.get(KEYS_ENV_VAR):
        return split_keys(os.environ[KEYS_ENV_VAR])
    if target.options.get("encryption_keys") is not None:
        return target.options["encryption_keys"]
    raise UsageError(
        f"no keys: set {KEYS_ENV_VAR} (comma-separated, the new key first), or pass "
        "--config with an agent's config.yaml whose storage has `encryption_keys`"
    )


def format_rotation(summary: RotationSummary) -> str:
    """What `rotate-keys` prints: a line per table."""
    lines = [
        f"{'table':<22}{'seen':>8}{'re-encrypted':>14}{'already current':>17}"
        f"{'changed meanwhile':>19}{'undecryptable':>15}"
    ]
    for name, t in summary.counts.items():
        lines.append(
            f"{name:<22}{t.seen:>8}{t.resealed:>14}{t.current:>17}{t.changed:>19}{t.failed:>15}"
        )
    return "\n".join(lines)


async def cmd_rotate_keys(target: Target, args: argparse.Namespace) -> int:
    keys = configured_keys(target)
    db = await maintenance_database(target, encryption_keys=keys)
    try:
        show = shows_progress(not args.no_progress)
        total = await count_sealed_rows(db) if show else None
        with progress_bar(total, unit="row", desc="re-encrypting", wanted=show) as bar:
            summary = await rotate_keys(db, batch_size=args.batch_size, on_batch=bar.update)
    finally:
        await db.dispose()
    print(format_rotation(summary))
    if summary.failed:
        say(
            f"{summary.failed} row(s) are encrypted under no key of encryption_keys: "
            "add the key they were written with (after the first) and run again"
        )
        return EXIT_FAILED
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Register the `rotate-keys` verb on the command line's subparsers."""
    verb = commands.add_parser(
        "rotate-keys",
        help="re-encrypt OAuth secrets under the first of encryption_keys",
        description=f"Keys from ${KEYS_ENV_VAR} (comma-separated, new key first), else "
        "--config's storage.encryption_keys. Rows already under the first key are not written.",
    )
    verb.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    verb.add_argument("--no-progress", action="store_true", help="no progress bar")
    verb.set_defaults(run=cmd_rotate_keys)
