"""Push a short agent conversation through slack_agents_sa and print what was stored.

Uses SLACK_AGENTS_SA_URL, or the embedded default (slack_agents_sa.db in this folder).
Each run adds one new Slack thread; earlier runs' threads stay.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import Any

from slack_agents.conversations import ConversationManager

from slack_agents_sa import Provider
from slack_agents_sa.settings import safe_url, url_from_environment


async def _one_turn(cm: ConversationManager, conversation_id: int | str) -> str:
    """One user question answered with a tool call; returns the tool call's id."""
    tool_call_id = f"toolu_{time.time_ns()}"
    message_id = await cm.create_message(conversation_id, "U024BE7LH", "Ann Lee", "ann")
    await cm.append_text_block(message_id, "How many open incidents do we have?", is_user=True)
    await cm.append_text_block(message_id, "Let me look that up.")
    await cm.append_tool_block(
        message_id,
        tool_call_id=tool_call_id,
        tool_name="list_incidents",
        tool_input={"status": "open", "limit": 50},
        tool_output='{"count": 3, "ids": ["INC-7", "INC-9", "INC-12"]}',
        is_error=False,
    )
    await cm.append_text_block(message_id, "There are 3 open incidents: INC-7, INC-9 and INC-12.")
    await cm.append_usage_block(
        message_id,
        model="claude-sonnet",
        version="2025-01",
        input_tokens=1843,
        output_tokens=96,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=1200,
        peak_single_call_input_tokens=1843,
        estimated_cost_usd=0.0069,
    )
    return tool_call_id


def _show(title: str, value: Any) -> None:
    print(f"\n--- {title}")
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


async def main() -> None:
    storage = Provider(url=url_from_environment())
    await storage.initialize()
    try:
        cm = ConversationManager(storage)
        thread_ts = f"{time.time():.6f}"
        conversation_id = await cm.get_or_create_conversation(
            "incident-bot", "C0OPS", thread_ts, channel_name="ops"
        )
        tool_call_id = await _one_turn(cm, conversation_id)
        await storage.upsert_heartbeat("incident-bot", time.time())
        await storage.set("a2a_tasks", "task-1", {"task_id": "task-1", "state": "working"})

        print(f"Stored in {safe_url(storage.settings.url)}")
        _show("conversation", (await cm.get_conversations_for_export("incident-bot"))[-1])
        _show("messages with blocks", await cm.get_messages_with_blocks(conversation_id))
        history = await cm.get_messages(conversation_id)
        _show("LLM history rebuilt for the next turn", [asdict(m) for m in history])
        _show(f"get_tool_call({tool_call_id!r})", await cm.get_tool_call(tool_call_id))
        _show("heartbeat", await storage.get_heartbeat("incident-bot"))
        _show(
            "query('a2a_tasks', {'state': 'working'})",
            await storage.query("a2a_tasks", {"state": "working"}),
        )
        total = len(await cm.get_conversations_for_export("incident-bot"))
        print(f"\n{total} conversation(s) stored for incident-bot so far.")
    finally:
        await storage.close()


if __name__ == "__main__":
    asyncio.run(main())
