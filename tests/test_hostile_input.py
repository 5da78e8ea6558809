"""Whatever users paste: each value round-trips exactly, or raises a clear TypeError/ValueError
naming the argument before anything is written. On every backend, identically."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from slack_agents.storage.base import OAuthTokenRow

from slack_agents_sa import Provider
from slack_agents_sa.models import OUR_TABLES

NUL = "a\x00b"
LONE_SURROGATE = "a\ud800b"
ODD_TEXT = ["", "👋🏽", "\u202eRTL مرحبا", "שלום", "e\u0301", " ", "\t\n", "'; --", '"', "\\"]


@pytest.mark.parametrize("argument", ["namespace", "key"])
@pytest.mark.parametrize("bad", [NUL, LONE_SURROGATE], ids=["NUL", "lone-surrogate"])
async def test_namespaces_and_keys_refuse_nul_and_lone_surrogates(
    provider: Provider, argument: str, bad: str
) -> None:
    address = {"namespace": "ns", "key": "k", argument: bad}
    with pytest.raises(ValueError, match=rf"^{argument} contains"):
        await provider.set(address["namespace"], address["key"], {"v": 1})
    with pytest.raises(ValueError, match=rf"^{argument} contains"):
        await provider.append(address["namespace"], address["key"], {"v": 1})
    assert await provider.query("ns", {}) == []


@pytest.mark.parametrize("bad", [NUL, LONE_SURROGATE], ids=["NUL", "lone-surrogate"])
async def test_text_columns_refuse_nul_and_lone_surrogates_before_writing(
    provider: Provider, bad: str
) -> None:
    with pytest.raises(ValueError, match=r"^channel_id contains"):
        await provider.get_or_create_conversation("bot", bad, "1.1")
    conversation_id = await provider.get_or_create_conversation("bot", "C1", "1.1")
    with pytest.raises(ValueError, match=r"^user_name contains"):
        await provider.create_message(conversation_id, "U1", bad, "ann")
    message_id = await provider.create_message(conversation_id, "U1", "Ann", "ann")
    with pytest.raises(ValueError, match=r"^tool_output contains"):
        await provider.append_tool_block(
            message_id,
            tool_call_id="t",
            tool_name="n",
            tool_input={},
            tool_output=bad,
            is_error=False,
        )
    with pytest.raises(ValueError, match=r"^filename contains"):
        await provider.append_file_block(
            message_id, {"type": "image"}, is_user=True, filename=bad, mimetype="x", size_bytes=1
        )
    assert await provider.get_message_blocks(conversation_id) == [(message_id, [])]


@pytest.mark.parametrize("odd", [NUL, LONE_SURROGATE, *ODD_TEXT])
async def test_json_values_and_keys_round_trip_any_string(provider: Provider, odd: str) -> None:
    value = {odd: odd, "nested": {odd: [odd, {odd: None}]}, "plain": 1}
    await provider.set("ns", "k", value)
    item_id = await provider.append("ns", "list", value)
    assert await provider.get("ns", "k") == value
    assert await provider.get_list("ns", "list") == [{**value, "id": item_id}]
    assert await provider.query("ns", {odd: odd}) == [{**value, "id": item_id}, value]
    conversation_id = await provider.get_or_create_conversation("bot", "C1", "1.1")
    message_id = await provider.create_message(conversation_id, "U1", "Ann", "ann")
    await provider.append_text_block(message_id, odd, is_user=True)
    [(_, [block])] = await provider.get_message_blocks(conversation_id)
    assert block["content"] == {"text": odd}


@pytest.mark.parametrize("odd", ODD_TEXT)
async def test_odd_but_valid_names_round_trip(provider: Provider, odd: str) -> None:
    await provider.set(odd, odd, {"v": odd})
    assert await provider.get(odd, odd) == {"v": odd}
    conversation_id = await provider.get_or_create_conversation(odd, odd, odd, odd)
    assert await provider.has_conversation(odd, odd, odd)
    assert await provider.get_or_create_conversation(odd, odd, odd) == conversation_id


async def test_a_hundred_kilobyte_key_is_refused_naming_the_limit(provider: Provider) -> None:
    with pytest.raises(ValueError, match=r"^key is 102400 characters long; the limit is 500"):
        await provider.set("ns", "k" * 102_400, {"v": 1})
    with pytest.raises(ValueError, match=r"^namespace is 102400 characters long"):
        await provider.get("n" * 102_400, "k")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"set": {1, 2}}, TypeError),
        ({"bytes": b"\x00"}, TypeError),
        ({"when": datetime.now(UTC)}, TypeError),
        ({"nan": float("nan")}, ValueError),
        ({"inf": float("inf")}, ValueError),
        ({1: "int key"}, None),  # JSON keys are strings: json turns 1 into "1"
    ],
    ids=["set", "bytes", "datetime", "nan", "infinity", "int-key"],
)
async def test_values_that_are_not_json_fail_before_writing(
    provider: Provider, value: dict[Any, Any], error: type[Exception] | None
) -> None:
    if error is None:
        await provider.set("ns", "k", value)
        assert await provider.get("ns", "k") == {"1": "int key"}
        return
    with pytest.raises(error, match="cannot store value"):
        await provider.set("ns", "k", value)
    with pytest.raises(error, match="cannot store value"):
        await provider.append("ns", "list", value)
    assert await provider.get("ns", "k") is None
    assert await provider.get_list("ns", "list") == []


@pytest.mark.parametrize("value", [[1, 2], "text", None, 3], ids=["list", "str", "None", "int"])
async def test_non_dict_values_name_the_argument(provider: Provider, value: Any) -> None:
    with pytest.raises(TypeError, match=r"^value must be a dict"):
        await provider.set("ns", "k", value)
    with pytest.raises(TypeError, match=r"^item must be a dict"):
        await provider.append("ns", "k", value)
    with pytest.raises(TypeError, match=r"^filters must be a dict"):
        await provider.query("ns", value)


async def test_ids_of_the_wrong_type_or_of_missing_rows(provider: Provider) -> None:
    with pytest.raises(TypeError, match=r"^conversation_id must be an int"):
        await provider.create_message(1.5, "U1", "Ann", "ann")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^conversation_id must be an integer id"):
        await provider.create_message("12abc", "U1", "Ann", "ann")
    with pytest.raises(ValueError, match="conversation_id=424242 does not name an existing row"):
        await provider.create_message(424242, "U1", "Ann", "ann")
    with pytest.raises(ValueError, match="does not name an existing row"):
        await provider.append_text_block(424242, "hi")
    assert await provider.get_messages_with_blocks(424242) == []


HOSTILE_NAMES = [
    "'; DROP TABLE agents_kv_entries; --",
    '"',
    "'",
    "$",
    "$.state",
    "state.x",
    "[0]",
    "\\",
    "--",
    '"] OR 1=1 --',
    "state' OR '1'='1",
    "%",
    "_",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_hostile_filter_names_and_namespaces_are_plain_data(
    provider: Provider, name: str
) -> None:
    await provider.set("tasks", "t1", {"state": "working", name: "x"})
    await provider.set("tasks", "t2", {"state": "done"})
    await provider.set(name, name, {"state": "working"})
    assert await provider.query("tasks", {name: "x"}) == [{"state": "working", name: "x"}]
    assert await provider.query("tasks", {name: "working"}) == []
    assert await provider.query("tasks", {"state": name}) == []
    assert await provider.query(name, {"state": "working"}) == [{"state": "working"}]
    assert await provider.query(name, {name: None}) == [{"state": "working"}]
    # Every table is still there and still answers.
    async with provider.db.statement() as conn:
        names = await conn.run_sync(lambda sync: set(sync.dialect.get_table_names(sync)))
    assert names >= OUR_TABLES
    assert await provider.get("tasks", "t2") == {"state": "done"}


async def test_oauth_secrets_never_reach_logs_or_error_messages(
    fresh_url: str, provider_options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-SECRET-5f2d9c"
    storage = Provider(url=fresh_url, echo=True, **provider_options)  # echo logs every statement
    await storage.initialize()
    caplog.set_level(logging.DEBUG, logger="slack_agents_sa")
    # What `echo: true` turns on. (DEBUG on sqlalchemy.engine would print result rows,
    # secrets included: docs/reliability.md says not to.)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    try:
        row = OAuthTokenRow(
            access_token=secret,
            refresh_token_enc=secret + "-refresh",
            token_type="Bearer",
            scopes="",
            expires_at=None,
            created_at=1,
            updated_at=1,
        )
        await storage.put_oauth_token("U1", "srv", row)
        assert await storage.get_oauth_token("U1", "srv") == row
        bad = OAuthTokenRow(**{**row.__dict__, "access_token": secret + "\x00"})
        with pytest.raises(Exception) as raised:
            await storage.put_oauth_token("U1", "srv", bad)
        assert secret not in str(raised.value)
        assert secret not in repr(raised.value.__cause__)
    finally:
        await storage.close()
    assert "agents_oauth_tokens" in caplog.text  # statements were logged ...
    assert secret not in caplog.text  # ... their values were not
