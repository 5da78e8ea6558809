"""The executors (option `executor`): what broke for projects that ran SQLAlchemy-compiled
statements on the driver themselves, one test per item of native-executor-notes.md.

Tests taking `provider` run on every backend, those with a native executor on both paths
(ids `...-sqlalchemy`): the expected values are Python's, so both paths must give them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    ClauseElement,
    Insert,
    Table,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.sql.compiler import SQLCompiler

from slack_agents_sa import ConfigError, Provider, conversations, keyvalue, oauth
from slack_agents_sa.backends import backend_for
from slack_agents_sa.executors import CompiledStatement, Step
from slack_agents_sa.executors.rows import NativeRow
from slack_agents_sa.models import (
    OUR_TABLES,
    Block,
    Conversation,
    Heartbeat,
    KeyValueEntry,
    OAuthToken,
    metadata,
    table_of,
)
from tests.admin import admin_rows
from tests.databases import (
    NATIVE_BACKENDS,
    SERVER_BACKENDS,
    Backend,
    backend_params,
    empty_all_tables,
    opened_provider,
    scratch_database,
)
from tests.statements import UPSERT_SHAPES, module_statements

_conversations = table_of(Conversation)
_messages = metadata.tables["agents_messages"]
_blocks = table_of(Block)
_tool_calls = metadata.tables["agents_tool_calls"]
_entries = table_of(KeyValueEntry)
_items = metadata.tables["agents_list_items"]
_heartbeats = table_of(Heartbeat)
_tokens = table_of(OAuthToken)


async def _message(provider: Provider) -> int:
    conversation_id = await provider.get_or_create_conversation("bot", "C1", "1.1", "general")
    return await provider.create_message(conversation_id, "U1", "Ann", "ann")


async def _item(provider: Provider, namespace: str, key: str, n: int) -> int:
    return int(await provider.append(namespace, key, {"n": n}))


# --- the option and the default ----------------------------------------------------------


async def test_executor_kind_is_native_by_default_where_a_native_executor_exists(
    provider: Provider, backend: Backend
) -> None:
    assert provider.db.executor_kind == backend.executor_kind
    expected = "native" if backend in NATIVE_BACKENDS else "sqlalchemy"
    assert provider.db.executor_kind == expected


@pytest.fixture
def native_url(backend: Backend, server_databases: dict[Backend, URL], tmp_path: Path) -> str:
    """The backend's database URL, made before the test's event loop runs (making a scratch
    database runs a loop of its own)."""
    if backend.storage == "file":
        return f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}"
    return server_databases[backend].render_as_string(hide_password=False)


@pytest.mark.parametrize("backend", backend_params(NATIVE_BACKENDS))
async def test_executor_native_named_explicitly_is_native(native_url: str) -> None:
    async with opened_provider(native_url, executor="native") as storage:
        assert storage.db.executor_kind == "native"
        await storage.set("ns", "k", {"v": 1})
        assert await storage.get("ns", "k") == {"v": 1}


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///:memory:",
        "sqlite://",
        "mysql+aiomysql://u@127.0.0.1/db",
    ],
)
def test_executor_native_where_none_exists_is_a_config_error_naming_the_option(url: str) -> None:
    with pytest.raises(ConfigError, match="option 'executor': no native executor for"):
        Provider(url=url, executor="native")


@pytest.mark.parametrize("value", ["bogus", "Native", "", 1])
def test_an_unknown_executor_is_a_config_error(value: Any) -> None:
    with pytest.raises(ConfigError, match="executor"):
        Provider(url="sqlite://", executor=value)


def test_executor_sqlalchemy_is_accepted_everywhere() -> None:
    for url in ("sqlite://", "sqlite:///x.db", "postgresql://u@h/db", "mysql+aiomysql://u@h/db"):
        assert Provider(url=url, executor="sqlalchemy").settings.executor == "sqlalchemy"


# --- 1. parameter order --------------------------------------------------------------------


async def test_binds_of_different_types_out_of_alphabetical_order_land_in_their_slots(
    provider: Provider,
) -> None:
    first = await _item(provider, "ns-b", "k-z", 1)
    second = await _item(provider, "ns-b", "k-z", 2)
    await _item(provider, "ns-b", "other", 3)
    await _item(provider, "ns-a", "k-z", 4)
    [(created_at,)] = await provider.db.fetch(
        select(_items.c.created_at).where(_items.c.id == bindparam("id")), {"id": second}
    )
    # Placeholder order: zeta (str), alpha (int), mid (datetime), beta (str); names sorted
    # differently, and each value only matches in its own slot.
    stmt = (
        select(_items.c.id, _items.c.value)
        .where(
            _items.c.namespace == bindparam("zeta"),
            _items.c.id >= bindparam("alpha"),
            _items.c.created_at <= bindparam("mid"),
            _items.c.key == bindparam("beta"),
        )
        .order_by(_items.c.id)
    )
    values = {"beta": "k-z", "mid": created_at, "alpha": first, "zeta": "ns-b"}
    rows = await provider.db.fetch(stmt, values)
    assert [(row.id, row.value) for row in rows] == [(first, {"n": 1}), (second, {"n": 2})]
    narrower = {**values, "alpha": second}
    assert [row.id for row in await provider.db.fetch(stmt, narrower)] == [second]


async def test_one_bindparam_used_twice_takes_its_value_in_both_places(provider: Provider) -> None:
    in_key = await _item(provider, "a", "x", 1)
    in_namespace = await _item(provider, "x", "b", 2)
    await _item(provider, "c", "d", 3)
    stmt = (
        select(_items.c.id)
        .where(
            or_(_items.c.key == bindparam("both"), _items.c.namespace == bindparam("both")),
            _items.c.id > bindparam("after"),
        )
        .order_by(_items.c.id)
    )
    rows = await provider.db.fetch(stmt, {"after": 0, "both": "x"})
    assert [row.id for row in rows] == [in_key, in_namespace]
    assert [row.id for row in await provider.db.fetch(stmt, {"after": in_key, "both": "x"})] == [
        in_namespace
    ]
    # Also on the write path: an UPDATE whose SET and WHERE share one value.
    stmt_update = (
        _items.update().where(_items.c.key == bindparam("same")).values(namespace=bindparam("same"))
    )
    assert await provider.db.write(stmt_update, {"same": "x"}) == 1
    rows = await provider.db.fetch(select(_items.c.namespace).where(_items.c.id == in_key))
    assert [row.namespace for row in rows] == ["x"]


# --- 2. expanding IN -----------------------------------------------------------------------


async def test_expanding_in_with_a_type_decorator_element_and_changing_list_lengths(
    provider: Provider,
) -> None:
    ids = [await _item(provider, "ns", f"k{n}", n) for n in range(4)]
    moments = {
        row.id: row.created_at
        for row in await provider.db.fetch(select(_items.c.id, _items.c.created_at))
    }
    # UTCDateTime is a TypeDecorator everywhere; `key` is one on MySQL (VARBINARY).
    by_moment = (
        select(_items.c.id)
        .where(_items.c.created_at.in_(bindparam("moments", expanding=True)))
        .order_by(_items.c.id)
    )
    by_key = (
        select(_items.c.id)
        .where(_items.c.key.in_(bindparam("keys", expanding=True)), _items.c.id > bindparam("n"))
        .order_by(_items.c.id)
    )
    # One statement object, run with 3, 1 and 0 values: the length is not baked in.
    for chosen in (ids[:3], ids[3:], [], ids):
        picked = [moments[i] for i in chosen]
        rows = await provider.db.fetch(by_moment, {"moments": picked})
        assert sorted(row.id for row in rows) == sorted({i for i in ids if moments[i] in picked})
        keys = [f"k{ids.index(i)}" for i in chosen]
        rows = await provider.db.fetch(by_key, {"n": 0, "keys": keys})
        assert [row.id for row in rows] == chosen
    # Moments in another time zone are the same instants.
    plus_five = timezone(timedelta(hours=5, minutes=30))
    rows = await provider.db.fetch(by_moment, {"moments": [moments[ids[1]].astimezone(plus_five)]})
    assert ids[1] in [row.id for row in rows]


async def test_an_empty_in_list_matches_nothing_and_not_in_an_empty_list_matches_all(
    provider: Provider,
) -> None:
    ids = [await _item(provider, "ns", "k", n) for n in range(3)]
    none = select(_items.c.id).where(_items.c.id.in_(bindparam("ids", expanding=True)))
    every = select(_items.c.id).where(_items.c.id.not_in(bindparam("ids", expanding=True)))
    assert await provider.db.fetch(none, {"ids": []}) == []
    assert sorted(row.id for row in await provider.db.fetch(every, {"ids": []})) == ids
    assert await provider.db.write(delete(_items).where(_items.c.id.in_([])), {}) == 0
    deleted = delete(_items).where(_items.c.id.in_(bindparam("ids", expanding=True)))
    assert await provider.db.write(deleted, {"ids": ids[:2]}) == 2
    assert [row.id for row in await provider.db.fetch(select(_items.c.id))] == ids[2:]


async def test_a_literal_execute_bind_is_rendered_with_each_calls_value(
    provider: Provider,
) -> None:
    ids = [await _item(provider, "ns", "k", n) for n in range(3)]
    stmt = (
        select(_items.c.id)
        .where(_items.c.id >= bindparam("low", literal_execute=True))
        .order_by(_items.c.id)
    )
    assert [row.id for row in await provider.db.fetch(stmt, {"low": ids[1]})] == ids[1:]
    assert [row.id for row in await provider.db.fetch(stmt, {"low": ids[2]})] == ids[2:]


# --- 3. escaped bind names -----------------------------------------------------------------

PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def test_every_column_and_table_of_ours_has_a_plain_identifier_for_a_name() -> None:
    """Bind names come from column keys; SQLAlchemy escapes names with spaces, dots or %
    (and the processors then use the unescaped ones). We have none to escape."""
    ours = [table for table in metadata.sorted_tables if table.name in OUR_TABLES]
    assert {table.name for table in ours} == OUR_TABLES
    for table in ours:
        assert PLAIN_IDENTIFIER.fullmatch(table.name), table.name
        for column in table.columns:
            assert PLAIN_IDENTIFIER.fullmatch(column.key), f"{table.name}.{column.key}"
            assert column.key == column.name, f"{table.name}.{column.key}"


# --- 4. stale compiled statements ----------------------------------------------------------

_BY_ID = select(_items.c.value).where(_items.c.id == bindparam("x"))


async def test_a_statement_compiled_once_takes_each_calls_value(provider: Provider) -> None:
    five, seven = await _item(provider, "ns", "k", 5), await _item(provider, "ns", "k", 7)
    assert [row.value for row in await provider.db.fetch(_BY_ID, {"x": five})] == [{"n": 5}]
    assert [row.value for row in await provider.db.fetch(_BY_ID, {"x": seven})] == [{"n": 7}]
    assert [row.value for row in await provider.db.fetch(_BY_ID, {"x": five})] == [{"n": 5}]


async def test_statements_with_literals_and_params_never_reuse_another_statements_values(
    provider: Provider,
) -> None:
    five, seven = await _item(provider, "ns", "k", 5), await _item(provider, "ns", "k", 7)
    # Same shape, different literals: each statement runs with its own.
    for item_id, n in ((five, 5), (seven, 7), (five, 5)):
        literal = select(_items.c.value).where(_items.c.id == item_id)
        assert [row.value for row in await provider.db.fetch(literal)] == [{"n": n}]
    # A default value in the bindparam, overridden by `.params()` and by the call's values.
    defaulted = select(_items.c.value).where(_items.c.id == bindparam("x", value=five))
    assert [row.value for row in await provider.db.fetch(defaulted)] == [{"n": 5}]
    assert [row.value for row in await provider.db.fetch(defaulted.params(x=seven))] == [{"n": 7}]
    assert [row.value for row in await provider.db.fetch(defaulted, {"x": seven})] == [{"n": 7}]
    assert [row.value for row in await provider.db.fetch(defaulted)] == [{"n": 5}]


# --- 5. type round trips -------------------------------------------------------------------

#: JSON edge values: each must read back as the same JSON (same types, same key order).
JSON_VALUES: list[Any] = [
    {"b": 1, "a": [1, 2.5, None, True, False], "nested": {"z": {}, "y": []}},
    {"big": 2**70, "neg": -(2**63), "float": 1e16, "tiny": 5e-324, "third": 1 / 3, "neg0": -0.0},
    {"text": "é ü 😀 \u0000 \\ \" '", "lone": "\udc80", "empty": ""},
    [1, "two", None, {"three": 3}],
    "just a string",
    0.1,
    42,
    [12345678901234567890, -(2**70)],
    True,
    None,
]

#: Aware datetimes in several zones, with microseconds, across eras.
MOMENTS = [
    datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1901, 12, 14, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=-8))),
    datetime(2038, 1, 19, 3, 14, 8, 500000, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2999, 12, 31, 12, 0, tzinfo=timezone(timedelta(hours=14))),
]

BIG_INTS = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)]
FLOATS = [0.1, 1e-7, 2**40 + 0.5, 1700000000.123456, -1.5, 1e300, 2.2250738585072014e-308]
TEXTS = ["a", "A", "a ", " a", "Ä", "😀", "x" * 255]


def _json_text(value: Any) -> str:
    """JSON with types kept apart (1 vs 1.0 vs True) and key order significant."""
    return json.dumps(value)


async def test_json_round_trips_exactly_through_rows_scalars_and_returning(
    provider: Provider,
) -> None:
    message_id = await _message(provider)
    stored: list[int] = []
    for value in JSON_VALUES:
        row = {"message_id": message_id, "block_type": "text", "in_history": True}
        stored.append(await provider.db.insert_id(insert(_blocks), {**row, "content": value}))
    rows = await provider.db.fetch(
        select(_blocks.c.id, _blocks.c.content, _blocks.c.in_history).order_by(_blocks.c.id)
    )
    assert [row.id for row in rows] == stored
    assert [_json_text(row.content) for row in rows] == [_json_text(v) for v in JSON_VALUES]
    for block_id, value in zip(stored, JSON_VALUES, strict=True):
        # A one-column query (where scalar paths skipped conversion once).
        scalar = select(_blocks.c.content).where(_blocks.c.id == bindparam("id"))
        [(content,)] = await provider.db.fetch(scalar, {"id": block_id})
        assert _json_text(content) == _json_text(value)
    # JSON in a WHERE-less UPDATE ... and the value column of `set` (NOT NULL, dicts).
    for value in JSON_VALUES[:3]:
        await provider.set("ns", "k", value)
        assert _json_text(await provider.get("ns", "k")) == _json_text(value)
    if provider.db.engine.dialect.insert_returning:
        returning = insert(_blocks).returning(_blocks.c.content, _blocks.c.id)
        for value in JSON_VALUES:
            row = {"message_id": message_id, "block_type": "text", "in_history": False}
            [back] = await provider.db.fetch(returning, {**row, "content": value})
            assert _json_text(back.content) == _json_text(value)


async def test_aware_datetimes_come_back_as_the_same_instant_in_utc(provider: Provider) -> None:
    conversation_id = await provider.get_or_create_conversation("bot", "C1", "1.1")
    for n, moment in enumerate(MOMENTS):
        values = {"conversation_id": conversation_id, "user_id": f"U{n}", "created_at": moment}
        values |= {"user_name": "n", "user_handle": "h"}
        message_id = await provider.db.insert_id(insert(_messages), values)
        by_id = select(_messages.c.created_at, _messages.c.user_id).where(
            _messages.c.id == bindparam("id")
        )
        [row] = await provider.db.fetch(by_id, {"id": message_id})
        assert row.created_at == moment
        assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == timedelta(0)
        assert row.user_id == f"U{n}"
        [(alone,)] = await provider.db.fetch(
            select(_messages.c.created_at).where(_messages.c.id == message_id)
        )
        assert alone == moment and alone.utcoffset() == timedelta(0)
        # And as a bound value compared on the server.
        equal = select(_messages.c.id).where(_messages.c.created_at == bindparam("at"))
        assert message_id in [r.id for r in await provider.db.fetch(equal, {"at": moment})]
    with pytest.raises(ValueError, match="naive datetime"):
        await provider.db.fetch(
            select(_messages.c.id).where(_messages.c.created_at == bindparam("at")),
            {"at": datetime(2024, 1, 1)},
        )


async def test_booleans_big_ints_floats_and_exact_strings_round_trip(provider: Provider) -> None:
    message_id = await _message(provider)
    for n, (flag, size) in enumerate(zip([True, False] * 4, BIG_INTS, strict=False)):
        values = {"message_id": message_id, "block_type": "file", "in_history": flag}
        values |= {"content": None, "size_bytes": size, "filename": f"f{n}"}
        block_id = await provider.db.insert_id(insert(_blocks), values)
        stmt = select(_blocks.c.in_history, _blocks.c.size_bytes, _blocks.c.content).where(
            _blocks.c.id == bindparam("id")
        )
        [row] = await provider.db.fetch(stmt, {"id": block_id})
        assert (row.in_history, row.size_bytes, row.content) == (flag, size, None)
        assert type(row.in_history) is bool and type(row.size_bytes) is int
        [(alone,)] = await provider.db.fetch(
            select(_blocks.c.in_history).where(_blocks.c.id == block_id)
        )
        assert alone is flag
        flagged = select(_blocks.c.id).where(
            _blocks.c.in_history == bindparam("flag"), _blocks.c.size_bytes == bindparam("size")
        )
        assert [r.id for r in await provider.db.fetch(flagged, {"flag": flag, "size": size})] == [
            block_id
        ]
    for n, moment in enumerate(FLOATS):
        await provider.upsert_heartbeat(f"bot{n}", moment)
        [(back,)] = await provider.db.fetch(
            select(_heartbeats.c.last_ping_pong_time).where(
                _heartbeats.c.agent_name == bindparam("agent_name")
            ),
            {"agent_name": f"bot{n}"},
        )
        assert back == moment and type(back) is float
    # Exact strings (VARBINARY on MySQL: bytes in, str out), as keys and as values.
    for n, name in enumerate(TEXTS):
        await provider.set(name, name, {"n": n})
    for n, name in enumerate(TEXTS):
        stmt = select(_entries.c.namespace, _entries.c.key, _entries.c.value).where(
            _entries.c.namespace == bindparam("namespace"), _entries.c.key == bindparam("key")
        )
        [row] = await provider.db.fetch(stmt, {"namespace": name, "key": name})
        assert (row.namespace, row.key, row.value) == (name, name, {"n": n})
        assert type(row.namespace) is str and type(row.key) is str


async def test_oauth_big_ints_and_long_text_round_trip(provider: Provider) -> None:
    long_text = "t" * 100_000 + "é"
    values = {
        "user_id": "U1",
        "server_id": "s",
        "access_token": long_text,
        "refresh_token_enc": None,
        "token_type": "Bearer",
        "scopes": "",
        "expires_at": 2**63 - 1,
        "created_at": -(2**63),
        "updated_at": 0,
    }
    assert await provider.db.write(insert(_tokens), values) == 1
    [row] = await provider.db.fetch(select(*_tokens.c))
    assert row._asdict() == values


# --- 6. Python-side defaults ---------------------------------------------------------------


async def test_each_defaulted_column_left_out_gets_its_python_default(provider: Provider) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    conversation_id = await provider.db.insert_id(
        insert(_conversations), {"agent_name": "a", "channel_id": "c", "thread_id": "t"}
    )
    message_id = await provider.db.insert_id(
        insert(_messages),
        {"conversation_id": conversation_id, "user_id": "U", "user_name": "n", "user_handle": "h"},
    )
    block = {"message_id": message_id, "block_type": "text", "in_history": True, "content": {}}
    block_id = await provider.db.insert_id(insert(_blocks), block)
    item_id = await provider.db.insert_id(
        insert(_items), {"namespace": "n", "key": "k", "value": {}}
    )
    await provider.db.write(insert(_entries), {"namespace": "n", "key": "k", "value": {}})
    # ... and in a transaction, the second step given the first step's id.
    [second_message, second_block] = await provider.db.steps(
        [
            Step(
                insert(_messages),
                {"conversation_id": conversation_id, "user_id": "V", "user_name": "n"}
                | {"user_handle": "h"},
                returns_id=True,
            ),
            Step(
                insert(_blocks),
                lambda previous: (
                    {"message_id": previous, "block_type": "text"}
                    | {"in_history": False, "content": None}
                ),
                returns_id=True,
            ),
        ]
    )
    after = datetime.now(UTC) + timedelta(seconds=1)
    stamped: list[Any] = []
    for table, key, value in (
        (_conversations, _conversations.c.id, conversation_id),
        (_messages, _messages.c.id, message_id),
        (_messages, _messages.c.id, second_message),
        (_blocks, _blocks.c.id, block_id),
        (_blocks, _blocks.c.id, second_block),
        (_items, _items.c.id, item_id),
    ):
        [(created_at,)] = await provider.db.fetch(select(table.c.created_at).where(key == value))
        stamped.append(created_at)
    [entry] = await provider.db.fetch(select(_entries.c.created_at, _entries.c.updated_at))
    stamped += [entry.created_at, entry.updated_at]
    for moment in stamped:
        assert moment is not None and before <= moment <= after
    [(parent,)] = await provider.db.fetch(
        select(_blocks.c.message_id).where(_blocks.c.id == second_block)
    )
    assert parent == second_message


# --- 7. inserted ids -----------------------------------------------------------------------


async def test_insert_id_is_the_new_rows_id_and_the_upsert_gives_the_existing_rows(
    provider: Provider,
) -> None:
    backend = provider.db.backend
    thread = ("agent_name", "channel_id", "thread_id")
    upsert = backend.upsert(
        Conversation, (*thread, "channel_name"), thread, ("channel_name",), True
    )
    keep = backend.upsert(Conversation, thread, thread, (), True)
    first = await provider.db.insert_id(
        upsert, {"agent_name": "a", "channel_id": "c"} | {"thread_id": "1", "channel_name": "one"}
    )
    second = await provider.db.insert_id(
        keep, {"agent_name": "a", "channel_id": "c", "thread_id": "2"}
    )
    assert second != first
    # The same threads again: each gives its existing row's id, updated or kept.
    again = await provider.db.insert_id(
        upsert,
        {"agent_name": "a", "channel_id": "c"} | {"thread_id": "1", "channel_name": "renamed"},
    )
    assert again == first
    assert (
        await provider.db.insert_id(
            keep, {"agent_name": "a", "channel_id": "c"} | {"thread_id": "2"}
        )
        == second
    )
    assert (
        await provider.db.insert_id(
            keep, {"agent_name": "a", "channel_id": "c"} | {"thread_id": "1"}
        )
        == first
    )
    # A plain insert right after (MySQL: LAST_INSERT_ID(id) must not leak into it).
    third = await provider.db.insert_id(
        insert(_conversations), {"agent_name": "a", "channel_id": "c", "thread_id": "3"}
    )
    assert third not in (first, second)
    rows = await provider.db.fetch(
        select(
            _conversations.c.id, _conversations.c.thread_id, _conversations.c.channel_name
        ).order_by(_conversations.c.id)
    )
    assert [tuple(row) for row in rows] == [
        (first, "1", "renamed"),
        (second, "2", None),
        (third, "3", None),
    ]
    # Through the public method, on every backend, concurrently for one new thread.
    ids = await asyncio.gather(
        *(provider.get_or_create_conversation("a", "c", "4") for _ in range(10))
    )
    assert len(set(ids)) == 1 and ids[0] not in (first, second, third)


async def test_ids_inserted_in_a_transaction_are_each_steps_row(provider: Provider) -> None:
    message_id = await _message(provider)
    row = {"message_id": message_id, "block_type": "text", "in_history": True, "content": None}
    ids = await provider.db.steps(
        [
            Step(insert(_blocks), row, returns_id=True),
            Step(insert(_blocks), lambda previous: {**row, "source_file_id": previous}),
            Step(insert(_blocks), row, returns_id=True),
        ]
    )
    assert ids[1] is None and isinstance(ids[0], int) and isinstance(ids[2], int)
    rows = await provider.db.fetch(
        select(_blocks.c.id, _blocks.c.source_file_id).order_by(_blocks.c.id)
    )
    assert [row.id for row in rows][0::2] == [ids[0], ids[2]]
    assert rows[1].source_file_id == ids[0]


# --- 8. every statement compiles on every dialect ------------------------------------------

#: The dialects of every database we run on (no connection needed to compile).
DIALECT_URLS = [
    "sqlite+aiosqlite://",
    "postgresql+asyncpg://",
    "mysql+asyncmy://",
    "mysql+aiomysql://",
    "mariadb+asyncmy://",
]


def _dialect(url: str) -> Dialect:
    dialect: Dialect = make_url(url).get_dialect()()
    return dialect


def _names(stmt: ClauseElement, dialect: Dialect, upsert: bool = False) -> frozenset[str]:
    """The value names a call supplies: every required bind, less a plain INSERT's
    generated id and Python-defaulted columns (which the executor must fill in). An upsert
    names each of its values (the provider passes them all)."""
    required = {name for name, bind in _binds(stmt, dialect).items() if bind.required}
    if not upsert and isinstance(stmt, Insert) and isinstance(stmt.table, Table):
        for column in stmt.table.columns:
            if column is stmt.table.autoincrement_column or column.default is not None:
                required.discard(column.key)
    return frozenset(required)


def _binds(stmt: ClauseElement, dialect: Dialect, names: frozenset[str] = frozenset()) -> Any:
    compiled = stmt.compile(dialect=dialect, column_keys=sorted(names) or None)
    assert isinstance(compiled, SQLCompiler)
    return compiled.binds


def _sample(type_: Any) -> Any:
    """A value of the Python type a bind of `type_` takes."""
    # A TypeDecorator says `object`: its implementation's type is what it takes.
    type_ = getattr(type_, "impl_instance", type_)
    try:
        python_type = type_.python_type
    except NotImplementedError:
        return "x"
    samples: dict[type, Any] = {
        int: 1,
        float: 1.5,
        bool: True,
        str: "x",
        datetime: datetime(2024, 1, 1, tzinfo=UTC),
        dict: {"a": 1},
    }
    return samples.get(python_type, "x")


def _upserts(dialect_name: str) -> list[Insert]:
    return [backend_for(dialect_name).upsert(*shape) for shape in UPSERT_SHAPES]


def _placeholders(sql: str, dialect: Dialect) -> int:
    if dialect.paramstyle == "numeric_dollar":
        return max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
    if dialect.paramstyle == "qmark":
        return sql.count("?")
    assert dialect.paramstyle == "format", dialect.paramstyle
    return len(re.findall(r"(?<!%)%s", sql.replace("%%", "")))


def test_every_module_level_statement_is_discovered() -> None:
    found = set()
    for module in (keyvalue, conversations, oauth):
        found |= set(module_statements(module))
    assert found >= {
        "_GET", "_DELETE", "_APPEND", "_GET_LIST", "_FIND_CONVERSATION",
        "_RENAME_CONVERSATION", "_INSERT_MESSAGE", "_INSERT_BLOCK", "_INSERT_TOOL_CALL",
        "_GET_TOOL_CALL", "_INSERT_TOOL_BLOCK_AND_CALL", "_HISTORY", "_GET_HEARTBEAT",
        "_GET_TOKEN", "_DELETE_TOKEN", "_GET_CLIENT", "_DELETE_CLIENT",
    }  # fmt: skip


@pytest.mark.parametrize("url", DIALECT_URLS)
def test_every_statement_the_provider_uses_compiles_natively_on_every_dialect(url: str) -> None:
    """Catches a SQLAlchemy upgrade that changes what the native executors rely on."""
    dialect = _dialect(url)
    statements: list[ClauseElement] = []
    for module in (keyvalue, conversations, oauth):
        statements += module_statements(module).values()
    upserts = _upserts(dialect.name)
    statements += upserts
    assert len(statements) >= 23
    for stmt in statements:
        names = _names(stmt, dialect, upsert=stmt in upserts)
        compiled = CompiledStatement(stmt, dialect, names)
        binds = _binds(stmt, dialect, names)
        values = {name: _sample(binds[name].type) for name in names}
        sql, arguments = compiled.arguments(values)
        assert sql == compiled.sql and "POSTCOMPILE" not in sql and "__[" not in sql, sql
        assert len(arguments) == _placeholders(sql, dialect), sql
        # Python-side defaults are filled in, never sent as None.
        if isinstance(stmt, Insert) and "created_at" in sql and "created_at" not in names:
            assert any(isinstance(argument, datetime | str) for argument in arguments), sql


# --- 9. many calls over a few lanes, some cancelled ----------------------------------------


async def _sessions_waiting_on_a_lock(url: URL) -> int:
    if url.get_backend_name() in ("mysql", "mariadb"):
        statement = (
            "SELECT count(*) FROM information_schema.processlist WHERE db = :database "
            "AND id <> CONNECTION_ID() AND state LIKE '%lock%'"
        )
    else:
        statement = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :database "
            "AND wait_event_type = 'Lock'"
        )
    [(count,)] = await admin_rows(url, statement, database=url.database)
    return int(count)


@asynccontextmanager
async def _five_lanes(backend: Backend, url: URL) -> AsyncIterator[tuple[Provider, URL]]:
    """A provider with 5 lanes (pool_size 5) on `backend`'s scratch database `url`."""
    await empty_all_tables(url)
    options = {"pool_size": 5, **backend.options}
    async with opened_provider(url.render_as_string(hide_password=False), **options) as storage:
        yield storage, url


@pytest.fixture(params=backend_params(SERVER_BACKENDS))
def server_database(
    request: pytest.FixtureRequest, server_databases: dict[Backend, URL]
) -> tuple[Backend, URL]:
    """Each server backend, either executor, with its scratch database (made outside the
    event loop)."""
    return request.param, server_databases[request.param]


@pytest.fixture(params=backend_params([b for b in SERVER_BACKENDS if b in NATIVE_BACKENDS]))
def native_server_database(
    request: pytest.FixtureRequest, server_databases: dict[Backend, URL]
) -> tuple[Backend, URL]:
    """Each server backend on its native executor (lanes), with its scratch database."""
    return request.param, server_databases[request.param]


@pytest.fixture
async def server(server_database: tuple[Backend, URL]) -> AsyncIterator[tuple[Provider, URL]]:
    async with _five_lanes(*server_database) as found:
        yield found


@pytest.fixture
async def native_server(
    native_server_database: tuple[Backend, URL],
) -> AsyncIterator[tuple[Provider, URL]]:
    async with _five_lanes(*native_server_database) as found:
        yield found


async def test_fifty_calls_over_five_lanes_with_some_cancelled_leave_every_lane_usable(
    server: tuple[Provider, URL],
) -> None:
    storage, url = server
    await storage.set("ns", "k", {"v": 0})

    async def call(n: int) -> Any:
        if n % 2:
            return await storage.append("ns", "list", {"n": n})
        return await storage.get("ns", "k")

    tasks = [asyncio.ensure_future(call(n)) for n in range(50)]
    await asyncio.sleep(0)
    await asyncio.sleep(0.001)
    for task in tasks[::3]:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        assert outcome is None or isinstance(outcome, str | dict | asyncio.CancelledError)
    await storage.db.settle()
    # Cancelled callers do not cancel the statement (shielded): every append is whole.
    appended = {item["n"] for item in await storage.get_list("ns", "list")}
    assert appended <= {n for n in range(50) if n % 2}
    assert {n for n, o in enumerate(outcomes) if n % 2 and isinstance(o, str)} <= appended
    # Then 50 more, all succeeding.
    more = await asyncio.gather(*(call(n) for n in range(50, 100)))
    assert [o for o in more[0::2]] == [{"v": 0}] * 25
    assert len({o for o in more[1::2]}) == 25
    await _every_lane_reaches_the_server(storage, url)


async def test_calls_cancelled_inside_the_executor_free_their_lanes(
    native_server: tuple[Provider, URL],
) -> None:
    """The provider shields its calls; the lanes must still survive a cancellation that
    lands mid-protocol (a lane is reset or replaced, never reused half-way, never lost).
    (SQLAlchemy's path relies on the shield alone: its pool leaks a connection cancelled
    mid-checkout, which is why the provider shields every call.)"""
    storage, url = native_server
    executor = storage.db._executor  # the one place a test reaches past the provider
    await storage.set("ns", "k", {"v": 1})
    get = select(_entries.c.value).where(_entries.c.namespace == bindparam("namespace"))
    for turns in range(6):
        tasks = [asyncio.ensure_future(executor.fetch(get, {"namespace": "ns"})) for _ in range(50)]
        for _ in range(turns):
            await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if not isinstance(outcome, asyncio.CancelledError):
                assert not isinstance(outcome, BaseException), repr(outcome)
                assert [row.value for row in outcome] == [{"v": 1}]
    results = await asyncio.gather(*(storage.get("ns", "k") for _ in range(50)))
    assert results == [{"v": 1}] * 50
    await _every_lane_reaches_the_server(storage, url)


async def _every_lane_reaches_the_server(storage: Provider, url: URL) -> None:
    """Five calls at once each wait on the server (a table lock held elsewhere): five lanes
    are free and working. On a native executor an eighth call waits for a lane instead."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as locker:
            if url.get_backend_name() in ("mysql", "mariadb"):
                await locker.execute(text("LOCK TABLES agents_heartbeats WRITE"))
            else:
                await locker.execute(text("LOCK TABLE agents_heartbeats IN ACCESS EXCLUSIVE MODE"))
            calls = [
                asyncio.ensure_future(storage.upsert_heartbeat(f"bot{n}", float(n)))
                for n in range(8)
            ]
            # However busy the machine, the five reach the lock: wait for them (the deadline
            # only stops a hang), then give a sixth the time to show up if it could.
            deadline = asyncio.get_running_loop().time() + 120
            while await _sessions_waiting_on_a_lock(url) < 5:
                assert asyncio.get_running_loop().time() < deadline, "calls never reached the lock"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            waiting = await _sessions_waiting_on_a_lock(url)
            if url.get_backend_name() in ("mysql", "mariadb"):
                await locker.execute(text("UNLOCK TABLES"))
            await locker.rollback()
            await asyncio.gather(*calls)
    finally:
        await engine.dispose()
    if storage.db.executor_kind == "native":
        assert waiting == 5, "a native executor has exactly its 5 lanes"
    else:
        assert waiting >= 5
    for n in range(8):
        assert await storage.get_heartbeat(f"bot{n}") == {"last_ping_pong_time": float(n)}


# --- 10. the schema changed by another connection ------------------------------------------


@pytest.mark.parametrize("backend", backend_params([NATIVE_BACKENDS[0], *SERVER_BACKENDS]))
async def test_calls_after_another_connection_alters_a_table_still_work(
    backend: Backend, tmp_path: Path
) -> None:
    if backend.storage == "file":
        url_text = f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}"
        await _altered_while_open(url_text, make_url(url_text), backend)
        return
    async with scratch_database(backend) as url_text:
        await _altered_while_open(url_text, make_url(url_text), backend)


async def _altered_while_open(url_text: str, url: URL, backend: Backend) -> None:
    async with opened_provider(url_text, **backend.options) as storage:
        assert storage.db.executor_kind == backend.executor_kind
        conversation_id = await storage.get_or_create_conversation("bot", "C1", "1.1")
        message_id = await storage.create_message(conversation_id, "U1", "Ann", "ann")

        async def every_kind_of_call(n: int) -> None:
            await storage.set("ns", f"k{n}", {"n": n})
            assert await storage.get("ns", f"k{n}") == {"n": n}
            await storage.append("ns", "list", {"n": n})
            assert [item["n"] for item in await storage.get_list("ns", "list")] == list(
                range(n + 1)
            )
            await storage.append_text_block(message_id, f"text {n}")
            await storage.append_tool_block(
                message_id,
                tool_call_id=f"toolu_{n}",
                tool_name="t",
                tool_input={"n": n},
                tool_output="out",
                is_error=False,
            )
            blocks = await storage.get_message_blocks(conversation_id)
            assert len(blocks[0][1]) == 2 * (n + 1)
            assert await storage.get_or_create_conversation("bot", "C1", "1.1") == conversation_id

        await every_kind_of_call(0)  # every statement prepared on the lanes
        for n, statement in enumerate(_schema_changes(url), start=1):
            await admin_rows(url, statement)
            await every_kind_of_call(n)


def _schema_changes(url: URL) -> list[str]:
    """Changes another process (a newer release's migration) may make while we run."""
    changes = [
        "ALTER TABLE agents_kv_entries ADD COLUMN extra_a INTEGER",
        "ALTER TABLE agents_blocks ADD COLUMN extra_b INTEGER",
        "ALTER TABLE agents_tool_calls ADD COLUMN extra_c INTEGER",
        "ALTER TABLE agents_list_items ADD COLUMN extra_d INTEGER",
    ]
    if url.get_backend_name() == "postgresql":
        # The result type of statements already prepared changes (text -> varchar):
        # asyncpg's cached statement is invalid (InvalidCachedStatementError).
        changes.append("ALTER TABLE agents_blocks ALTER COLUMN filename TYPE VARCHAR(2000)")
        changes.append("ALTER TABLE agents_tool_calls ALTER COLUMN tool_output TYPE VARCHAR")
    return changes


# --- 11. one row type -----------------------------------------------------------------------


async def test_every_executor_returns_the_same_row_type(provider: Provider) -> None:
    """Native and SQLAlchemy paths alike: `NativeRow`s, never renamed, with `_mapping`."""
    await provider.set("ns", "k", {"v": 1})
    size = func.length(_entries.c.key).label("count(*)")  # a key that is no identifier
    stmt = select(_entries.c.key, _entries.c.value, size).where(_entries.c.namespace == "ns")
    [row] = await provider.db.fetch(stmt)
    assert isinstance(row, NativeRow)
    assert row.key == "k" and row._mapping["count(*)"] == 1
    assert row._fields == ("key", "value", "count(*)")
    assert row == ("k", {"v": 1}, 1)


# --- 12. Python errors inside a transaction -------------------------------------------------


class _Refused(RuntimeError):
    """An error of the caller's own, raised while the transaction is open."""


def _refuse(previous_id: int | None) -> dict[str, Any]:
    raise _Refused(f"no values after {previous_id}")


async def test_a_python_error_in_a_later_step_passes_through_and_writes_nothing(
    provider: Provider,
) -> None:
    """Not a lost connection: the caller's own exception, as it was, on every path; the
    first step is rolled back and the lane (or connection) serves the next call."""
    first = insert(_entries).values(namespace="ns", key="a", value={"v": 1})
    second = insert(_entries).values(namespace="ns", key="b", value={"v": 2})
    for _ in range(6):  # more than the lanes: a lane kept broken would show
        with pytest.raises(_Refused, match="no values after"):
            await provider.db.steps([Step(first, {}), Step(second, _refuse)])
    assert await provider.get("ns", "a") is None
    await provider.set("ns", "a", {"v": 3})
    assert await provider.get("ns", "a") == {"v": 3}
