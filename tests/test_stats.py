"""`collect_stats` and `slack-agents-sa stats`: exact counts per agent and namespace, on every
backend, through the library and through the console script."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from sqlalchemy import insert

from slack_agents_sa import Block, Provider, cli
from slack_agents_sa.cli.stats import format_stats
from slack_agents_sa.stats import (
    BLOCK_TYPES,
    AgentStats,
    NamespaceStats,
    Stats,
    collect_stats,
)
from slack_agents_sa.types import dump_json, utcnow
from tests.databases import POSTGRES, scratch_database
from tests.test_cli import run_cli

#: What `write_known_set` leaves in the key-value store: (namespace, key, value) by kind.
ENTRIES: list[tuple[str, str, dict[str, Any]]] = [
    ("tasks", "t1", {"state": "working"}),
    ("tasks", "t2", {"note": "héllo 👋"}),
]
ITEMS: list[tuple[str, str, dict[str, Any]]] = [
    ("tasks", "log", {"n": 1}),
    ("audit", "a", {"who": "ann"}),
    ("audit", "a", {"who": "bob"}),
    ("audit", "b", {"who": "émile"}),
]


def stored_bytes(*values: dict[str, Any]) -> int:
    """What the stats count for JSON values: the UTF-8 length of the text we store."""
    return sum(len(dump_json(value).encode("utf-8")) for value in values)


async def stats_of(provider: Provider) -> Stats:
    """Through the provider's own connection (in-memory SQLite has no other), and on a
    database another connection can see, through the engine too: both must agree."""
    async with provider.db.statement() as conn:
        through_connection = await collect_stats(conn)
    if provider.db.engine.url.database not in (None, "", ":memory:"):
        through_engine = await collect_stats(provider.db.engine)
        assert replace(through_engine, database_bytes=None) == replace(
            through_connection, database_bytes=None
        )
    return through_connection


async def write_known_set(provider: Provider) -> None:
    """Agent `helper`: 3 conversations (one empty), 3 messages, 11 blocks of every type,
    2 tool calls, 2,607 file bytes. Agent `other` in the same channel and thread ids: 1
    conversation, 1 message, 2 blocks, 1 tool call. Key-value: `ENTRIES` and `ITEMS`."""
    first = await provider.get_or_create_conversation("helper", "C1", "t1", "general")
    second = await provider.get_or_create_conversation("helper", "C1", "t2", "general")
    await provider.get_or_create_conversation("helper", "C2", "t3", None)

    message = await provider.create_message(first, "U1", "Ann", "ann")
    await provider.append_text_block(message, "hi", is_user=True)
    await provider.append_text_block(message, "héllo 👋")
    image = {"type": "image", "source": {"type": "base64", "data": "iVBORw0K"}}
    await provider.append_file_block(
        message, image, is_user=True, filename="a.png", mimetype="image/png", size_bytes=100
    )
    tool_block = 0
    for call in ("helper-1", "helper-2"):
        tool_block = await provider.append_tool_block(
            message,
            tool_call_id=call,
            tool_name="lookup",
            tool_input={"q": call},
            tool_output="found",
            is_error=False,
        )
    await provider.append_usage_block(
        message,
        model="m",
        version="1",
        input_tokens=10,
        output_tokens=5,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
        peak_single_call_input_tokens=10,
        estimated_cost_usd=0.01,
    )
    message = await provider.create_message(first, "U1", "Ann", "ann")
    await provider.append_text_block(message, "make a chart", is_user=True)
    await provider.append_file_block(
        message,
        {"data": "Y2hhcnQ="},
        is_user=False,
        filename="chart.png",
        mimetype="image/png",
        size_bytes=2500,
        tool_block_id=tool_block,
    )
    await provider.append_text_block(message, "here it is")

    message = await provider.create_message(second, "U2", "Bob", "bob")
    await provider.append_file_block(
        message,
        {"data": "bm90ZXM=", "filename": "n.txt", "mimeType": "text/plain"},
        is_user=True,
        filename="n.txt",
        mimetype="text/plain",
        size_bytes=7,
    )
    await provider.append_text_block(message, "notes", is_user=True)

    theirs = await provider.get_or_create_conversation("other", "C1", "t1", "general")
    message = await provider.create_message(theirs, "U1", "Ann", "ann")
    await provider.append_text_block(message, "hello")
    await provider.append_tool_block(
        message,
        tool_call_id="other-1",
        tool_name="lookup",
        tool_input={},
        tool_output="",
        is_error=True,
    )

    await provider.set("tasks", "t1", {"state": "queued", "overwritten": True})
    for namespace, key, value in ENTRIES:
        await provider.set(namespace, key, value)
    for namespace, key, value in ITEMS:
        await provider.append(namespace, key, value)


def blocks(**counts: int) -> dict[str, int]:
    return {name: counts.get(name, 0) for name in BLOCK_TYPES}


EXPECTED_HELPER = {
    "conversations": 3,
    "messages": 3,
    "blocks": blocks(user_text=3, text=2, user_file=2, file=1, tool_use=2, usage=1),
    "tool_calls": 2,
    "file_bytes": 2607,
}
EXPECTED_OTHER = {
    "conversations": 1,
    "messages": 1,
    "blocks": blocks(text=1, tool_use=1),
    "tool_calls": 1,
    "file_bytes": 0,
}
EXPECTED_NAMESPACES = (
    NamespaceStats("audit", entries=0, items=3, bytes=stored_bytes(*(v for *_, v in ITEMS[1:]))),
    NamespaceStats(
        "tasks", entries=2, items=1, bytes=stored_bytes(*(v for *_, v in ENTRIES), ITEMS[0][2])
    ),
)


def counts(agent: AgentStats) -> dict[str, Any]:
    figures = asdict(agent)
    return {name: figures[name] for name in EXPECTED_HELPER}


async def test_stats_of_an_empty_database_are_zero(provider: Provider) -> None:
    stats = await stats_of(provider)

    assert (stats.agents, stats.namespaces) == ((), ())
    assert stats.dialect == provider.db.dialect_name
    assert isinstance(stats.database_bytes, int) and stats.database_bytes > 0
    assert json.loads(json.dumps(stats.as_dict())) == {
        "dialect": stats.dialect,
        "database_bytes": stats.database_bytes,
        "agents": [],
        "namespaces": [],
    }
    table = format_stats(stats)
    assert "agents: none" in table and "key-value namespaces: none" in table


async def test_counts_match_what_was_written(provider: Provider) -> None:
    before = utcnow()
    await write_known_set(provider)
    after = utcnow()

    stats = await stats_of(provider)

    assert [agent.agent for agent in stats.agents] == ["helper", "other"]
    helper = stats.agents[0]
    assert counts(helper) == EXPECTED_HELPER
    assert helper.oldest_activity is not None and helper.newest_activity is not None
    assert before <= helper.oldest_activity < helper.newest_activity <= after
    assert stats.namespaces == EXPECTED_NAMESPACES


async def test_two_agents_are_kept_apart(provider: Provider) -> None:
    await write_known_set(provider)
    await provider.get_or_create_conversation("idle", "C1", "t1", "general")

    helper, idle, other = (await stats_of(provider)).agents

    assert counts(helper) == EXPECTED_HELPER
    assert counts(other) == EXPECTED_OTHER
    assert other.oldest_activity == other.newest_activity  # its one message
    assert counts(idle) == {
        "conversations": 1,
        "messages": 0,
        "blocks": blocks(),
        "tool_calls": 0,
        "file_bytes": 0,
    }
    assert (idle.oldest_activity, idle.newest_activity) == (None, None)


async def test_block_types_the_host_does_not_write_are_counted_after_the_known_ones(
    provider: Provider,
) -> None:
    conversation = await provider.get_or_create_conversation("legacy", "C1", "t1", None)
    message = await provider.create_message(conversation, "U1", "Ann", "ann")
    await provider.append_text_block(message, "hi")
    async with provider.db.transaction() as conn:
        await conn.execute(
            insert(Block),
            [
                {"message_id": int(message), "block_type": kind, "in_history": False}
                for kind in ("thinking", "thinking", "audio")
            ],
        )

    (agent,) = (await stats_of(provider)).agents

    assert list(agent.blocks) == [*BLOCK_TYPES, "audio", "thinking"]
    assert agent.blocks == {**blocks(text=1), "audio": 1, "thinking": 2}
    header = format_stats(await stats_of(provider)).split("blocks by type:\n")[1].splitlines()[0]
    assert header.split() == ["agent", *BLOCK_TYPES, "audio", "thinking"]


async def _in_process(url: str) -> Stats:
    storage = Provider(url=url)
    await storage.initialize()
    try:
        return await collect_stats(storage.db.engine)
    finally:
        await storage.close()


async def _filled(url: str) -> None:
    storage = Provider(url=url)
    await storage.initialize()
    try:
        await write_known_set(storage)
    finally:
        await storage.close()


def _without_size(printed: str) -> list[str]:
    lines = printed.splitlines()
    assert lines[0].startswith("database size: ") and lines[0] != "database size: unknown"
    return lines[1:]


async def test_cli_prints_tables_and_json(empty_url: str) -> None:
    unmigrated = run_cli("--url", empty_url, "stats")
    assert unmigrated.returncode == cli.EXIT_NOT_AT_HEAD, unmigrated.stderr
    assert "run `slack-agents-sa upgrade`" in unmigrated.stderr and unmigrated.stdout == ""
    assert run_cli("--url", empty_url, "upgrade").returncode == cli.EXIT_OK

    empty = run_cli("--url", empty_url, "stats")
    assert empty.returncode == cli.EXIT_OK, empty.stderr
    assert _without_size(empty.stdout) == [
        "",
        "agents: none",
        "",
        "blocks by type: none",
        "",
        "key-value namespaces: none",
    ]
    empty_json = run_cli("--url", empty_url, "stats", "--json")
    assert empty_json.returncode == cli.EXIT_OK, empty_json.stderr
    assert json.loads(empty_json.stdout)["agents"] == []

    await _filled(empty_url)
    expected = await _in_process(empty_url)
    table = run_cli("--url", empty_url, "stats")
    as_json = run_cli("--url", empty_url, "stats", "--json")

    assert (table.returncode, as_json.returncode) == (cli.EXIT_OK, cli.EXIT_OK), table.stderr
    assert _without_size(table.stdout) == _without_size(format_stats(expected))
    helper_row = next(line for line in table.stdout.splitlines() if line.startswith("helper"))
    assert helper_row.split()[:7] == ["helper", "3", "3", "11", "2", "2.5", "KiB"]
    printed = json.loads(as_json.stdout)
    assert list(printed) == ["dialect", "database_bytes", "agents", "namespaces"]
    assert isinstance(printed.pop("database_bytes"), int)
    expected_json = expected.as_dict()
    del expected_json["database_bytes"]
    assert printed == expected_json
    helper = printed["agents"][0]
    assert {name: helper[name] for name in EXPECTED_HELPER} == EXPECTED_HELPER
    assert datetime.fromisoformat(helper["oldest_activity"]).utcoffset() is not None


async def test_cli_reads_the_schema_it_is_given_on_postgresql() -> None:
    async with scratch_database(POSTGRES) as url:
        tenant = Provider(url=url, schema="tenant_a")
        await tenant.initialize()
        try:
            await tenant.set("ns", "k", {"tenant": "a"})
            await tenant.get_or_create_conversation("bot", "C1", "1.1")
        finally:
            await tenant.close()

        in_a = run_cli("--url", url, "--schema", "tenant_a", "stats", "--json")
        in_b = run_cli("--url", url, "--schema", "tenant_b", "stats", "--json")

    assert in_a.returncode == cli.EXIT_OK, in_a.stderr
    printed = json.loads(in_a.stdout)
    assert [agent["agent"] for agent in printed["agents"]] == ["bot"]
    assert printed["namespaces"] == [
        {"namespace": "ns", "entries": 1, "items": 0, "bytes": stored_bytes({"tenant": "a"})}
    ]
    assert in_b.returncode == cli.EXIT_NOT_AT_HEAD
    assert "run `slack-agents-sa upgrade`" in in_b.stderr
