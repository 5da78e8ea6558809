"""The host's export reads: which conversations match, and everything stored for one."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import ClauseElement, bindparam, exists, select

from slack_agents_sa.blocks import (
    block_content,
    blocks,
    blocks_of_conversation,
    in_block_order,
    messages,
)
from slack_agents_sa.database import UsesDatabase
from slack_agents_sa.models import Conversation, Message
from slack_agents_sa.validation import check_optional_text, check_text, to_id


def _as_datetime(name: str, value: str | datetime | None) -> datetime | None:
    """An aware datetime from an ISO string or datetime; naive values are taken as UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{name} must be an ISO 8601 date or datetime, got {value!r}"
            ) from None
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a str or datetime, got {type(value).__name__}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


#: Every message of a conversation with all its blocks, usage included (built once).
_MESSAGES_WITH_BLOCKS = blocks_of_conversation(
    bindparam("conversation_id"),
    messages.c.user_id,
    messages.c.user_name,
    messages.c.user_handle,
    messages.c.created_at,
    blocks.c.source_file_id,
    blocks.c.filename,
    blocks.c.mimetype,
    blocks.c.size_bytes,
    blocks.c.created_at.label("block_created_at"),
)


@cache
def _conversations_for_export(filters: frozenset[str]) -> ClauseElement:
    """An agent's conversations in id order; with `filters` (of "handle", "date_from",
    "date_to"), those having a message that matches them. One statement per combination,
    built once, every value bound."""
    stmt = (
        select(
            Conversation.id,
            Conversation.agent_name,
            Conversation.channel_id,
            Conversation.channel_name,
            Conversation.thread_id,
        )
        .where(Conversation.agent_name == bindparam("agent_name"))
        .order_by(Conversation.id)
    )
    message_filters = []
    if "handle" in filters:
        message_filters.append(Message.user_handle == bindparam("handle"))
    if "date_from" in filters:
        message_filters.append(Message.created_at >= bindparam("date_from"))
    if "date_to" in filters:
        message_filters.append(Message.created_at <= bindparam("date_to"))
    if message_filters:
        stmt = stmt.where(
            exists().where(Message.conversation_id == Conversation.id, *message_filters)
        )
    return stmt


def _export_block(row: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "id": row.block_id,
        "block_type": row.block_type,
        "content": block_content(row),
        "created_at": row.block_created_at,
    }
    if row.block_type in ("text", "user_text"):
        block["source_file_id"] = row.source_file_id
    elif row.block_type in ("file", "user_file"):
        block["filename"] = row.filename
        block["size_bytes"] = row.size_bytes
        if row.block_type == "file":
            content = dict(block["content"])
            content.setdefault("filename", row.filename)
            content.setdefault("mimeType", row.mimetype or "application/octet-stream")
            block["content"] = content
    return block


class ExportMethods(UsesDatabase):
    """get_conversations_for_export / get_messages_with_blocks."""

    async def get_conversations_for_export(
        self,
        agent_name: str,
        *,
        handle: str | None = None,
        date_from: str | datetime | None = None,
        date_to: str | datetime | None = None,
    ) -> list[dict[str, Any]]:
        """An agent's conversations in id order; with filters, those having a matching message."""
        check_text("agent_name", agent_name)
        check_optional_text("handle", handle)
        start = _as_datetime("date_from", date_from)
        end = _as_datetime("date_to", date_to)
        given = {"handle": handle, "date_from": start, "date_to": end}
        filters = {name: value for name, value in given.items() if value is not None}
        stmt = _conversations_for_export(frozenset(filters))
        values = {"agent_name": agent_name, **filters}
        return [row._asdict() for row in await self.db.fetch(stmt, values)]

    async def get_messages_with_blocks(self, conversation_id: int | str) -> list[dict[str, Any]]:
        """Every message of a conversation with all its blocks (usage included), in one query."""
        conv_id = to_id("conversation_id", conversation_id)
        rows = in_block_order(
            await self.db.fetch(_MESSAGES_WITH_BLOCKS, {"conversation_id": conv_id})
        )
        messages: list[dict[str, Any]] = []
        for row in rows:
            if not messages or messages[-1]["id"] != row.message_id:
                messages.append(
                    {
                        "id": row.message_id,
                        "user_id": row.user_id,
                        "user_name": row.user_name,
                        "user_handle": row.user_handle,
                        "created_at": row.created_at,
                        "blocks": [],
                    }
                )
            if row.block_id is not None:
                messages[-1]["blocks"].append(_export_block(row))
        return messages
