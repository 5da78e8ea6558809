"""Copy a database of the host's built-in `sqlite` or `postgres` provider into ours.

Everything comes across: conversations, messages, every block type with its links
(text → file, file → tool), tool calls, usage, heartbeats, key-value and list stores,
OAuth rows. Messages and list items go in batches, one transaction each, recorded in
`agents_imported_rows` in that same transaction: a re-run (or a run after a crash) adds
only what is missing, and links are remapped to our ids. A transaction the database rolls
back as a conflict (a Galera node wrote the same rows) runs again whole, counted once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

from slack_agents_sa.backends import backend_for
from slack_agents_sa.backends.builtin_source import BuiltinSource, SourceBlock, json_value, utc
from slack_agents_sa.blocks import in_history
from slack_agents_sa.database import Database, make_engine
from slack_agents_sa.errors import ImportSourceError
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
from slack_agents_sa.progress import OnProgress, no_progress
from slack_agents_sa.search_text import searchable_text
from slack_agents_sa.settings import ProviderSettings, safe_url
from slack_agents_sa.startup import open_database
from slack_agents_sa.validation import check_batch_size


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


class _Importer:
    """One run: the source's tables copied in order, conversations first (their ids remap
    every message), then messages with their blocks, list items, key-values, the rest."""

    def __init__(
        self,
        source: BuiltinSource,
        target: Database,
        source_name: str,
        batch_size: int,
        advance: OnProgress,
    ) -> None:
        self.source = source
        self.target = target
        self.name = source_name
        self.batch_size = batch_size
        self.advance = advance
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

        async def upsert_all(conn: AsyncConnection) -> tuple[dict[int, int], int]:
            ids: dict[int, int] = {}
            known = await self._mapped(conn, "conversation", [row.id for row in rows])
            for row in rows:
                values = {
                    "agent_name": row.agent_name,
                    "channel_id": row.channel_id,
                    "thread_id": row.thread_id,
                    "channel_name": row.channel_name,
                    "created_at": utc(row.created_at),
                }
                update = ("channel_name",) if row.channel_name else ()
                ids[row.id] = await _upsert_returning_id(
                    conn, Conversation, values, ("agent_name", "channel_id", "thread_id"), update
                )
            new = {source: target for source, target in ids.items() if source not in known}
            await self._remember(conn, "conversation", new)
            return ids, len(new)

        ids, count.added = await self.target.run_transaction(upsert_all)
        return ids

    async def messages(self, conversations: dict[int, int]) -> None:
        messages = self.summary.count("messages")
        blocks = self.summary.count("blocks")
        messages.source = await self.source.count("messages")
        for table in self.source.block_tables:
            blocks.source += await self.source.count(table)
        async for batch in self._batches(self.source.messages_sql):

            async def add_missing(
                conn: AsyncConnection, batch: Sequence[Any] = batch
            ) -> tuple[int, int]:
                done = await self._mapped(conn, "message", [row.id for row in batch])
                todo = [row for row in batch if row.id not in done]
                source_blocks = await self.source.blocks([row.id for row in todo])
                for row in todo:
                    await self._message(conn, row, conversations, source_blocks.get(row.id, []))
                return len(todo), sum(len(found) for found in source_blocks.values())

            added_messages, added_blocks = await self.target.run_transaction(add_missing)
            messages.added += added_messages
            blocks.added += added_blocks
            self.advance(len(batch))

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
                "created_at": utc(row.created_at),
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
                    "search_text": searchable_text(block.block_type, block.content),
                },
            )
            if block.tool is not None:
                await conn.execute(insert(table_of(ToolCall)), {"block_id": block_id, **block.tool})
            await self._remember(conn, block.kind, {block.source_id: block_id})

    async def _link(self, conn: AsyncConnection, kind: str, source_id: int | None) -> int | None:
        if not source_id:
            return None
        return (await self._mapped(conn, kind, [source_id])).get(source_id)

    async def list_items(self) -> None:
        count = self.summary.count("list items")
        count.source = await self.source.count("list_store")
        async for batch in self._batches(self.source.lists_sql):

            async def add_missing(conn: AsyncConnection, batch: Sequence[Any] = batch) -> int:
                done = await self._mapped(conn, "list_item", [row.id for row in batch])
                todo = [row for row in batch if row.id not in done]
                for row in todo:
                    item_id = await insert_returning_id(
                        conn,
                        insert(table_of(ListItem)),
                        {
                            "namespace": row.namespace,
                            "key": row.key,
                            "value": json_value(row.value),
                            "created_at": utc(row.created_at),
                        },
                    )
                    await self._remember(conn, "list_item", {row.id: item_id})
                return len(todo)

            count.added += await self.target.run_transaction(add_missing)
            self.advance(len(batch))

    async def key_values(self) -> None:
        rows = await self.source.rows(self.source.kv_sql)
        count = self.summary.count("key-values")
        count.source = count.added = len(rows)
        shape = (("namespace", "key", "value", "created_at"), ("namespace", "key"), ("value",))

        async def upsert_all(conn: AsyncConnection) -> None:
            stmt = backend_for(conn.dialect.name).upsert(KeyValueEntry, *shape)
            for row in rows:
                values = {
                    "namespace": row.namespace,
                    "key": row.key,
                    "value": json_value(row.value),
                }
                await conn.execute(stmt, {**values, "created_at": utc(row.created_at)})

        await self.target.run_transaction(upsert_all)

    async def heartbeats(self) -> None:
        rows = await self.source.heartbeats()
        count = self.summary.count("heartbeats")
        count.source = count.added = len(rows)
        names = ("agent_name", "last_ping_pong_time")

        async def upsert_all(conn: AsyncConnection) -> None:
            upsert = backend_for(conn.dialect.name).upsert
            stmt = upsert(Heartbeat, names, names[:1], names[1:])
            for agent_name, when in rows:
                await conn.execute(stmt, {"agent_name": agent_name, "last_ping_pong_time": when})

        await self.target.run_transaction(upsert_all)

    async def oauth(self) -> None:
        for label, model, sql, keys in (
            ("oauth tokens", OAuthToken, self.source.tokens_sql, ("user_id", "server_id")),
            ("oauth clients", OAuthClient, self.source.clients_sql, ("server_id", "redirect_uri")),
        ):
            rows = await self.source.rows(sql)
            count = self.summary.count(label)
            count.source = count.added = len(rows)

            async def upsert_all(
                conn: AsyncConnection,
                model: type[Base] = model,
                rows: Sequence[Any] = rows,
                keys: tuple[str, ...] = keys,
            ) -> None:
                upsert = backend_for(conn.dialect.name).upsert
                for row in rows:
                    values = dict(row._mapping)
                    update = tuple(name for name in values if name not in (*keys, "created_at"))
                    await conn.execute(upsert(model, tuple(values), keys, update), values)

            await self.target.run_transaction(upsert_all)


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
async def _source_connection(url: URL) -> AsyncIterator[BuiltinSource]:
    if (reason := backend_for(url).absent(url)) is not None:
        raise ImportSourceError(f"{reason}: nothing to import (and none is created)")
    engine = make_engine(url, connection_hooks=False)
    try:
        async with engine.connect() as conn:
            source = backend_for(conn.dialect.name).builtin_source(conn)
            await source.check()
            yield source
    finally:
        await engine.dispose()


async def count_source_rows(source: URL) -> int:
    """The rows an import goes through in batches, messages and list items (a progress
    bar's total); ImportSourceError unless `source` is a built-in provider's database."""
    async with _source_connection(source) as reader:
        return await reader.count("messages") + await reader.count("list_store")


async def import_database(
    source: URL,
    target: URL | ProviderSettings,
    *,
    batch_size: int = 500,
    on_batch: OnProgress | None = None,
) -> ImportSummary:
    """Copy `source` (a built-in provider's database) into `target` (migrated to head first),
    a URL or a provider's settings (its `schema`, `pgbouncer`, ... options).

    `on_batch` is called with each batch's row count (messages and list items go in
    batches; `count_source_rows` gives their total).
    """
    check_batch_size(batch_size)
    name = safe_url(source)
    if isinstance(target, URL):
        settings = ProviderSettings.from_options(
            {"url": target.render_as_string(hide_password=False)}
        )
    else:
        settings = target.model_copy(update={"migrate": True})
    # The source first: a wrong one is refused before the target is created or migrated.
    async with _source_connection(source) as reader:
        database = await open_database(settings)
        try:
            importer = _Importer(reader, database, name, batch_size, on_batch or no_progress)
            conversations = await importer.conversations()
            await importer.messages(conversations)
            await importer.list_items()
            await importer.key_values()
            await importer.heartbeats()
            await importer.oauth()
            return importer.summary
        finally:
            await database.dispose()
