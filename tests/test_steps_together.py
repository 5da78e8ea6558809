"""A transaction's steps whose values are known up front (`db.steps` with no step waiting
for an id): MySQL's native executor sends them with BEGIN and COMMIT as one packet, every
other path one statement at a time. Whatever the path, the outcome is the same: every
step's row, or none of them, the failing statement's own error, and a connection that
serves the next call.

Tests taking `provider` run on every backend and executor.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from slack_agents_sa import Provider
from slack_agents_sa.errors import ConnectionLostError, InvalidValueError
from slack_agents_sa.executors import Step
from slack_agents_sa.executors import mysql as mysql_executor
from slack_agents_sa.models import Block, KeyValueEntry, metadata, table_of
from tests.databases import MYSQL, backend_params

_blocks = table_of(Block)
_entries = table_of(KeyValueEntry)
_tool_calls = metadata.tables["agents_tool_calls"]

#: More calls than a provider has connections: a connection left mid-transaction shows.
CALLS_PAST_THE_POOL = 12

#: Text that would end a statement, a quoted string, or a `%` format if it were not escaped.
HOSTILE = "'; COMMIT; DELETE FROM agents_blocks; -- \" \\ %s %% %(x)s \\' ;\n\x1a \u00e9 \U0001f600"


def _entry(key: str, value: Any = None) -> Step:
    return Step(insert(_entries), {"namespace": "steps", "key": key, "value": value or {}})


async def _keys(provider: Provider) -> list[str]:
    rows = await provider.db.fetch(
        select(_entries.c.key).where(_entries.c.namespace == "steps").order_by(_entries.c.key)
    )
    return [row.key for row in rows]


async def _message(provider: Provider, thread: str = "1.1") -> tuple[int, int]:
    conversation_id = await provider.get_or_create_conversation("bot", "C1", thread)
    return conversation_id, await provider.create_message(conversation_id, "U1", "Ann", "ann")


async def test_steps_with_known_values_write_every_row_and_report_each_id(
    provider: Provider,
) -> None:
    _, message_id = await _message(provider)
    row = {"message_id": message_id, "block_type": "text", "in_history": True, "content": None}
    ids = await provider.db.steps(
        [
            Step(insert(_blocks), row, returns_id=True),
            _entry("a"),
            Step(insert(_blocks), {**row, "block_type": "file"}, returns_id=True),
        ]
    )
    assert ids[1] is None and isinstance(ids[0], int) and isinstance(ids[2], int)
    rows = await provider.db.fetch(select(_blocks.c.id, _blocks.c.block_type).order_by("id"))
    assert [(r.id, r.block_type) for r in rows] == [(ids[0], "text"), (ids[2], "file")]
    assert await _keys(provider) == ["a"]


async def test_a_later_step_the_server_refuses_takes_the_earlier_ones_back(
    provider: Provider,
) -> None:
    await provider.db.steps([_entry("taken")])
    for _ in range(CALLS_PAST_THE_POOL):
        with pytest.raises(IntegrityError):
            await provider.db.steps([_entry("a"), _entry("b"), _entry("taken"), _entry("c")])
    assert await _keys(provider) == ["taken"]
    await provider.db.steps([_entry("a"), _entry("b")])
    assert await _keys(provider) == ["a", "b", "taken"]


async def test_a_first_step_refused_runs_none_of_the_steps_after_it(provider: Provider) -> None:
    await provider.db.steps([_entry("taken")])
    for _ in range(CALLS_PAST_THE_POOL):
        with pytest.raises(IntegrityError):
            await provider.db.steps([_entry("taken"), _entry("after")])
    assert await _keys(provider) == ["taken"]


async def test_values_that_look_like_sql_or_formats_are_stored_as_they_are(
    provider: Provider,
) -> None:
    conversation_id, message_id = await _message(provider)
    await provider.append_tool_block(
        message_id,
        tool_call_id=HOSTILE[:200],
        tool_name=HOSTILE[:100],
        tool_input={HOSTILE: [HOSTILE, {"%s": "%%"}]},
        tool_output=HOSTILE * 3,
        is_error=True,
    )
    found = await provider.get_tool_call(HOSTILE[:200])
    assert found is not None
    assert found["tool_name"] == HOSTILE[:100] and found["output_json"] == HOSTILE * 3
    [(_, [block])] = await provider.get_message_blocks(conversation_id)
    assert block["content"]["tool_input"] == {HOSTILE: [HOSTILE, {"%s": "%%"}]}
    assert block["content"]["tool_call_id"] == HOSTILE[:200]


async def test_concurrent_tool_blocks_each_link_their_call_to_their_own_block(
    provider: Provider,
) -> None:
    """The tool call's row takes its block's id (on MySQL, LAST_INSERT_ID() of its own
    connection): calls running at once on several connections never cross."""
    messages = [(await _message(provider, f"1.{n}"))[1] for n in range(20)]

    async def tool_block(n: int, message_id: int) -> int:
        return await provider.append_tool_block(
            message_id,
            tool_call_id=f"toolu_{n}",
            tool_name="t",
            tool_input={"n": n},
            tool_output="",
            is_error=False,
        )

    block_ids = await asyncio.gather(*(tool_block(n, m) for n, m in enumerate(messages)))
    rows = await provider.db.fetch(
        select(_tool_calls.c.tool_call_id, _tool_calls.c.block_id, _blocks.c.message_id).join(
            _blocks, _blocks.c.id == _tool_calls.c.block_id
        )
    )
    linked = {row.tool_call_id: (row.block_id, row.message_id) for row in rows}
    assert linked == {f"toolu_{n}": (block_ids[n], messages[n]) for n in range(len(messages))}


@pytest.mark.parametrize(
    ("character", "mebibytes"),
    [("x", 9), ("\\", 3)],
    ids=["plain", "escaped"],
)
async def test_steps_too_large_together_for_the_server_are_refused_before_sending(
    provider: Provider, character: str, mebibytes: int
) -> None:
    """Each step fits MySQL/MariaDB's `max_allowed_packet` (16 MB by default) on its own;
    sent as one packet they would not, and the server would drop the connection. Other
    databases store them. Backslashes count twice once escaped (in the JSON, then again in
    the statement MySQL receives): the check measures the packet as sent."""
    text = character * (mebibytes * 1024 * 1024)
    steps = [_entry("a", {"text": text}), _entry("b", {"text": text})]
    try:
        await provider.db.steps(steps)
    except InvalidValueError as error:
        assert provider.db.dialect_name in ("mysql", "mariadb")
        assert provider.db.executor_kind == "native", "one at a time, each step fits"
        assert "max_allowed_packet is" in str(error)
        assert await _keys(provider) == []
    else:
        assert await _keys(provider) == ["a", "b"]
    await provider.db.steps([_entry("c")])
    assert "c" in await _keys(provider)


@pytest.mark.parametrize("fresh_url", backend_params([MYSQL]), indirect=True)
async def test_an_error_of_ours_between_the_servers_answers_drops_the_connection(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server runs the whole packet, COMMIT included, whatever the executor does after
    sending it: a ROLLBACK then would not take the rows back. The connection is dropped
    and the call is a lost connection, its rows whole; the next call works."""
    assert provider.db.executor_kind == "native"
    reported_id = mysql_executor._reported_id

    async def failing(cursor: Any) -> int | None:
        await reported_id(cursor)
        raise RuntimeError("an error of ours while reading the answers")

    _, message_id = await _message(provider)
    monkeypatch.setattr(mysql_executor, "_reported_id", failing)
    row = {"message_id": message_id, "block_type": "text", "in_history": True, "content": None}
    with pytest.raises(ConnectionLostError, match="took effect entirely or not at all"):
        await provider.db.steps([Step(insert(_blocks), row, returns_id=True), _entry("a")])
    monkeypatch.undo()
    assert await _keys(provider) == ["a"]  # whole: the server committed the packet
    blocks = await provider.db.fetch(select(_blocks.c.id))
    assert len(blocks) == 1
    await provider.db.steps([_entry("b")])
    assert await _keys(provider) == ["a", "b"]
