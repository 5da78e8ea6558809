"""The progress bar of the long jobs (import, prune, rotate-keys): one look everywhere."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def shows_progress(wanted: bool) -> bool:
    """Whether a bar is drawn: asked for, and stderr is a terminal (not a log or a pipe)."""
    return wanted and sys.stderr.isatty()


def progress_bar(total: int | None, *, unit: str, desc: str, wanted: bool) -> tqdm[Any]:
    """A tqdm bar on stderr, drawn only where `shows_progress(wanted)`."""
    return tqdm(
        total=total, unit=unit, desc=desc, disable=not shows_progress(wanted), file=sys.stderr
    )
