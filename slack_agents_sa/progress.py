"""How a long job (prune, import, key rotation) tells its caller how far it is.

The jobs only call back; drawing a bar is the command line's business (`cli/progress.py`).
"""

from __future__ import annotations

from collections.abc import Callable

#: Called after each batch with how many rows (or conversations) it went through.
OnProgress = Callable[[int], object]


def no_progress(count: int) -> None:
    """An `OnProgress` for a caller that asked for none."""
