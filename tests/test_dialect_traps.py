"""The traps that differ between databases, checked on every backend so they behave alike.

Case, trailing spaces and Unicode normalisation (MySQL's default collations fold the first
two), 4-byte characters (MySQL's 3-byte `utf8`), the longest keys an index allows, and
multi-megabyte payloads (MySQL's `max_allowed_packet`).
"""

from __future__ import annotations

import base64
import json
import os

import pytest

from slack_agents_sa import Provider
from slack_agents_sa.models import KEY_LENGTH, NAME_LENGTH

#: Strings that a case-insensitive or PAD SPACE collation, or Unicode normalisation, would
#: treat as equal; every one must stay a separate key.
LOOKALIKES = ["a", "A", "a ", " a", "é", "e\u0301", "ß", "ss", "İ", "i"]
EMOJI_TEXT = "👋🏽 héllo שלום 中文 𝄞 \u200d"


async def test_lookalike_keys_stay_distinct(provider: Provider) -> None:
    for index, key in enumerate(LOOKALIKES):
        await provider.set("ns", key, {"index": index})
        await provider.append(key, "list", {"index": index})
    for index, key in enumerate(LOOKALIKES):
        assert await provider.get("ns", key) == {"index": index}, repr(key)
        assert [item["index"] for item in await provider.get_list(key, "list")] == [index]
    assert [value["index"] for value in await provider.query("ns", {})] == sorted(
        range(len(LOOKALIKES)), key=lambda index: LOOKALIKES[index]
    )


async def test_lookalike_thread_and_tool_call_ids_stay_distinct(provider: Provider) -> None:
    conversations = [
        await provider.get_or_create_conversation("bot", channel, "1.1") for channel in LOOKALIKES
    ]
    assert len(set(conversations)) == len(LOOKALIKES)
    message_id = await provider.create_message(conversations[0], "U1", "Ann", "ann")
    for index, call_id in enumerate(LOOKALIKES):
        await provider.append_tool_block(
            message_id,
            tool_call_id=call_id,
            tool_name="t",
            tool_input={"index": index},
            tool_output="",
            is_error=False,
        )
    for index, call_id in enumerate(LOOKALIKES):
        call = await provider.get_tool_call(call_id)
        assert call is not None and json.loads(call["input_json"]) == {"index": index}


async def test_four_byte_unicode_round_trips_in_every_kind_of_column(provider: Provider) -> None:
    conversation_id = await provider.get_or_create_conversation(
        EMOJI_TEXT, EMOJI_TEXT, EMOJI_TEXT, EMOJI_TEXT
    )
    message_id = await provider.create_message(conversation_id, EMOJI_TEXT, EMOJI_TEXT, EMOJI_TEXT)
    await provider.append_text_block(message_id, EMOJI_TEXT, is_user=True)
    await provider.append_tool_block(
        message_id,
        tool_call_id=EMOJI_TEXT,
        tool_name=EMOJI_TEXT,
        tool_input={EMOJI_TEXT: EMOJI_TEXT},
        tool_output=EMOJI_TEXT,
        is_error=False,
    )
    await provider.set(EMOJI_TEXT, EMOJI_TEXT, {EMOJI_TEXT: [EMOJI_TEXT]})

    assert await provider.get(EMOJI_TEXT, EMOJI_TEXT) == {EMOJI_TEXT: [EMOJI_TEXT]}
    [exported] = await provider.get_conversations_for_export(EMOJI_TEXT)
    assert exported["channel_name"] == EMOJI_TEXT == exported["thread_id"]
    [message] = await provider.get_messages_with_blocks(conversation_id)
    assert message["user_name"] == EMOJI_TEXT == message["user_handle"]
    text_block, _ = message["blocks"]
    assert text_block["content"]["text"] == EMOJI_TEXT
    call = await provider.get_tool_call(EMOJI_TEXT)
    assert call is not None
    assert call["tool_name"] == EMOJI_TEXT and call["output_json"] == EMOJI_TEXT


async def test_longest_allowed_names_and_keys_round_trip(provider: Provider) -> None:
    # Four bytes a character: the widest an index must hold.
    name, key = "😀" * NAME_LENGTH, "😀" * KEY_LENGTH
    await provider.set(name, key, {"ok": True})
    assert await provider.get(name, key) == {"ok": True}
    assert await provider.get_or_create_conversation(name, name, name) == (
        await provider.get_or_create_conversation(name, name, name)
    )
    with pytest.raises(ValueError, match="key is 501 characters long; the limit is 500"):
        await provider.set(name, key + "x", {"ok": False})


def _file_content(megabytes: float) -> dict[str, object]:
    data = base64.b64encode(os.urandom(int(megabytes * 1024 * 1024 * 3 / 4))).decode()
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": data},
    }


async def test_a_five_megabyte_file_block_round_trips(provider: Provider) -> None:
    conversation_id = await provider.get_or_create_conversation("bot", "C1", "1.1")
    message_id = await provider.create_message(conversation_id, "U1", "Ann", "ann")
    content = _file_content(5)
    await provider.append_file_block(
        message_id, content, is_user=True, filename="big.png", mimetype="image/png", size_bytes=1
    )
    [(_, [block])] = await provider.get_message_blocks(conversation_id)
    assert block["content"] == content


async def test_a_twenty_megabyte_file_block_round_trips_or_names_the_server_limit(
    provider: Provider,
) -> None:
    """MariaDB's default `max_allowed_packet` is 16 MB: there the write is refused, clearly,
    before anything is sent; SQLite and PostgreSQL store it."""
    conversation_id = await provider.get_or_create_conversation("bot", "C1", "1.1")
    message_id = await provider.create_message(conversation_id, "U1", "Ann", "ann")
    content = _file_content(20)
    try:
        await provider.append_file_block(
            message_id,
            content,
            is_user=True,
            filename="huge.png",
            mimetype="image/png",
            size_bytes=1,
        )
    except ValueError as error:
        assert provider.db.dialect_name in ("mysql", "mariadb")
        assert "max_allowed_packet is" in str(error)
        assert await provider.get_message_blocks(conversation_id) == [(message_id, [])]
    else:
        [(_, [block])] = await provider.get_message_blocks(conversation_id)
        assert block["content"] == content
    # The connection is still good for the next call.
    await provider.append_text_block(message_id, "after", is_user=False)
