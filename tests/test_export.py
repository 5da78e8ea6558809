"""The export reads the host's export-conversations and export-usage commands use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from slack_agents_sa import Provider


async def _conversation(provider: Provider, thread: str, handle: str) -> tuple[int, int]:
    conversation_id = await provider.get_or_create_conversation("bot", "C1", thread, "general")
    message_id = await provider.create_message(conversation_id, f"U-{handle}", handle, handle)
    return conversation_id, message_id


async def test_conversations_for_export_filter_by_handle(provider: Provider) -> None:
    ann, _ = await _conversation(provider, "1.1", "ann")
    bob, _ = await _conversation(provider, "1.2", "bob")
    await provider.get_or_create_conversation("other-bot", "C1", "1.3")
    everything = await provider.get_conversations_for_export("bot")
    assert [row["id"] for row in everything] == [ann, bob]
    assert await provider.get_conversations_for_export("bot", handle="bob") == [
        {
            "id": bob,
            "agent_name": "bot",
            "channel_id": "C1",
            "channel_name": "general",
            "thread_id": "1.2",
        }
    ]
    assert await provider.get_conversations_for_export("bot", handle="nobody") == []


async def test_conversations_for_export_filter_by_dates_as_strings_or_datetimes(
    provider: Provider,
) -> None:
    conversation_id, _ = await _conversation(provider, "1.1", "ann")
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    assert [
        c["id"]
        for c in await provider.get_conversations_for_export(
            "bot", date_from=now - hour, date_to=now + hour
        )
    ] == [conversation_id]
    assert [
        c["id"]
        for c in await provider.get_conversations_for_export(
            "bot", date_from=(now - hour).isoformat(), date_to=(now + hour).isoformat()
        )
    ] == [conversation_id]
    assert await provider.get_conversations_for_export("bot", date_from=now + hour) == []
    assert await provider.get_conversations_for_export("bot", date_to=now - hour) == []
    # A naive datetime is taken as UTC.
    naive = (now - hour).replace(tzinfo=None)
    assert len(await provider.get_conversations_for_export("bot", date_from=naive)) == 1


async def test_bad_dates_are_rejected_by_name(provider: Provider) -> None:
    with pytest.raises(ValueError, match="date_from must be an ISO 8601"):
        await provider.get_conversations_for_export("bot", date_from="yesterday")


async def test_messages_with_blocks_holds_everything_with_aware_datetimes(
    provider: Provider,
) -> None:
    conversation_id, message_id = await _conversation(provider, "1.1", "ann")
    doc_id = await provider.append_file_block(
        message_id,
        {"data": "eA=="},
        is_user=True,
        filename="a.txt",
        mimetype="text/plain",
        size_bytes=1,
    )
    await provider.append_text_block(
        message_id, "a.txt says x", is_user=True, source_file_id=doc_id
    )
    tool_id = await provider.append_tool_block(
        message_id,
        tool_call_id="c1",
        tool_name="chart",
        tool_input={"n": 1},
        tool_output="ok",
        is_error=False,
    )
    chart_id = await provider.append_file_block(
        message_id,
        {"data": "eQ=="},
        is_user=False,
        filename="chart.png",
        mimetype="image/png",
        size_bytes=1,
        tool_block_id=tool_id,
    )
    await provider.append_usage_block(
        message_id,
        model="claude",
        version="2025",
        input_tokens=100,
        output_tokens=20,
        cache_creation_input_tokens=1,
        cache_read_input_tokens=2,
        peak_single_call_input_tokens=90,
        estimated_cost_usd=0.0125,
    )
    [message] = await provider.get_messages_with_blocks(conversation_id)
    assert message["id"] == message_id
    assert (message["user_id"], message["user_name"], message["user_handle"]) == (
        "U-ann",
        "ann",
        "ann",
    )
    assert message["created_at"].tzinfo is not None
    blocks = message["blocks"]
    assert [b["block_type"] for b in blocks] == [
        "user_file",
        "user_text",
        "tool_use",
        "file",
        "usage",
    ]
    assert all(b["created_at"].tzinfo is not None for b in blocks)
    assert all(isinstance(b["id"], int) for b in blocks)
    assert blocks[0]["content"] == {"data": "eA=="}
    assert (blocks[0]["filename"], blocks[0]["size_bytes"]) == ("a.txt", 1)
    assert blocks[1]["source_file_id"] == doc_id
    assert blocks[1]["content"] == {"text": "a.txt says x"}
    assert blocks[2]["id"] == tool_id
    assert blocks[2]["content"] == {
        "tool_call_id": "c1",
        "tool_name": "chart",
        "tool_input": {"n": 1},
        "tool_output": "ok",
        "is_error": False,
    }
    assert blocks[3]["id"] == chart_id
    assert blocks[3]["content"] == {
        "data": "eQ==",
        "filename": "chart.png",
        "mimeType": "image/png",
    }
    assert blocks[4]["content"] == {
        "model": "claude",
        "version": "2025",
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_creation_input_tokens": 1,
        "cache_read_input_tokens": 2,
        "peak_single_call_input_tokens": 90,
        "estimated_cost_usd": 0.0125,
    }


async def test_supports_export_is_false_only_for_in_memory_sqlite(provider: Provider) -> None:
    in_memory = provider.settings.url.database in (None, "", ":memory:")
    assert provider.supports_export is (not in_memory)
