"""Round trips through the host's ConversationManager, the layer the agent really calls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from slack_agents.conversations import ConversationManager
from slack_agents.llm.base import Message
from slack_agents.storage import postgres as builtin_postgres
from slack_agents.storage import sqlite as builtin_sqlite

from slack_agents_sa import Provider
from tests.agent_turns import CHART, IMAGE, drive_conversation
from tests.databases import POSTGRES, create_scratch_database, drop_scratch_database

#: Our provider on each executor (the default is the native one on SQLite files and asyncpg).
EXECUTORS = pytest.mark.parametrize(
    "executor",
    [
        pytest.param("native", marks=pytest.mark.native),
        pytest.param("sqlalchemy", marks=pytest.mark.sqlalchemy),
    ],
)

EXPECTED_HISTORY = [
    Message(role="user", content="What's the weather in Paris?"),
    Message(
        role="assistant",
        content=[
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool_use",
                "id": "toolu_weather_1",
                "name": "get_weather",
                "input": {"city": "Paris", "units": "metric"},
            },
        ],
    ),
    Message(
        role="user",
        content=[
            {
                "type": "tool_result",
                "tool_use_id": "toolu_weather_1",
                "content": '{"temp": 12, "sky": "rain"}',
            },
        ],
    ),
    Message(role="assistant", content=[{"type": "text", "text": "12°C and raining in Paris ☔."}]),
    Message(role="user", content=[IMAGE, {"type": "text", "text": "What is in this photo?"}]),
    Message(role="assistant", content=[{"type": "text", "text": "A cat on a keyboard."}]),
    # The PDF's own block is left out: its text is already the user_text block.
    Message(role="user", content="[q3.pdf]\nRevenue grew 12%."),
    Message(
        role="assistant",
        content=[
            {"type": "text", "text": "Plotting it."},
            {
                "type": "tool_use",
                "id": "toolu_plot_1",
                "name": "plot",
                "input": {"series": [1.0, 1.12], "labels": ["Q2", "Q3"]},
            },
            {
                "type": "tool_use",
                "id": "toolu_mail_1",
                "name": "send_mail",
                "input": {"to": "cfo@example.com"},
            },
        ],
    ),
    Message(
        role="user",
        content=[
            {"type": "tool_result", "tool_use_id": "toolu_plot_1", "content": "rendered chart.png"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_mail_1",
                "content": "SMTP timeout",
                "is_error": True,
            },
        ],
    ),
    Message(role="assistant", content=[{"type": "text", "text": "Chart attached; mail failed."}]),
]


async def test_get_messages_rebuilds_the_llm_history(provider: Provider) -> None:
    cm = ConversationManager(provider)
    conversation_id = await drive_conversation(cm)
    assert await cm.get_messages(conversation_id) == EXPECTED_HISTORY
    assert await cm.has_conversation("helper", "C042", "1700000000.000100")


async def test_tool_calls_and_export_after_a_conversation(provider: Provider) -> None:
    cm = ConversationManager(provider)
    conversation_id = await drive_conversation(cm)
    mail = await cm.get_tool_call("toolu_mail_1")
    assert mail is not None and mail["is_error"] is True and mail["output_json"] == "SMTP timeout"
    if not cm.supports_export:
        with pytest.raises(NotImplementedError):
            await cm.get_conversations_for_export("helper")
        return
    [conversation] = await cm.get_conversations_for_export("helper", handle="bo")
    assert conversation["id"] == conversation_id and conversation["channel_name"] == "ops"
    messages = await cm.get_messages_with_blocks(conversation_id)
    assert [m["user_handle"] for m in messages] == ["ann", "bo", "ann"]
    assert [b["block_type"] for b in messages[2]["blocks"]] == [
        "user_file",
        "user_text",
        "text",
        "tool_use",
        "file",
        "tool_use",
        "text",
        "usage",
    ]
    assert messages[2]["blocks"][4]["content"] == CHART
    usage = [b["content"] for m in messages for b in m["blocks"] if b["block_type"] == "usage"]
    assert [u["input_tokens"] for u in usage] == [1200, 3400, 5600]


async def _history_of(storage: Any, *, with_documents: bool) -> list[Message]:
    await storage.initialize()
    try:
        cm = ConversationManager(storage)
        conversation_id = await drive_conversation(cm, with_documents=with_documents)
        return await cm.get_messages(conversation_id)
    finally:
        await storage.close()


@EXECUTORS
async def test_history_equals_the_builtin_sqlite_providers(tmp_path: Path, executor: Any) -> None:
    # The built-in SQLite provider resends uploaded documents, which the contract drops,
    # so the comparison leaves documents out.
    ours = await _history_of(
        Provider(url=f"sqlite:///{tmp_path}/ours.db", executor=executor), with_documents=False
    )
    theirs = await _history_of(
        builtin_sqlite.Provider(path=str(tmp_path / "theirs.db")), with_documents=False
    )
    assert ours == theirs == EXPECTED_HISTORY[:6]


@EXECUTORS
async def test_history_equals_the_builtin_postgres_providers(executor: Any) -> None:
    server = POSTGRES.server_url
    theirs_url = await create_scratch_database(server)
    ours_url = await create_scratch_database(server)
    try:
        plain = theirs_url.set(drivername="postgresql").render_as_string(hide_password=False)
        theirs = await _history_of(builtin_postgres.Provider(url=plain), with_documents=True)
        ours = await _history_of(
            Provider(url=ours_url.render_as_string(hide_password=False), executor=executor),
            with_documents=True,
        )
    finally:
        await asyncio.gather(
            drop_scratch_database(server, theirs_url), drop_scratch_database(server, ours_url)
        )
    assert ours == theirs == EXPECTED_HISTORY
