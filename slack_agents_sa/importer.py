"""Copy a database of the host's built-in `sqlite` or `postgres` provider into ours.

Everything comes across: conversations, messages, every block type with its links
(text → file, file → tool), tool calls, usage, heartbeats, key-value and list stores,
OAuth rows. Messages and list items go in batches, one transaction each, recorded in
`agents_imported_rows` in that same transaction: a re-run (or a run after a crash) adds
only what is missing, and links are remapped to our ids.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from tqdm import tqdm

from slack_agents_sa.backends import PostgreSQL, SQLite, backend_for
from slack_agents_sa.blocks import in_history
from slack_agents_sa.errors import SlackAgentsSAError
from slack_agents_sa.executors.engine import insert_returning_id
from slack_agents_sa.models import (
    Base,
    Block,
    Conversation,
    Heartbeat,
    ImportedRow,
    KeyValueEntry,
    ListItem,
    Message,
    OAuthClient,
    OAuthToken,
    ToolCall,
    table_of,
)
from slack_agents_sa.progress import progress_bar
from slack_agents_sa.provider import Provider
from slack_agents_sa.settings import safe_url


class ImportSourceError(SlackAgentsSAError):
    """The source is not a database of the host's built-in sqlite or postgres provider."""


@dataclass
class Count:
    source: int = 0
    added: int = 0


@dataclass
class ImportSummary:
    """Rows per table: how many the source has, how many this run added."""

    source: str
    counts: dict[str, Count] = field(default_factory=dict)

    def count(self, table: str) -> Count:
        return self.counts.setdefault(table, Count())

    def table(self) -> str:
        lines = [f"imported from {self.source}", f"{'table':<16}{'in source':>12}{'added':>10}"]
        for name, count in self.counts.items():
            lines.append(f"{name:<16}{count.source:>12}{count.added:>10}")
        return "\n".join(lines)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _utc(value: Any) -> datetime:
    """A source timestamp (SQLite text in UTC, or PostgreSQL timestamptz) as aware UTC."""
    if value is None:
        return datetime.now(UTC)
    when: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


@dataclass
class SourceBlock:
    """One block of a source message, in the shape our tables want."""

    kind: str  # the source id space: "block" (SQLite) or "text_block", "file_block", ...
    source_id: int
    block_type: str
    created_at: datetime
    content: dict[str, Any] | None = None
    filename: str | None = None
    mimetype: str | None = None
    size_bytes: int | None = None
    source_file_id: int | None = None
    tool_block_id: int | None = None
    tool: dict[str, Any] | None = None


#: One fixed statement per table: no SQL here is assembled from names.
_COUNTS = {
    "messages": "SELECT count(*) FROM messages",
    "list_store": "SELECT count(*) FROM list_store",
    "blocks": "SELECT count(*) FROM blocks",
    "text_blocks": "SELECT count(*) FROM text_blocks",
    "file_blocks": "SELECT count(*) FROM file_blocks",
    "tool_blocks": "SELECT count(*) FROM tool_blocks",
    "usage_blocks": "SELECT count(*) FROM usage_blocks",
}


class _Source:
    """Reads one built-in provider's schema. Subclasses name the SQL; all of it is fixed."""

    file_kind = "block"
    tool_kind = "block"
    conversations_sql = (
        "SELECT id, agent_name, channel_id, channel_name, thread_id, created_at "
        "FROM conversations ORDER BY id"
    )
    messages_sql = (
        "SELECT id, conversation_id, user_id, user_name, user_handle, created_at "
        "FROM messages WHERE id > :after ORDER BY id LIMIT :limit"
    )
    lists_sql = (
        "SELECT id, namespace, key, value, created_at FROM list_store "
        "WHERE id > :after ORDER BY id LIMIT :limit"
    )
    kv_sql = "SELECT namespace, key, value, created_at FROM kv_store ORDER BY namespace, key"
    tokens_sql = (
        "SELECT user_id, server_id, access_token, refresh_token_enc, token_type, scopes, "
        "expires_at, created_at, updated_at FROM oauth_tokens"
    )
    clients_sql = (
        "SELECT server_id, redirect_uri, client_id, client_secret, metadata_json, "
        "authorization_server, created_at, updated_at FROM oauth_clients"
    )
    heartbeats_sql = ""
    required_tables: tuple[str, ...] = ()
    #: The tables holding blocks, for the summary's source count.
    block_tables: tuple[str, ...] = ()

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def rows(self, sql: str, **params: Any) -> Sequence[Any]:
        return (await self.conn.execute(text(sql), params)).all()

    async def count(self, table: str) -> int:
        """Rows of one of the built-in schema's tables (a fixed statement per table)."""
        return int((await self.conn.execute(text(_COUNTS[table]))).scalar_one())

    async def check(self) -> None:
        tables = set(await self.conn.run_sync(lambda sync: sync.dialect.get_table_names(sync)))
        missing = [name for name in self.required_tables if name not in tables]
        if missing:
            raise ImportSourceError(
                "not a database of the host's built-in provider: missing tables "
                + ", ".join(missing)
            )

    async def heartbeats(self) -> list[tuple[str, float]]:
        return [(row[0], float(row[1])) for row in await self.rows(self.heartbeats_sql)]

    async def blocks(self, message_ids: list[int]) -> dict[int, list[SourceBlock]]:
        raise NotImplementedError


class _SQLiteSource(_Source):
    """`slack_agents.storage.sqlite`: one `blocks` table for every block type."""

    required_tables = ("conversations", "messages", "blocks", "kv_store", "list_store")
    heartbeats_sql = "SELECT agent_name, last_ping_pong_time FROM agent_heartbeats"
    block_tables = ("blocks",)

    async def blocks(self, message_ids: list[int]) -> dict[int, list[SourceBlock]]:
        found: dict[int, list[SourceBlock]] = {}
        rows = await self.conn.execute(
            text(
                "SELECT * FROM blocks WHERE message_id IN (SELECT value FROM json_each(:ids)) "
                "ORDER BY id"
            ),
            {"ids": json.dumps(message_ids)},
        )
        for row in rows.mappings():
            block_type = row["block_type"]
            block = SourceBlock(
                kind="block",
                source_id=row["id"],
                block_type=block_type,
                created_at=_utc(row["created_at"]),
            )
            if block_type == "tool_use":
                block.tool = {
                    "tool_call_id": row["tool_call_id"],
                    "tool_name": row["tool_name"],
                    "tool_input": _json(row["tool_input"]) or {},
                    "tool_output": row["tool_output"] or "",
                    "is_error": bool(row["is_error"]),
                }
            else:
                block.content = _json(row["content"])
                block.filename = row["filename"]
                block.mimetype = row["mimetype"]
                block.size_bytes = row["size_bytes"]
                block.source_file_id = row["source_file_id"]
                block.tool_block_id = row["tool_block_id"]
            found.setdefault(row["message_id"], []).append(block)
        return found


class _PostgresSource(_Source):
    """`slack_agents.storage.postgres`: a table per block type, ordered by creation time."""

    file_kind = "file_block"
    tool_kind = "tool_block"
    required_tables = (
        "conversations",
        "messages",
        "text_blocks",
        "file_blocks",
        "tool_blocks",
        "usage_blocks",
        "kv_store",
        "list_store",
    )
    heartbeats_sql = (
        "SELECT agent_name, extract(epoch FROM last_socket_ping_at) FROM agent_heartbeats"
    )
    block_tables = ("text_blocks", "file_blocks", "tool_blocks", "usage_blocks")

    async def blocks(self, message_ids: list[int]) -> dict[int, list[SourceBlock]]:
        params = {"ids": message_ids}
        found: list[tuple[int, SourceBlock]] = []
        for row in await self.rows(
            "SELECT id, message_id, is_user, text, source_file_id, created_at "
            "FROM text_blocks WHERE message_id = ANY(:ids)",
            **params,
        ):
            found.append(
                (
                    row.message_id,
                    SourceBlock(
                        "text_block",
                        row.id,
                        "user_text" if row.is_user else "text",
                        _utc(row.created_at),
                        content={"text": row.text},
                        source_file_id=row.source_file_id,
                    ),
                )
            )
        for row in await self.rows(
            "SELECT id, message_id, is_user, filename, mimetype, size_bytes, content, "
            "tool_block_id, created_at FROM file_blocks WHERE message_id = ANY(:ids)",
            **params,
        ):
            found.append(
                (
                    row.message_id,
                    SourceBlock(
                        "file_block",
                        row.id,
                        "user_file" if row.is_user else "file",
                        _utc(row.created_at),
                        content=_json(row.content),
                        filename=row.filename,
                        mimetype=row.mimetype,
                        size_bytes=row.size_bytes,
                        tool_block_id=row.tool_block_id,
                    ),
                )
            )
        for row in await self.rows(
            "SELECT id, message_id, tool_call_id, tool_name, tool_input, tool_output, is_error, "
            "created_at FROM tool_blocks WHERE message_id = ANY(:ids)",
            **params,
        ):
            tool = {
                "tool_call_id": row.tool_call_id,
                "tool_name": row.tool_name,
                "tool_input": _json(row.tool_input) or {},
                "tool_output": row.tool_output or "",
                "is_error": bool(row.is_error),
            }
            found.append(
                (
                    row.message_id,
                    SourceBlock("tool_block", row.id, "tool_use", _utc(row.created_at), tool=tool),
                )
            )
        for row in await self.rows(
            "SELECT id, message_id, model, version, input_tokens, output_tokens, "
            "cache_creation_input_tokens, cache_read_input_tokens, "
            "peak_single_call_input_tokens, estimated_cost_usd, created_at "
            "FROM usage_blocks WHERE message_id = ANY(:ids)",
            **params,
        ):
            usage = {
                "model": row.model,
                "version": row.version,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
                "cache_creation_input_tokens": row.cache_creation_input_tokens,
                "cache_read_input_tokens": row.cache_read_input_tokens,
                "peak_single_call_input_tokens": row.peak_single_call_input_tokens,
                "estimated_cost_usd": None
                if row.estimated_cost_usd is None
                else float(row.estimated_cost_usd),
            }
            found.append(
                (
                    row.message_id,
                    SourceBlock("usage_block", row.id, "usage", _utc(row.created_at), usage),
                )
            )
        # The built-in provider orders a message's blocks by creation time.
        order = {"text_block": 0, "file_block": 1, "tool_block": 2, "usage_block": 3}
        found.sort(key=lambda pair: (pair[1].created_at, order[pair[1].kind], pair[1].source_id))
        grouped: dict[int, list[SourceBlock]] = {}
        for message_id, block in found:
            grouped.setdefault(message_id, []).append(block)
        return grouped


class _Importer:
    def __init__(
        self, source: _Source, target: Provider, source_name: str, batch_size: int, progress: bool
    ) -> None:
        self.source = source
        self.target = target
        self.name = source_name
        self.batch_size = batch_size
        self.progress = progress
        self.summary = ImportSummary(source_name)

    # --- the import map ---

    async def _mapped(self, conn: AsyncConnection, kind: str, ids: Sequence[int]) -> dict[int, int]:
        if not ids:
            return {}
        imported = table_of(ImportedRow)
        rows = await conn.execute(
            select(imported.c.source_id, imported.c.target_id).where(
                imported.c.source == self.name,
                imported.c.kind == kind,
                imported.c.source_id.in_(list(ids)),
            )
        )
        return {source_id: target_id for source_id, target_id in rows}

    async def _remember(self, conn: AsyncConnection, kind: str, pairs: dict[int, int]) -> None:
        if pairs:
            await conn.execute(
                insert(table_of(ImportedRow)),
                [
                    {"source": self.name, "kind": kind, "source_id": s, "target_id": t}
                    for s, t in pairs.items()
                ],
            )

    async def _batches(self, sql: str) -> AsyncIterator[Sequence[Any]]:
        """Source rows in id order, `batch_size` at a time (keyset pagination on `id`)."""
        after = 0
        while batch := await self.source.rows(sql, after=after, limit=self.batch_size):
            yield batch
            after = batch[-1].id

    # --- tables ---

    async def conversations(self) -> dict[int, int]:
        rows = await self.source.rows(self.source.conversations_sql)
        count = self.summary.count("conversations")
        count.source = len(rows)
        ids: dict[int, int] = {}
        async with self.target.db.transaction() as conn:
            known = await self._mapped(conn, "conversation", [row.id for row in rows])
            for row in rows:
                values = {
                    "agent_name": row.agent_name,
                    "channel_id": row.channel_id,
                    "thread_id": row.thread_id,
                    "channel_name": row.channel_name,
                    "created_at": _utc(row.created_at),
                }
                update = ("channel_name",) if row.channel_name else ()
                ids[row.id] = await _upsert_returning_id(
                    conn, Conversation, values, ("agent_name", "channel_id", "thread_id"), update
                )
            new = {source: target for source, target in ids.items() if source not in known}
            await self._remember(conn, "conversation", new)
        count.added = len(new)
        return ids

    async def messages(self, conversations: dict[int, int], bar: tqdm[Any]) -> None:
        messages = self.summary.count("messages")
        blocks = self.summary.count("blocks")
        messages.source = await self.source.count("messages")
        for table in self.source.block_tables:
            blocks.source += await self.source.count(table)
        async for batch in self._batches(self.source.messages_sql):
            async with self.target.db.transaction() as conn:
                done = await self._mapped(conn, "message", [row.id for row in batch])
                todo = [row for row in batch if row.id not in done]
                source_blocks = await self.source.blocks([row.id for row in todo])
                for row in todo:
                    await self._message(conn, row, conversations, source_blocks.get(row.id, []))
            messages.added += len(todo)
            blocks.added += sum(len(source_blocks.get(row.id, [])) for row in todo)
            bar.update(len(batch))

    async def _message(
        self,
        conn: AsyncConnection,
        row: Any,
        conversations: dict[int, int],
        source_blocks: list[SourceBlock],
    ) -> None:
        message_id = await insert_returning_id(
            conn,
            insert(table_of(Message)),
            {
                "conversation_id": conversations[row.conversation_id],
                "user_id": row.user_id,
                "user_name": row.user_name,
                "user_handle": row.user_handle,
                "created_at": _utc(row.created_at),
            },
        )
        await self._remember(conn, "message", {row.id: message_id})
        for block in source_blocks:
            source_file_id = await self._link(conn, self.source.file_kind, block.source_file_id)
            tool_block_id = await self._link(conn, self.source.tool_kind, block.tool_block_id)
            block_id = await insert_returning_id(
                conn,
                insert(table_of(Block)),
                {
                    "message_id": message_id,
                    "block_type": block.block_type,
                    "in_history": in_history(block.block_type, block.content),
                    "content": block.content,
                    "filename": block.filename,
                    "mimetype": block.mimetype,
                    "size_bytes": block.size_bytes,
                    "source_file_id": source_file_id,
                    "tool_block_id": tool_block_id,
                    "created_at": block.created_at,
                },
            )
            if block.tool is not None:
                await conn.execute(insert(table_of(ToolCall)), {"block_id": block_id, **block.tool})
            await self._remember(conn, block.kind, {block.source_id: block_id})

    async def _link(self, conn: AsyncConnection, kind: str, source_id: int | None) -> int | None:
        if not source_id:
            return None
        return (await self._mapped(conn, kind, [source_id])).get(source_id)

    async def list_items(self, bar: tqdm[Any]) -> None:
        count = self.summary.count("list items")
        count.source = await self.source.count("list_store")
        async for batch in self._batches(self.source.lists_sql):
            async with self.target.db.transaction() as conn:
                done = await self._mapped(conn, "list_item", [row.id for row in batch])
                for row in batch:
                    if row.id in done:
                        continue
                    item_id = await insert_returning_id(
                        conn,
                        insert(table_of(ListItem)),
                        {
                            "namespace": row.namespace,
                            "key": row.key,
                            "value": _json(row.value),
                            "created_at": _utc(row.created_at),
                        },
                    )
                    await self._remember(conn, "list_item", {row.id: item_id})
                    count.added += 1
            bar.update(len(batch))

    async def key_values(self) -> None:
        rows = await self.source.rows(self.source.kv_sql)
        count = self.summary.count("key-values")
        count.source = count.added = len(rows)
        shape = (("namespace", "key", "value", "created_at"), ("namespace", "key"), ("value",))
        async with self.target.db.transaction() as conn:
            stmt = backend_for(conn.dialect.name).upsert(KeyValueEntry, *shape)
            for row in rows:
                values = {"namespace": row.namespace, "key": row.key, "value": _json(row.value)}
                await conn.execute(stmt, {**values, "created_at": _utc(row.created_at)})

    async def heartbeats(self) -> None:
        rows = await self.source.heartbeats()
        count = self.summary.count("heartbeats")
        count.source = count.added = len(rows)
        names = ("agent_name", "last_ping_pong_time")
        async with self.target.db.transaction() as conn:
            upsert = backend_for(conn.dialect.name).upsert
            stmt = upsert(Heartbeat, names, names[:1], names[1:])
            for agent_name, when in rows:
                await conn.execute(stmt, {"agent_name": agent_name, "last_ping_pong_time": when})

    async def oauth(self) -> None:
        for label, model, sql, keys in (
            ("oauth tokens", OAuthToken, self.source.tokens_sql, ("user_id", "server_id")),
            ("oauth clients", OAuthClient, self.source.clients_sql, ("server_id", "redirect_uri")),
        ):
            rows = await self.source.rows(sql)
            count = self.summary.count(label)
            count.source = count.added = len(rows)
            async with self.target.db.transaction() as conn:
                for row in rows:
                    values = dict(row._mapping)
                    update = tuple(name for name in values if name not in (*keys, "created_at"))
                    upsert = backend_for(conn.dialect.name).upsert
                    stmt = upsert(model, tuple(values), keys, update)
                    await conn.execute(stmt, values)


async def _upsert_returning_id(
    conn: AsyncConnection,
    model: type[Base],
    values: dict[str, Any],
    keys: tuple[str, ...],
    update: tuple[str, ...],
) -> int:
    """Upsert `values`; the inserted or existing row's `id`, in the same round trip."""
    upsert = backend_for(conn.dialect.name).upsert
    stmt = upsert(model, tuple(values), keys, update, returning_id=True)
    return await insert_returning_id(conn, stmt, values)


@asynccontextmanager
async def _source_connection(url: URL) -> AsyncIterator[_Source]:
    engine = create_async_engine(url, hide_parameters=True)
    try:
        async with engine.connect() as conn:
            backend = backend_for(conn.dialect.name)
            if isinstance(backend, SQLite):
                source: _Source = _SQLiteSource(conn)
            elif isinstance(backend, PostgreSQL):
                source = _PostgresSource(conn)
            else:
                raise ImportSourceError(
                    f"the host's built-in providers are sqlite and postgres, not {backend.name}"
                )
            await source.check()
            yield source
    finally:
        await engine.dispose()


async def import_database(
    source: URL, target: URL, *, batch_size: int = 500, progress: bool = True
) -> ImportSummary:
    """Copy `source` (a built-in provider's database) into `target` (migrated to head first)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    name = safe_url(source)
    storage = Provider(url=target.render_as_string(hide_password=False))
    await storage.initialize()
    try:
        async with _source_connection(source) as reader:
            importer = _Importer(reader, storage, name, batch_size, progress)
            conversations = await importer.conversations()
            total = await reader.count("messages") + await reader.count("list_store")
            with progress_bar(total, unit="row", desc="importing", wanted=progress) as bar:
                await importer.messages(conversations, bar)
                await importer.list_items(bar)
            await importer.key_values()
            await importer.heartbeats()
            await importer.oauth()
            return importer.summary
    finally:
        await storage.close()
