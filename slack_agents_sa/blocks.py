"""How block rows turn back into the host's block dicts, shared by history and export."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from operator import itemgetter, le
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Select, and_, select

from slack_agents_sa.models import Block, Message, ToolCall, table_of

TOOL_USE = "tool_use"


def in_history(block_type: str, content: dict[str, Any] | None) -> bool:
    """Whether a block goes back to the LLM: not usage blocks, and of uploaded files only
    images (an uploaded document's text is already a `user_text` block)."""
    if block_type == "usage":
        return False
    if block_type == "user_file":
        return content is not None and content.get("type") == "image"
    return True


# Core tables, not the ORM classes: a select of these never sets up the ORM's mappers, so
# an agent's turns run without that work and its memory.
messages = table_of(Message)
blocks = table_of(Block)
tool_calls = table_of(ToolCall)

#: The columns `block_content` needs, besides the message and block ids.
_CONTENT_COLUMNS = (
    blocks.c.block_type,
    blocks.c.content,
    tool_calls.c.tool_call_id,
    tool_calls.c.tool_name,
    tool_calls.c.tool_input,
    tool_calls.c.tool_output,
    tool_calls.c.is_error,
)


def blocks_of_conversation(
    conversation_id: int | BindParameter[Any],
    *extra: ColumnElement[Any],
    only: ColumnElement[bool] | None = None,
) -> Select[Any]:
    """Every message of a conversation with its blocks (those that meet `only`, if given),
    one row per block: messages in order, a message's rows together, and `in_block_order`
    puts the blocks of each message in order.

    Rows start with `message_id` and `block_id`, then carry what `block_content` needs and
    the `extra` columns. Messages without such blocks still come back once (LEFT JOIN),
    block columns NULL: `only` is a join condition, so it leaves out blocks, never messages.
    The statement sorts by message only: a second sort key over the join makes MariaDB copy
    every row into a temporary table and sort it, three times the server's time.
    """
    joined = (
        blocks.c.message_id == messages.c.id
        if only is None
        else and_(blocks.c.message_id == messages.c.id, only)
    )
    return (
        select(
            messages.c.id.label("message_id"),
            blocks.c.id.label("block_id"),
            *_CONTENT_COLUMNS,
            *extra,
        )
        .select_from(messages)
        .outerjoin(blocks, joined)
        .outerjoin(tool_calls, tool_calls.c.block_id == blocks.c.id)
        .where(messages.c.conversation_id == conversation_id)
        .order_by(messages.c.id)
    )


#: A row's place in a conversation: (message id, block id).
_PLACE = itemgetter(0, 1)


def in_block_order[Row: Sequence[Any]](rows: list[Row]) -> list[Row]:
    """The rows of `blocks_of_conversation` in (message, block) order: as they came when
    the server read each message's blocks in index order (the usual case), else sorted."""
    places = list(map(_PLACE, rows))
    if all(map(le, places, islice(places, 1, None))):
        return rows
    return sorted(rows, key=_PLACE)


def tool_content(
    tool_call_id: str, tool_name: str, tool_input: Any, tool_output: str | None, is_error: bool
) -> dict[str, Any]:
    """A `tool_use` block's content, in the host's shape."""
    return {
        "tool_call_id": tool_call_id,
        "tool_name": tool_name,
        "tool_input": tool_input if tool_input is not None else {},
        "tool_output": tool_output or "",
        "is_error": bool(is_error),
    }


def block_content(row: Any) -> dict[str, Any]:
    """The `content` dict of a block row selected with the ToolCall columns."""
    if row.block_type == TOOL_USE:
        return tool_content(
            row.tool_call_id, row.tool_name, row.tool_input, row.tool_output, row.is_error
        )
    content: dict[str, Any] = row.content
    return content
