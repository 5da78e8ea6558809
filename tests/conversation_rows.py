"""Conversations for retention and erasure tests: turns that touch every table and link,
made old by rewriting their timestamps, and the counts that show what is left (and that
nothing is orphaned)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from slack_agents_sa import Provider
from slack_agents_sa.models import Block, Conversation, Message, ToolCall, table_of
from slack_agents_sa.types import utcnow

_conversations = table_of(Conversation)
_messages = table_of(Message)
_blocks = table_of(Block)
_tool_calls = table_of(ToolCall)


#: Rows one turn of `turn` writes: a message, five blocks, one tool call.
BLOCKS_PER_TURN = 5


def days_ago(days: float) -> datetime:
    return utcnow() - timedelta(days=days)


async def turn(storage: Provider, conversation_id: int, tag: str) -> None:
    """A message of user U1 with `reply`'s blocks."""
    message = await storage.create_message(conversation_id, "U1", "Ann", "ann")
    await reply(storage, message, tag)


async def reply(storage: Provider, message: int, tag: str) -> None:
    """A message's blocks: a user text, a tool call, the file it made, a text quoting the
    file (links between blocks) and a usage block."""
    await storage.append_text_block(message, f"question {tag}", is_user=True)
    tool = await storage.append_tool_block(
        message,
        tool_call_id=f"call-{tag}",
        tool_name="plot",
        tool_input={"tag": tag},
        tool_output="chart.png",
        is_error=False,
    )
    chart = await storage.append_file_block(
        message,
        {"data": "iVBO", "filename": "chart.png", "mimeType": "image/png"},
        is_user=False,
        filename="chart.png",
        mimetype="image/png",
        size_bytes=4,
        tool_block_id=tool,
    )
    await storage.append_text_block(message, f"answer {tag}", source_file_id=chart)
    await storage.append_usage_block(
        message,
        model="m",
        version="1",
        input_tokens=10,
        output_tokens=1,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
        peak_single_call_input_tokens=10,
        estimated_cost_usd=0.0,
    )


async def conversation(
    storage: Provider, thread: str, turns: int, *, agent: str = "helper", age_days: float = 0
) -> int:
    conversation_id = await storage.get_or_create_conversation(agent, "C1", thread, "ops")
    for number in range(turns):
        await turn(storage, conversation_id, f"{agent}-{thread}-{number}")
    if age_days:
        await age(storage, conversation_id, age_days)
    return conversation_id


async def age(storage: Provider, conversation_id: int, days: float) -> None:
    """Make a conversation and every message in it `days` old."""
    when = days_ago(days)
    await storage.db.execute(
        update(_conversations).where(_conversations.c.id == conversation_id),
        {"created_at": when},
    )
    await storage.db.execute(
        update(_messages).where(_messages.c.conversation_id == conversation_id),
        {"created_at": when},
    )


async def rows_per_conversation(storage: Provider) -> dict[int, tuple[int, int, int]]:
    """Each conversation's (messages, blocks, tool calls)."""
    stmt = (
        select(
            _conversations.c.id,
            func.count(_messages.c.id.distinct()),
            func.count(_blocks.c.id.distinct()),
            func.count(_tool_calls.c.block_id.distinct()),
        )
        .select_from(
            _conversations.outerjoin(_messages, _messages.c.conversation_id == _conversations.c.id)
            .outerjoin(_blocks, _blocks.c.message_id == _messages.c.id)
            .outerjoin(_tool_calls, _tool_calls.c.block_id == _blocks.c.id)
        )
        .group_by(_conversations.c.id)
    )
    rows = (await storage.db.execute(stmt)).all()
    return {int(key): (int(m), int(b), int(t)) for key, m, b, t in map(tuple, rows)}


async def orphans(storage: Provider) -> dict[str, int]:
    """Rows whose parent is gone, and tool blocks without their tool call: all must be 0."""
    checks = {
        "messages without conversation": select(func.count())
        .select_from(_messages)
        .where(
            ~select(_conversations.c.id)
            .where(_conversations.c.id == _messages.c.conversation_id)
            .exists()
        ),
        "blocks without message": select(func.count())
        .select_from(_blocks)
        .where(~select(_messages.c.id).where(_messages.c.id == _blocks.c.message_id).exists()),
        "tool calls without block": select(func.count())
        .select_from(_tool_calls)
        .where(~select(_blocks.c.id).where(_blocks.c.id == _tool_calls.c.block_id).exists()),
        "tool blocks without call": select(func.count())
        .select_from(_blocks)
        .where(
            _blocks.c.block_type == "tool_use",
            ~select(_tool_calls.c.block_id).where(_tool_calls.c.block_id == _blocks.c.id).exists(),
        ),
    }
    return {name: (await storage.db.execute(stmt)).scalar_one() for name, stmt in checks.items()}


NO_ORPHANS = {
    "messages without conversation": 0,
    "blocks without message": 0,
    "tool calls without block": 0,
    "tool blocks without call": 0,
}
