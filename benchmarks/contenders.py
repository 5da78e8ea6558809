"""The contenders the benchmarks compare, and the databases they run on.

On SQLite (file) and PostgreSQL: ours on the native executor, ours on SQLAlchemy's generic
executor, and the host's built-in provider of the same database (optionally ours with every
domain method left to the host base class's defaults). On MySQL/MariaDB, which has no
built-in provider: ours native against ours generic. Server databases are scratch databases
created on the server the test environment variable names, and dropped afterwards.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slack_agents.storage.base import BaseStorageProvider

if TYPE_CHECKING:
    from slack_agents_sa import Provider

NATIVE, GENERIC, BUILTIN, PRIMITIVES = (
    "ours (native)",
    "ours (sqlalchemy)",
    "built-in",
    "ours, primitives only",
)
#: Command-line spelling of each contender (benchmarks.memory --contender).
CONTENDER_KEYS = {"native": NATIVE, "sqlalchemy": GENERIC, "builtin": BUILTIN}

#: Domain methods the host base class implements on the six primitives.
DOMAIN_METHODS = (
    "get_or_create_conversation",
    "has_conversation",
    "create_message",
    "get_message_blocks",
    "append_text_block",
    "append_file_block",
    "append_tool_block",
    "append_usage_block",
    "get_tool_call",
    "upsert_heartbeat",
    "get_heartbeat",
    "get_conversations_for_export",
    "get_messages_with_blocks",
)

POSTGRES_ENV = "SLACK_AGENTS_SA_TEST_POSTGRES_URL"
MYSQL_ENV = "SLACK_AGENTS_SA_TEST_MYSQL_URL"


@dataclass(frozen=True)
class Backend:
    """One database the benchmarks run on."""

    key: str
    title: str
    #: The environment variable naming the server (None: SQLite file, no server).
    env_var: str | None
    #: The contender ratios are taken against.
    reference: str

    def contenders(self, primitives: bool = False) -> list[str]:
        if self.reference == GENERIC:
            return [NATIVE, GENERIC]
        return [NATIVE, GENERIC, BUILTIN, *([PRIMITIVES] if primitives else [])]

    @property
    def server_url(self) -> str | None:
        return os.environ.get(self.env_var) if self.env_var else None


SQLITE = Backend("sqlite", "SQLite (file)", None, BUILTIN)
POSTGRESQL = Backend("postgresql", "PostgreSQL", POSTGRES_ENV, BUILTIN)
MYSQL = Backend("mysql", "MariaDB", MYSQL_ENV, GENERIC)
BACKENDS = {backend.key: backend for backend in (SQLITE, POSTGRESQL, MYSQL)}


@asynccontextmanager
async def database_urls(backend: Backend, count: int) -> AsyncIterator[list[str]]:
    """`count` new, empty databases of `backend`: SQLite file paths or server URLs."""
    if backend.env_var is None:
        with tempfile.TemporaryDirectory(prefix="sa-bench-") as folder:
            yield [str(Path(folder) / f"bench-{index}.db") for index in range(count)]
        return
    from slack_agents_sa.settings import normalize_url
    from tests.databases import create_scratch_database, drop_scratch_database

    raw = backend.server_url
    if not raw:
        raise RuntimeError(f"set {backend.env_var} to benchmark {backend.title}")
    server = normalize_url(raw)
    databases = []
    try:
        for _ in range(count):
            databases.append(await create_scratch_database(server))
        yield [url.render_as_string(hide_password=False) for url in databases]
    finally:
        for url in databases:
            await drop_scratch_database(server, url)


def make_storage(backend: Backend, contender: str, database: str) -> BaseStorageProvider:
    """An unstarted provider of `contender` on `database` (from `database_urls`).

    Imports only what the contender needs, so that benchmarks.memory measures just that.
    """
    if contender == BUILTIN:
        if backend is SQLITE:
            from slack_agents.storage import sqlite as builtin_sqlite

            return builtin_sqlite.Provider(database)
        if backend is POSTGRESQL:
            from slack_agents.storage import postgres as builtin_postgres

            # asyncpg itself takes a plain postgresql:// URL.
            return builtin_postgres.Provider(
                database.replace("postgresql+asyncpg://", "postgresql://", 1)
            )
        raise ValueError(f"no built-in provider for {backend.title}")
    from slack_agents_sa import Provider

    url = f"sqlite:///{database}" if backend is SQLITE else database
    if contender == NATIVE:
        return Provider(url=url, executor="native")
    if contender == GENERIC:
        return Provider(url=url, executor="sqlalchemy")
    if contender == PRIMITIVES:
        return primitives_only()(url=url, executor="native")
    raise ValueError(f"unknown contender {contender!r}")


def primitives_only() -> type[Provider]:
    """Our provider with every domain method left to the host base class's defaults."""
    from slack_agents_sa import Provider

    class PrimitivesOnly(Provider):
        pass

    for name in DOMAIN_METHODS:
        setattr(PrimitivesOnly, name, getattr(BaseStorageProvider, name))
    return PrimitivesOnly


def executor_kind(storage: BaseStorageProvider) -> str:
    """ "native", "sqlalchemy", or "built-in": what a started contender runs on."""
    database = getattr(storage, "db", None)
    return str(database.executor_kind) if database is not None else "built-in"


Prepare = Callable[[BaseStorageProvider], Awaitable[object]]


@asynccontextmanager
async def started_contenders(
    backend: Backend, names: list[str], prepare: Prepare | None = None
) -> AsyncIterator[dict[str, BaseStorageProvider]]:
    """Each named contender started on a database of its own, `prepare`d, closed afterwards."""
    async with database_urls(backend, len(names)) as databases, AsyncExitStack() as stack:
        contenders: dict[str, BaseStorageProvider] = {}
        for name, database in zip(names, databases, strict=True):
            storage = make_storage(backend, name, database)
            await storage.initialize()
            stack.push_async_callback(storage.close)
            expected = {NATIVE: "native", GENERIC: "sqlalchemy"}.get(name)
            if expected is not None and executor_kind(storage) != expected:
                raise RuntimeError(f"{name} runs on {executor_kind(storage)!r}")
            if prepare is not None:
                await prepare(storage)
            contenders[name] = storage
        yield contenders


__all__ = [
    "BACKENDS",
    "BUILTIN",
    "CONTENDER_KEYS",
    "GENERIC",
    "MYSQL",
    "NATIVE",
    "POSTGRESQL",
    "PRIMITIVES",
    "SQLITE",
    "Backend",
    "database_urls",
    "executor_kind",
    "make_storage",
    "started_contenders",
]
