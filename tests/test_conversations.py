"""Conversations, messages, blocks, tool calls and heartbeats, on every backend."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.blocks import in_block_order
from tests.databases import opened_provider


async def _message(provider: Provider, thread: str = "1700000000.000100") -> tuple[int, int]:
    conversation_id = await provider.get_or_create_conversation("bot", "C1", thread, "general")
    message_id = await provider.create_message(conversation_id, "U1", "Ann", "ann")
    return conversation_id, message_id


async def test_get_or_create_conversation_returns_one_int_id_per_thread(
    provider: Provider,
) -> None:
    first = await provider.get_or_create_conversation("bot", "C1", "1.1", "general")
    again = await provider.get_or_create_conversation("bot", "C1", "1.1")
    other = await provider.get_or_create_conversation("bot", "C1", "1.2")
    other_agent = await provider.get_or_create_conversation("bot2", "C1", "1.1")
    assert isinstance(first, int)
    assert first == again
    assert len({first, other, other_agent}) == 3


async def test_existing_conversation_gets_the_new_channel_name_only_when_given(
    provider: Provider,
) -> None:
    conversation_id = await provider.get_or_create_conversation("bot", "C1", "1.1", "old")
    await provider.get_or_create_conversation("bot", "C1", "1.1", "renamed")
    await provider.get_or_create_conversation("bot", "C1", "1.1", None)
    exported = await provider.get_conversations_for_export("bot")
    assert exported == [
        {
            "id": conversation_id,
            "agent_name": "bot",
            "channel_id": "C1",
            "channel_name": "renamed",
            "thread_id": "1.1",
        }
    ]


async def test_has_conversation(provider: Provider) -> None:
    assert not await provider.has_conversation("bot", "C1", "1.1")
    await provider.get_or_create_conversation("bot", "C1", "1.1")
    assert await provider.has_conversation("bot", "C1", "1.1")
    assert not await provider.has_conversation("bot", "C2", "1.1")


async def test_create_message_returns_increasing_int_ids(provider: Provider) -> None:
    conversation_id = await provider.get_or_create_conversation("bot", "C1", "1.1")
    ids = [await provider.create_message(conversation_id, "U1", "Ann", "ann") for _ in range(3)]
    assert all(isinstance(message_id, int) for message_id in ids)
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_ids_given_as_strings_are_accepted(provider: Provider) -> None:
    conversation_id = await provider.get_or_create_conversation("bot", "C1", "1.1")
    message_id = await provider.create_message(str(conversation_id), "U1", "Ann", "ann")
    await provider.append_text_block(str(message_id), "hi", is_user=True)
    assert await provider.get_message_blocks(str(conversation_id)) == [
        (message_id, [{"block_type": "user_text", "content": {"text": "hi"}}])
    ]


async def test_create_message_in_a_missing_conversation_is_a_clear_error(
    provider: Provider,
) -> None:
    with pytest.raises(ValueError, match="conversation_id=999999 does not name an existing row"):
        await provider.create_message(999_999, "U1", "Ann", "ann")


async def test_blocks_on_a_missing_message_are_a_clear_error(provider: Provider) -> None:
    with pytest.raises(ValueError, match="message_id"):
        await provider.append_text_block(999_999, "lost")
    with pytest.raises(ValueError, match="message_id=999999"):
        await provider.append_tool_block(
            999_999, tool_call_id="t", tool_name="n", tool_input={}, tool_output="", is_error=False
        )
    assert await provider.get_tool_call("t") is None


async def test_get_message_blocks_keeps_order_and_leaves_out_usage_and_documents(
    provider: Provider,
) -> None:
    conversation_id, first = await _message(provider)
    document = {"data": "JVBERi0=", "filename": "report.pdf", "mimeType": "application/pdf"}
    doc_id = await provider.append_file_block(
        first,
        document,
        is_user=True,
        filename="report.pdf",
        mimetype="application/pdf",
        size_bytes=5,
    )
    await provider.append_text_block(first, "report text", is_user=True, source_file_id=doc_id)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}
    await provider.append_file_block(
        first, image, is_user=True, filename="a.png", mimetype="image/png", size_bytes=1
    )
    await provider.append_text_block(first, "Looking.")
    tool_id = await provider.append_tool_block(
        first,
        tool_call_id="call_1",
        tool_name="render",
        tool_input={"q": "chart"},
        tool_output="done",
        is_error=False,
    )
    chart = {"type": "image", "data": "y"}
    await provider.append_file_block(
        first,
        chart,
        is_user=False,
        filename="chart.png",
        mimetype="image/png",
        size_bytes=1,
        tool_block_id=tool_id,
    )
    await provider.append_text_block(first, "Here it is.")
    await provider.append_usage_block(
        first,
        model="m",
        version="1",
        input_tokens=10,
        output_tokens=5,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
        peak_single_call_input_tokens=10,
        estimated_cost_usd=0.001,
    )
    empty_message = await provider.create_message(conversation_id, "U1", "Ann", "ann")

    assert await provider.get_message_blocks(conversation_id) == [
        (
            first,
            [
                {"block_type": "user_text", "content": {"text": "report text"}},
                {"block_type": "user_file", "content": image},
                {"block_type": "text", "content": {"text": "Looking."}},
                {
                    "block_type": "tool_use",
                    "content": {
                        "tool_call_id": "call_1",
                        "tool_name": "render",
                        "tool_input": {"q": "chart"},
                        "tool_output": "done",
                        "is_error": False,
                    },
                },
                {"block_type": "file", "content": chart},
                {"block_type": "text", "content": {"text": "Here it is."}},
            ],
        ),
        (empty_message, []),
    ]


async def test_blocks_written_to_messages_in_turn_come_back_in_order(provider: Provider) -> None:
    conversation_id, first = await _message(provider)
    second = await provider.create_message(conversation_id, "U1", "Ann", "ann")
    for turn in range(4):
        await provider.append_text_block(first, f"first {turn}")
        await provider.append_text_block(second, f"second {turn}")
    history = await provider.get_message_blocks(conversation_id)
    assert history == [
        (
            message,
            [{"block_type": "text", "content": {"text": f"{name} {turn}"}} for turn in range(4)],
        )
        for message, name in ((first, "first"), (second, "second"))
    ]
    exported = await provider.get_messages_with_blocks(conversation_id)
    assert [[block["content"]["text"] for block in message["blocks"]] for message in exported] == [
        [f"{name} {turn}" for turn in range(4)] for name in ("first", "second")
    ]


def test_rows_a_server_returns_out_of_block_order_are_put_in_order() -> None:
    # The history statement sorts by message only; a plan that reads a message's blocks
    # out of index order must not reorder the conversation.
    rows = [(1, 10, "a"), (1, 11, "b"), (2, None, None), (3, 12, "c"), (3, 13, "d")]
    assert in_block_order(rows) is rows
    for shuffled in ([rows[1], rows[0], *rows[2:]], [*rows[:3], rows[4], rows[3]], rows[::-1]):
        assert in_block_order(shuffled) == rows


async def test_get_message_blocks_of_an_unknown_conversation_is_empty(provider: Provider) -> None:
    assert await provider.get_message_blocks(424242) == []


async def test_conversations_do_not_see_each_others_blocks(provider: Provider) -> None:
    first_conv, first_msg = await _message(provider, "1.1")
    second_conv, second_msg = await _message(provider, "1.2")
    await provider.append_text_block(first_msg, "one")
    await provider.append_text_block(second_msg, "two")
    assert await provider.get_message_blocks(second_conv) == [
        (second_msg, [{"block_type": "text", "content": {"text": "two"}}])
    ]
    assert first_conv != second_conv


async def test_get_tool_call_by_its_llm_id(provider: Provider) -> None:
    _, message_id = await _message(provider)
    block_id = await provider.append_tool_block(
        message_id,
        tool_call_id="toolu_01",
        tool_name="search",
        tool_input={"query": "ünïcode", "limit": 3},
        tool_output='{"hits": []}',
        is_error=True,
    )
    assert isinstance(block_id, int)
    found = await provider.get_tool_call("toolu_01")
    assert found is not None
    # JSONB (PostgreSQL) does not keep key order, so the input is compared as data,
    # and its layout as json.dumps(indent=2) of that data.
    assert json.loads(found.pop("input_json")) == {"query": "ünïcode", "limit": 3}
    assert found == {"tool_name": "search", "output_json": '{"hits": []}', "is_error": True}
    recorded = await provider.get_tool_call("toolu_01")
    assert recorded is not None
    assert recorded["input_json"] == json.dumps(json.loads(recorded["input_json"]), indent=2)
    assert await provider.get_tool_call("toolu_unknown") is None


async def test_append_file_block_returns_an_id_usable_as_a_link(provider: Provider) -> None:
    _, message_id = await _message(provider)
    file_id = await provider.append_file_block(
        message_id,
        {"data": "eA=="},
        is_user=True,
        filename="a.txt",
        mimetype="text/plain",
        size_bytes=1,
    )
    assert isinstance(file_id, int)
    await provider.append_text_block(message_id, "x", is_user=True, source_file_id=file_id)
    with pytest.raises(ValueError, match="does not name an existing row"):
        await provider.append_text_block(message_id, "x", source_file_id=file_id + 1000)


# The "now" id is fixed: pytest-xdist's workers must collect the same test names.
@pytest.mark.parametrize(
    "moment", [pytest.param(time.time(), id="now"), 1700000000.123456, 0.1, 1e-7, 2**40 + 0.5]
)
async def test_heartbeat_float_round_trips_exactly(provider: Provider, moment: float) -> None:
    await provider.upsert_heartbeat("bot", moment - 10)
    await provider.upsert_heartbeat("bot", moment)
    assert await provider.get_heartbeat("bot") == {"last_ping_pong_time": moment}
    assert await provider.get_heartbeat("other-bot") is None


async def test_heartbeat_rejects_non_numbers(provider: Provider) -> None:
    with pytest.raises(TypeError, match="last_ping_pong_time must be a float"):
        await provider.upsert_heartbeat("bot", "now")  # type: ignore[arg-type]


#: The first word of a statement `echo` logs (SQLAlchemy's or the native executor's line).
SQL_VERBS = {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"}


def statements_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The verbs of the statements `echo: true` logged since the last `caplog.clear()`.

    Both executors log each statement they send at INFO on "sqlalchemy.engine.Engine"
    (SQLAlchemy's echo, and the native path's line ending "[native executor] [parameters
    hidden]"); BEGIN, COMMIT and parameter lines are not statements.
    """
    verbs = []
    for record in caplog.records:
        if record.name != "sqlalchemy.engine.Engine" or record.levelno != logging.INFO:
            continue
        words = record.getMessage().split()
        if words and words[0].upper() in SQL_VERBS:
            verbs.append(words[0].upper())
    return verbs


async def _id_step(url: str) -> int:
    """How far apart the ids the server hands out are: 1, but on MySQL/MariaDB
    `auto_increment_increment` (a Galera cluster sets it to its size)."""
    if make_url(url).get_backend_name() not in ("mysql", "mariadb"):
        return 1
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT @@auto_increment_increment"))).scalar_one())
    finally:
        await engine.dispose()


async def test_looking_up_an_existing_thread_is_one_read_and_writes_nothing(
    fresh_url: str, provider_options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Every turn looks its thread up: that must not rewrite the row or use up an id."""
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine.Engine")
    async with opened_provider(fresh_url, echo=True, **provider_options) as provider:
        first = await provider.get_or_create_conversation("bot", "C1", "1.1", "general")
        # The count is of the statements this path sent: the executor logs them.
        caplog.clear()
        assert await provider.get_or_create_conversation("bot", "C1", "1.1") == first
        assert statements_logged(caplog) == ["SELECT"], "echo logs each statement sent"
        caplog.clear()
        for _ in range(5):
            assert await provider.get_or_create_conversation("bot", "C1", "1.1", "general") == first
            assert await provider.get_or_create_conversation("bot", "C1", "1.1") == first
        assert statements_logged(caplog) == ["SELECT"] * 10
        caplog.clear()
        assert await provider.get_or_create_conversation("bot", "C1", "1.1", "renamed") == first
        assert statements_logged(caplog) == ["SELECT", "UPDATE"]
        # No id was used up by the lookups: the next thread gets the next id (one step on).
        step = await _id_step(fresh_url)
        assert await provider.get_or_create_conversation("bot", "C1", "1.2") == first + step
        [renamed, _] = await provider.get_conversations_for_export("bot")
        assert renamed["channel_name"] == "renamed"
