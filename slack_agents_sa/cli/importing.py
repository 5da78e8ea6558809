"""The `import` verb: copy a database of the host's built-in provider into ours."""

from __future__ import annotations

import argparse
from typing import Any

from slack_agents_sa.cli.common import Target
from slack_agents_sa.cli.exits import EXIT_OK, UsageError
from slack_agents_sa.cli.progress import progress_bar, shows_progress
from slack_agents_sa.importer import ImportSummary, count_source_rows, import_database
from slack_agents_sa.settings import normalize_url


def format_import(summary: ImportSummary) -> str:
    """What `import` prints: rows per table in the source, and added by this run."""
    lines = [f"imported from {summary.source}", f"{'table':<16}{'in source':>12}{'added':>10}"]
    for name, count in summary.counts.items():
        lines.append(f"{name:<16}{count.source:>12}{count.added:>10}")
    return "\n".join(lines)


async def cmd_import(target: Target, args: argparse.Namespace) -> int:
    try:
        source = normalize_url(args.source)
    except ValueError as error:
        raise UsageError(f"--from: {error}") from None
    show = shows_progress(not args.no_progress)
    total = await count_source_rows(source) if show else None
    with progress_bar(total, unit="row", desc="importing", wanted=show) as bar:
        summary = await import_database(
            source, target.settings, batch_size=args.batch_size, on_batch=bar.update
        )
    print(format_import(summary))
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Register the `import` verb on the command line's subparsers."""
    importer = commands.add_parser(
        "import", help="copy a database of the host's built-in sqlite or postgres provider"
    )
    importer.add_argument("--from", dest="source", required=True, help="the source database URL")
    importer.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    importer.add_argument("--no-progress", action="store_true", help="no progress bar")
    importer.set_defaults(run=cmd_import)
