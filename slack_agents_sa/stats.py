"""A look inside: per-agent and per-namespace counts (`slack-agents-sa stats`).

`collect_stats(engine_or_connection)` is the public entry point; the CLI verb prints its
result as a table or as JSON. Every figure comes from a handful of GROUP BY statements
(five, plus one for the database size), never one statement per agent or conversation.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    LargeBinary,
    Select,
    Text,
    cast,
    column,
    func,
    select,
    true,
)
from sqlalchemy import table as sql_table
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from slack_agents_sa.backends import Backend, MySQL, PostgreSQL, SQLite, backend_for
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


class _Measure:
    """How a database measures stored bytes. This one knows no database: sizes are unknown,
    and a JSON value's length is counted in characters (the closest portable figure)."""

    #: Isolation level that gives `collect_stats` on an engine one snapshot for all its
    #: statements (None: the dialect's default transaction already does).
    snapshot_isolation: str | None = None

    def json_bytes(self, value: ColumnElement[Any]) -> ColumnElement[int]:
        return func.length(cast(value, Text), type_=Integer)

    def database_bytes(self) -> Select[Any] | None:
        return None


class _SQLiteMeasure(_Measure):
    def json_bytes(self, value: ColumnElement[Any]) -> ColumnElement[int]:
        # length() counts a text's characters but a blob's bytes (octet_length() needs
        # SQLite 3.43; the sqlite3 module here links 3.40.1).
        return func.length(cast(value, LargeBinary), type_=Integer)

    def database_bytes(self) -> Select[Any] | None:
        # The main file only: the WAL file holds commits not yet checkpointed into it.
        pages = func.pragma_page_count().table_valued("page_count")
        size = func.pragma_page_size().table_valued("page_size")
        return select(pages.c.page_count * size.c.page_size).select_from(pages.join(size, true()))


class _PostgreSQLMeasure(_Measure):
    # READ COMMITTED would give each statement its own snapshot.
    snapshot_isolation = "REPEATABLE READ"

    def json_bytes(self, value: ColumnElement[Any]) -> ColumnElement[int]:
        return func.octet_length(cast(value, Text), type_=Integer)

    def database_bytes(self) -> Select[Any] | None:
        return select(func.pg_database_size(func.current_database()))


_MYSQL_TABLES = sql_table(
    "tables",
    column("table_schema"),
    column("data_length"),
    column("index_length"),
    schema="information_schema",
)


class _MySQLMeasure(_Measure):
    def json_bytes(self, value: ColumnElement[Any]) -> ColumnElement[int]:
        # LENGTH counts bytes of the LONGTEXT (CHAR_LENGTH would count characters).
        return func.length(value, type_=Integer)

    def database_bytes(self) -> Select[Any] | None:
        # InnoDB's own estimate; MySQL 8 caches it (information_schema_stats_expiry, a day
        # by default), MariaDB does not.
        tables = _MYSQL_TABLES.c
        return select(func.sum(tables.data_length + tables.index_length)).where(
            tables.table_schema == func.database()
        )


_MEASURES: dict[type[Backend], _Measure] = {
    SQLite: _SQLiteMeasure(),
    PostgreSQL: _PostgreSQLMeasure(),
    MySQL: _MySQLMeasure(),
}


def _measure(dialect_name: str) -> _Measure:
    return _MEASURES.get(type(backend_for(dialect_name)), _Measure())


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
        isolation = _measure(conn.dialect.name).snapshot_isolation
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


def _namespace_sizes(model: type[KeyValueEntry] | type[ListItem], measure: _Measure) -> Select[Any]:
    rows = table_of(model)
    size = func.sum(measure.json_bytes(rows.c.value))
    return select(rows.c.namespace, func.count(), size).group_by(rows.c.namespace)


async def _collect(conn: AsyncConnection) -> Stats:
    measure = _measure(conn.dialect.name)
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
    entries = (await conn.execute(_namespace_sizes(KeyValueEntry, measure))).all()
    items = (await conn.execute(_namespace_sizes(ListItem, measure))).all()
    namespaces = _namespaces(entries, items)
    size_query = measure.database_bytes()
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


# --- The CLI verb -------------------------------------------------------------------------


def add_command(commands: Any) -> None:
    """Register the `stats` verb on the CLI's subparsers."""
    parser = commands.add_parser(
        "stats", help="counts per agent and key-value namespace, and the database's size"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(run=cmd_stats)


async def cmd_stats(url: URL, args: argparse.Namespace) -> int:
    # Imported here: cli imports this module to register the verb.
    from slack_agents_sa import cli, migrate

    engine, conn = await cli._connected(url, args.schema)
    try:
        try:
            state = await conn.run_sync(migrate.schema_state)
        finally:
            await conn.close()
        if state.status is migrate.SchemaStatus.NEWER_INCOMPATIBLE:
            cli._say(f"error: {state.too_new()}")
            return cli.EXIT_NOT_AT_HEAD
        if state.status is migrate.SchemaStatus.BEHIND:
            found = state.revision if state.current else "base (no schema)"
            cli._say(
                f"error: schema at {found}; head is {state.head}: run `slack-agents-sa upgrade`"
            )
            return cli.EXIT_NOT_AT_HEAD
        stats = await collect_stats(engine)
    finally:
        await engine.dispose()
    print(json.dumps(stats.as_dict(), indent=2) if args.json else format_stats(stats))
    return cli.EXIT_OK


_AGENT_HEADERS = ["agent", "conversations", "messages", "blocks", "tool calls", "file bytes"]
_ACTIVITY_HEADERS = ["oldest activity (UTC)", "newest activity (UTC)"]


def format_stats(stats: Stats) -> str:
    """`stats` as readable tables (what the CLI prints without `--json`)."""
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
