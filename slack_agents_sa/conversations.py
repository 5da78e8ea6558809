"""The host's conversation methods: threads, messages, blocks, tool calls and heartbeats."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from slack_agents_sa.blocks import (
    TOOL_USE,
    block_content,
    blocks_of_conversation,
    in_block_order,
    in_history,
)
from slack_agents_sa.database import UsesDatabase
from slack_agents_sa.errors import MissingRowError
from slack_agents_sa.executors import Step
from slack_agents_sa.models import (
    NAME_LENGTH,
    Block,
    Conversation,
    Heartbeat,
    Message,
    ToolCall,
    table_of,
)
from slack_agents_sa.search_text import indexed_words
from slack_agents_sa.types import utcnow
from slack_agents_sa.validation import (
    check_dict,
    check_optional_text,
    check_text,
    to_id,
    to_optional_id,
)

_CONVERSATION_KEYS = ("agent_name", "channel_id", "thread_id")
_conversations = table_of(Conversation)
_messages = table_of(Message)
_blocks = table_of(Block)
_tool_calls = table_of(ToolCall)
_heartbeats = table_of(Heartbeat)
# Built once: on hot paths, building a statement costs more than running it.
_FIND_CONVERSATION = select(_conversations.c.id, _conversations.c.channel_name).where(
    *(_conversations.c[name] == bindparam(name) for name in _CONVERSATION_KEYS)
)
_RENAME_CONVERSATION = (
    update(_conversations)
    .where(_conversations.c.id == bindparam("conversation_id"))
    .values(channel_name=bindparam("new_channel_name"))
)
_INSERT_MESSAGE = insert(_messages)
_INSERT_BLOCK = insert(_blocks)
_INSERT_TOOL_CALL = insert(_tool_calls)
_GET_TOOL_CALL = (
    select(
        _tool_calls.c.tool_name,
        _tool_calls.c.tool_input,
        _tool_calls.c.tool_output,
        _tool_calls.c.is_error,
    )
    .where(_tool_calls.c.tool_call_id == bindparam("tool_call_id"))
    .order_by(_tool_calls.c.block_id)
    .limit(1)
)
_new_block = (
    insert(_blocks)
    .values(
        message_id=bindparam("message_id"),
        block_type=TOOL_USE,
        in_history=True,
        created_at=bindparam("created_at", type_=_blocks.c.created_at.type),
    )
    .returning(_blocks.c.id)
    .cte("new_block")
)
#: A tool block and its ToolCall row in one statement, where INSERTs may be CTEs.
_INSERT_TOOL_BLOCK_AND_CALL = (
    insert(_tool_calls)
    .from_select(
        ["block_id", "tool_call_id", "tool_name", "tool_input", "tool_output", "is_error"],
        select(
            _new_block.c.id,
            *(
                bindparam(name, type_=_tool_calls.c[name].type)
                for name in ("tool_call_id", "tool_name", "tool_input", "tool_output", "is_error")
            ),
        ),
    )
    .returning(_tool_calls.c.block_id)
)
# Usage blocks and non-image uploads left out in SQL: a quarter fewer rows to decode.
_HISTORY = blocks_of_conversation(bindparam("conversation_id"), only=_blocks.c.in_history)
_GET_HEARTBEAT = select(_heartbeats.c.last_ping_pong_time).where(
    _heartbeats.c.agent_name == bindparam("agent_name")
)
_HEARTBEAT_SHAPE = (
    ("agent_name", "last_ping_pong_time"),
    ("agent_name",),
    ("last_ping_pong_time",),
)


def _check_thread(agent_name: Any, channel_id: Any, thread_id: Any) -> None:
    check_text("agent_name", agent_name, NAME_LENGTH)
    check_text("channel_id", channel_id, NAME_LENGTH)
    check_text("thread_id", thread_id, NAME_LENGTH)


def _missing_parent(argument: str, value: int, error: IntegrityError) -> MissingRowError:
    return MissingRowError(
        f"{argument}={value} does not name an existing row ({type(error.orig).__name__}): "
        "never created, or deleted since (pruned); nothing was written"
    )


class ConversationMethods(UsesDatabase):
    """Conversations, messages and their blocks, tool-call lookup, heartbeats."""

    async def get_or_create_conversation(
        self,
        agent_name: str,
        channel_id: str,
        thread_id: str,
        channel_name: str | None = None,
    ) -> int:
        _check_thread(agent_name, channel_id, thread_id)
        check_optional_text("channel_name", channel_name, NAME_LENGTH)
        thread = {"agent_name": agent_name, "channel_id": channel_id, "thread_id": thread_id}
        # Every turn looks its thread up: one read, and a write only for a new channel name
        # (an upsert would rewrite the row, and use up an id, on every turn).
        rows = await self.db.fetch(_FIND_CONVERSATION, thread)
        if rows:
            found = rows[0]
            if channel_name and channel_name != found.channel_name:
                renamed = {"conversation_id": found.id, "new_channel_name": channel_name}
                await self.db.write(_RENAME_CONVERSATION, renamed)
            return int(found.id)
        # A new thread; should another writer create it first, its row's id comes back.
        values = {**thread, "channel_name": channel_name}
        refreshed = ("channel_name",) if channel_name else ()
        stmt = self.db.backend.upsert(
            Conversation, tuple(values), _CONVERSATION_KEYS, refreshed, returning_id=True
        )
        return await self.db.insert_id(stmt, values)

    async def has_conversation(self, agent_name: str, channel_id: str, thread_id: str) -> bool:
        _check_thread(agent_name, channel_id, thread_id)
        thread = {"agent_name": agent_name, "channel_id": channel_id, "thread_id": thread_id}
        return bool(await self.db.fetch(_FIND_CONVERSATION, thread))

    async def create_message(
        self,
        conversation_id: int | str,
        user_id: str,
        user_name: str,
        user_handle: str,
    ) -> int:
        conv_id = to_id("conversation_id", conversation_id)
        check_text("user_id", user_id, NAME_LENGTH)
        check_text("user_name", user_name, NAME_LENGTH)
        check_text("user_handle", user_handle, NAME_LENGTH)
        values = {
            "conversation_id": conv_id,
            "user_id": user_id,
            "user_name": user_name,
            "user_handle": user_handle,
        }
        try:
            return await self.db.insert_id(_INSERT_MESSAGE, values)
        except IntegrityError as error:
            raise _missing_parent("conversation_id", conv_id, error) from None

    async def get_message_blocks(
        self, conversation_id: int | str
    ) -> list[tuple[int | str, list[dict[str, Any]]]]:
        """The LLM history: every message in order with its blocks in order, in one query.

        Usage blocks and uploaded non-image files are left out (`Block.in_history`).
        """
        conv_id = to_id("conversation_id", conversation_id)
        rows = in_block_order(await self.db.fetch(_HISTORY, {"conversation_id": conv_id}))
        history: list[tuple[int | str, list[dict[str, Any]]]] = []
        current_id: int | None = None
        blocks: list[dict[str, Any]] = []
        for row in rows:
            if row.message_id != current_id:
                current_id = row.message_id
                blocks = []
                history.append((current_id, blocks))
            if row.block_id is not None:
                blocks.append({"block_type": row.block_type, "content": block_content(row)})
        return history

    async def append_text_block(
        self,
        message_id: int | str,
        text: str,
        *,
        is_user: bool = False,
        source_file_id: int | str | None = None,
    ) -> None:
        check_text("text", text, in_json=True)
        await self._append_block(
            message_id,
            block_type="user_text" if is_user else "text",
            in_history=True,
            content={"text": text},
            search_text=indexed_words(text),
            source_file_id=to_optional_id("source_file_id", source_file_id),
        )

    async def append_file_block(
        self,
        message_id: int | str,
        content: dict[str, Any],
        *,
        is_user: bool,
        filename: str,
        mimetype: str,
        size_bytes: int,
        tool_block_id: int | str | None = None,
    ) -> int:
        check_dict("content", content)
        check_text("filename", filename)
        check_text("mimetype", mimetype, NAME_LENGTH)
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, int):
            raise TypeError(f"size_bytes must be an int, got {type(size_bytes).__name__}")
        # An uploaded document's text is already a user_text block: only images go back.
        block_type = "user_file" if is_user else "file"
        return await self._append_block(
            message_id,
            block_type=block_type,
            in_history=in_history(block_type, content),
            content=content,
            filename=filename,
            mimetype=mimetype,
            size_bytes=size_bytes,
            tool_block_id=to_optional_id("tool_block_id", tool_block_id),
        )

    async def append_tool_block(
        self,
        message_id: int | str,
        *,
        tool_call_id: str,
        tool_name: str,
        tool_input: dict[str, Any],
        tool_output: str,
        is_error: bool,
    ) -> int:
        msg_id = to_id("message_id", message_id)
        check_text("tool_call_id", tool_call_id, NAME_LENGTH)
        check_text("tool_name", tool_name, NAME_LENGTH)
        check_dict("tool_input", tool_input)
        check_text("tool_output", tool_output)
        call = {
            "tool_call_id": tool_call_id,
            "tool_name": tool_name,
            "tool_input": tool_input,
            "tool_output": tool_output,
            "is_error": bool(is_error),
        }
        try:
            if self.db.backend.insert_ctes:
                # One statement, so one round trip, and atomic by itself.
                values = {"message_id": msg_id, "created_at": utcnow(), **call}
                return await self.db.insert_id(_INSERT_TOOL_BLOCK_AND_CALL, values)
            block = {"message_id": msg_id, "block_type": TOOL_USE, "in_history": True}
            after_block = self.db.backend.insert_after_insert(_tool_calls, "block_id")
            tool_call = (
                Step(after_block, call)  # the server links the row: nothing waits between
                if after_block is not None
                else Step(_INSERT_TOOL_CALL, lambda block_id: {"block_id": block_id, **call})
            )
            block_id, _ = await self.db.steps(
                (Step(_INSERT_BLOCK, block, returns_id=True), tool_call)
            )
            if block_id is None:  # pragma: no cover - a returns_id step always reports one
                raise RuntimeError("the database did not report the tool block's id")
            return block_id
        except IntegrityError as error:
            raise _missing_parent("message_id", msg_id, error) from None

    async def append_usage_block(
        self,
        message_id: int | str,
        *,
        model: str,
        version: str,
        input_tokens: int,
        output_tokens: int,
        cache_creation_input_tokens: int,
        cache_read_input_tokens: int,
        peak_single_call_input_tokens: int,
        estimated_cost_usd: float | None,
    ) -> None:
        usage = {
            "model": check_text("model", model, in_json=True),
            "version": check_text("version", version, in_json=True),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": cache_creation_input_tokens,
            "cache_read_input_tokens": cache_read_input_tokens,
            "peak_single_call_input_tokens": peak_single_call_input_tokens,
            "estimated_cost_usd": estimated_cost_usd,
        }
        await self._append_block(
            message_id, block_type="usage", in_history=in_history("usage", usage), content=usage
        )

    async def get_tool_call(self, tool_call_id: str) -> dict[str, Any] | None:
        check_text("tool_call_id", tool_call_id, NAME_LENGTH)
        rows = await self.db.fetch(_GET_TOOL_CALL, {"tool_call_id": tool_call_id})
        if not rows:
            return None
        row = rows[0]
        return {
            "tool_name": row.tool_name,
            "input_json": json.dumps(row.tool_input or {}, indent=2),
            "output_json": row.tool_output or "",
            "is_error": bool(row.is_error),
        }

    async def upsert_heartbeat(self, agent_name: str, last_ping_pong_time: float) -> None:
        check_text("agent_name", agent_name, NAME_LENGTH)
        if isinstance(last_ping_pong_time, bool) or not isinstance(
            last_ping_pong_time, int | float
        ):
            raise TypeError(
                f"last_ping_pong_time must be a float, got {type(last_ping_pong_time).__name__}"
            )
        stmt = self.db.backend.upsert(Heartbeat, *_HEARTBEAT_SHAPE)
        values = {"agent_name": agent_name, "last_ping_pong_time": float(last_ping_pong_time)}
        await self.db.write(stmt, values)

    async def get_heartbeat(self, agent_name: str) -> dict[str, Any] | None:
        check_text("agent_name", agent_name, NAME_LENGTH)
        rows = await self.db.fetch(_GET_HEARTBEAT, {"agent_name": agent_name})
        return {"last_ping_pong_time": float(rows[0][0])} if rows else None

    async def _append_block(self, message_id: int | str, **values: Any) -> int:
        msg_id = to_id("message_id", message_id)
        try:
            return await self.db.insert_id(_INSERT_BLOCK, {"message_id": msg_id, **values})
        except IntegrityError as error:
            raise _missing_parent("message_id (or a linked block id)", msg_id, error) from None
