"""Reading the host's built-in providers' tables: what the importer needs of any of them.

Each built-in provider's own reader (`sqlite_source.py`, `postgresql_source.py`) names its
SQL; its backend hands it out (`Backend.builtin_source`). All of that SQL is fixed text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from slack_agents_sa.errors import ImportSourceError


def json_value(value: Any) -> Any:
    """A JSON column as Python: SQLite stores text, PostgreSQL's driver may decode it."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def utc(value: Any) -> datetime:
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


class BuiltinSource:
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
        """The rows of one of this class's fixed statements."""
        return (await self.conn.execute(text(sql), params)).all()

    async def count(self, table: str) -> int:
        """Rows of one of the built-in schema's tables (a fixed statement per table)."""
        return int((await self.conn.execute(text(_COUNTS[table]))).scalar_one())

    async def check(self) -> None:
        """ImportSourceError unless the built-in provider's tables are all there."""
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
        """The blocks of these messages, each message's in the built-in provider's order."""
        raise NotImplementedError
