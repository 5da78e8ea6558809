"""The databases the scale benchmarks fill: a SQLite file, or a scratch PostgreSQL database."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from slack_agents_sa.settings import normalize_url
from tests.databases import POSTGRES_ENV, create_scratch_database, drop_scratch_database

#: `--backend` choices of the scale benchmarks, and the label each prints.
LABELS = {"sqlite": "SQLite (file)", "postgresql": "PostgreSQL"}


def chosen(backend: str) -> list[str] | None:
    """The backends `--backend` names ("all": both); None, after saying why, when
    PostgreSQL is asked for and its server variable is not set."""
    backends = list(LABELS) if backend == "all" else [backend]
    if "postgresql" in backends and not os.environ.get(POSTGRES_ENV):
        print(f"error: set {POSTGRES_ENV} to measure PostgreSQL", file=sys.stderr)
        return None
    return backends


@asynccontextmanager
async def empty_database(backend: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on `backend`, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="sa-bench-") as folder:
            yield f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        return
    server = normalize_url(os.environ[POSTGRES_ENV])
    database = await create_scratch_database(server)
    try:
        yield database.render_as_string(hide_password=False)
    finally:
        await drop_scratch_database(server, database)
