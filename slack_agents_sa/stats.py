"""A look inside: per-agent and per-namespace counts (`slack-agents-sa stats`).

`collect_stats(engine_or_connection)` is the public entry point; the command line prints
its result as a table or as JSON. Every figure comes from a handful of GROUP BY statements
(five, plus one for the database size), never one statement per agent or conversation;
how a database measures bytes is its backend's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from slack_agents_sa.backends import Backend, backend_for
from slack_agents_sa.models import (
    Block,
    Conversation,
    KeyValueEntry,
    ListItem,
    Message,
    ToolCall,
    table_of,
)

#: The block types the host writes, in the order they are shown; counts always have them all.
BLOCK_TYPES = ("user_text", "text", "user_file", "file", "tool_use", "usage")
_FILE_TYPES = ("user_file", "file")


@dataclass(frozen=True)
class AgentStats:
    """What one agent (`Conversation.agent_name`) has stored."""

    agent: str
    conversations: int
    messages: int
    #: Blocks by `block_type`: every name in `BLOCK_TYPES`, then any other type found.
    blocks: Mapping[str, int]
    tool_calls: int
    #: The sum of the `size_bytes` the host gave for its `user_file` and `file` blocks.
    file_bytes: int
    #: The first and last message's `created_at` (None: no messages yet).
    oldest_activity: datetime | None
    newest_activity: datetime | None


@dataclass(frozen=True)
class NamespaceStats:
    """What one key-value namespace holds."""

    namespace: str
    #: Values written by `set` (one per key).
    entries: int
    #: Items written by `append` (any number per key).
    items: int
    #: The UTF-8 length of the stored JSON text of all of them.
    bytes: int


@dataclass(frozen=True)
class Stats:
    """`collect_stats`' answer: agents and namespaces sorted by name."""

    #: The SQLAlchemy dialect name (`sqlite`, `postgresql`, `mysql`, `mariadb`).
    dialect: str
    #: The whole database's size, host tables included; None where the dialect cannot tell.
    database_bytes: int | None
    agents: tuple[AgentStats, ...]
    namespaces: tuple[NamespaceStats, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: always the same keys, datetimes as ISO 8601 strings in UTC."""
        figures = asdict(self)
        figures["agents"] = list(figures["agents"])
        figures["namespaces"] = list(figures["namespaces"])
        for agent in figures["agents"]:
            agent["oldest_activity"] = _iso(agent["oldest_activity"])
            agent["newest_activity"] = _iso(agent["newest_activity"])
        return figures


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _backend(conn: AsyncConnection) -> Backend:
    return backend_for(conn.dialect.name)


async def collect_stats(bind: AsyncEngine | AsyncConnection) -> Stats:
    """Counts per agent and key-value namespace, and the database's size.

    On an engine, every statement reads one snapshot (one read transaction, REPEATABLE READ
    on PostgreSQL), so the figures agree with each other while agents keep writing. On a
    connection, the statements run as the connection runs them: in-memory SQLite has only
    the provider's, `async with provider.db.statement() as conn: await collect_stats(conn)`.
    """
    if isinstance(bind, AsyncConnection):
        return await _collect(bind)
    async with bind.connect() as conn:
        isolation = _backend(conn).stats_isolation
        if isolation is not None:
            await conn.execution_options(isolation_level=isolation)
        async with conn.begin():
            return await _collect(conn)


_conversations = table_of(Conversation)
_messages = table_of(Message)
_blocks = table_of(Block)
_tool_calls = table_of(ToolCall)
_agent = _conversations.c.agent_name

_CONVERSATIONS = select(_agent, func.count()).group_by(_agent)
_MESSAGES = (
    select(_agent, func.count(), func.min(_messages.c.created_at), func.max(_messages.c.created_at))
    .select_from(_messages.join(_conversations))
    .group_by(_agent)
)
_BLOCKS = (
    select(
        _agent,
        _blocks.c.block_type,
        func.count(),
        func.count(_tool_calls.c.block_id),
        # On SQLite this reads a file block's stored content to its end: a column after
        # a `content` larger than a page is reached through the row's overflow pages (5,000
        # rows of 100 kB, file in the OS cache: 9 ms to count them, 275 ms to sum such a
        # column). Only file blocks pay: a NULL needs no reading, other blocks have no size.
        func.sum(_blocks.c.size_bytes),
    )
    .select_from(
        _blocks.join(_messages, _blocks.c.message_id == _messages.c.id)
        .join(_conversations, _messages.c.conversation_id == _conversations.c.id)
        .outerjoin(_tool_calls, _tool_calls.c.block_id == _blocks.c.id)
    )
    .group_by(_agent, _blocks.c.block_type)
)


def _namespace_sizes(model: type[KeyValueEntry] | type[ListItem], backend: Backend) -> Select[Any]:
    rows = table_of(model)
    size = func.sum(backend.json_bytes(rows.c.value))
    return select(rows.c.namespace, func.count(), size).group_by(rows.c.namespace)


async def _collect(conn: AsyncConnection) -> Stats:
    backend = _backend(conn)
    conversations: dict[str, int] = dict((await conn.execute(_CONVERSATIONS)).all())
    messages = {row[0]: row[1:] for row in (await conn.execute(_MESSAGES))}
    blocks: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(BLOCK_TYPES, 0))
    tool_calls: dict[str, int] = defaultdict(int)
    file_bytes: dict[str, int] = defaultdict(int)
    for agent, block_type, count, calls, size in await conn.execute(_BLOCKS):
        blocks[agent][block_type] = count
        tool_calls[agent] += calls
        if block_type in _FILE_TYPES:
            file_bytes[agent] += int(size or 0)
    agents = []
    for agent in sorted(conversations):
        message_count, oldest, newest = messages.get(agent, (0, None, None))
        agents.append(
            AgentStats(
                agent=agent,
                conversations=conversations[agent],
                messages=message_count,
                blocks=_ordered(blocks[agent]),
                tool_calls=tool_calls[agent],
                file_bytes=file_bytes[agent],
                oldest_activity=oldest,
                newest_activity=newest,
            )
        )
    entries = (await conn.execute(_namespace_sizes(KeyValueEntry, backend))).all()
    items = (await conn.execute(_namespace_sizes(ListItem, backend))).all()
    namespaces = _namespaces(entries, items)
    size_query = backend.database_bytes()
    size = None if size_query is None else (await conn.execute(size_query)).scalar_one()
    return Stats(
        dialect=conn.dialect.name,
        database_bytes=None if size is None else int(size),
        agents=tuple(agents),
        namespaces=namespaces,
    )


def _ordered(counts: dict[str, int]) -> dict[str, int]:
    """The known types in their order, then any others (an imported database's) by name."""
    others = sorted(set(counts) - set(BLOCK_TYPES))
    return {name: counts[name] for name in (*BLOCK_TYPES, *others)}


def _namespaces(
    entries: Sequence[tuple[str, int, Any]], items: Sequence[tuple[str, int, Any]]
) -> tuple[NamespaceStats, ...]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for slot, rows in ((0, entries), (1, items)):
        for namespace, count, size in rows:
            counts[namespace][slot] += count
            counts[namespace][2] += int(size or 0)
    return tuple(
        NamespaceStats(namespace, entries=e, items=i, bytes=b)
        for namespace, (e, i, b) in sorted(counts.items())
    )
