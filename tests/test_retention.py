"""Retention: `prune` and `prune_namespace` delete exactly what is older than the cut-off,
whole conversations at a time, alongside a live agent, and carry on after an interruption.

Rows are made old by writing past timestamps, never by sleeping.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import column, func, insert, select, table, update
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.cli import EXIT_OK, EXIT_USAGE
from slack_agents_sa.database import make_engine
from slack_agents_sa.errors import MissingRowError
from slack_agents_sa.migrate import upgrade
from slack_agents_sa.models import (
    Block,
    Conversation,
    KeyValueEntry,
    ListItem,
    Message,
    ToolCall,
    table_of,
)
from slack_agents_sa.retention import PruneResult
from slack_agents_sa.settings import normalize_url
from slack_agents_sa.types import utcnow
from tests.conversation_rows import (
    BLOCKS_PER_TURN,
    NO_ORPHANS,
    conversation,
    days_ago,
    orphans,
    rows_per_conversation,
    turn,
)
from tests.test_cli import run_cli

_conversations = table_of(Conversation)
_messages = table_of(Message)
_blocks = table_of(Block)
_tool_calls = table_of(ToolCall)
_entries = table_of(KeyValueEntry)
_items = table_of(ListItem)


def _counts(conversations: int, turns: int) -> dict[str, int]:
    return {
        "conversations": conversations,
        "messages": turns,
        "blocks": turns * BLOCKS_PER_TURN,
        "tool_calls": turns,
    }


async def test_prune_deletes_only_old_conversations_with_all_their_rows(
    provider: Provider,
) -> None:
    old_two_turns = await conversation(provider, "old-1", 2, age_days=120)
    old_other_agent = await conversation(provider, "old-2", 1, agent="other", age_days=95)
    old_empty = await conversation(provider, "old-3", 0, age_days=91)
    young = await conversation(provider, "young", 2)
    young_empty = await conversation(provider, "young-empty", 0)
    # Started long ago, but a message since the cut-off: its last activity is recent.
    revived = await conversation(provider, "revived", 2, age_days=200)
    await turn(provider, revived, "today")
    before = await rows_per_conversation(provider)

    would = await provider.prune(timedelta(days=90), dry_run=True)
    assert would.dry_run
    assert would.counts == _counts(3, 3)
    assert await rows_per_conversation(provider) == before  # nothing deleted

    pruned = await provider.prune(timedelta(days=90), batch_size=2)
    assert isinstance(pruned, PruneResult) and not pruned.dry_run
    assert pruned.counts == would.counts
    assert pruned.batches == 2 and pruned.longest_batch_ms > 0
    after = await rows_per_conversation(provider)
    assert after == {key: before[key] for key in (young, young_empty, revived)}
    assert not {old_two_turns, old_other_agent, old_empty} & after.keys()
    assert before[revived] == (3, 3 * BLOCKS_PER_TURN, 3)
    assert await orphans(provider) == NO_ORPHANS
    # What is left still works as the host reads it.
    assert len(await provider.get_message_blocks(revived)) == 3
    assert await provider.get_tool_call("call-helper-young-0") is not None
    assert await provider.get_tool_call("call-helper-old-1-0") is None

    again = await provider.prune(timedelta(days=90))
    assert again.counts == _counts(0, 0) and again.batches == 0


async def test_prune_by_agent_name_leaves_other_agents_conversations(provider: Provider) -> None:
    await conversation(provider, "a", 2, agent="helper", age_days=100)
    other = await conversation(provider, "b", 1, agent="other", age_days=100)
    young = await conversation(provider, "c", 1, agent="helper")

    would = await provider.prune(timedelta(days=30), agent_name="helper", dry_run=True)
    pruned = await provider.prune(timedelta(days=30), agent_name="helper")
    assert would.counts == pruned.counts == _counts(1, 2)
    assert set(await rows_per_conversation(provider)) == {other, young}


async def test_prune_takes_a_cutoff_datetime_and_refuses_bad_arguments(
    provider: Provider,
) -> None:
    await conversation(provider, "a", 1, age_days=10)
    assert (await provider.prune(days_ago(11))).counts == _counts(0, 0)
    assert (await provider.prune(days_ago(9))).counts == _counts(1, 1)
    with pytest.raises(ValueError, match="older_than must be a positive duration"):
        await provider.prune(timedelta(0))
    with pytest.raises(ValueError, match="timezone-aware"):
        await provider.prune(datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="batch_size"):
        await provider.prune(timedelta(days=1), batch_size=0)
    with pytest.raises(ValueError, match="namespace"):
        await provider.prune_namespace("n" * 256, timedelta(days=1))


async def test_prune_alongside_a_live_agent_leaves_its_conversation_whole(
    provider: Provider,
) -> None:
    old = [await conversation(provider, f"old-{n}", 1, age_days=100) for n in range(12)]
    live = await conversation(provider, "live", 1)
    turns = 15

    async def agent() -> None:
        for number in range(turns):
            conversation_id = await provider.get_or_create_conversation(
                "helper", "C1", "live", "ops"
            )
            await turn(provider, conversation_id, f"live-{number}")
            await provider.get_message_blocks(conversation_id)

    pruned, _ = await asyncio.gather(provider.prune(timedelta(days=90), batch_size=1), agent())
    assert pruned.counts == _counts(12, 12)
    after = await rows_per_conversation(provider)
    assert set(after) == {live}
    assert after[live] == (1 + turns, (1 + turns) * BLOCKS_PER_TURN, 1 + turns)
    assert not set(old) & after.keys()
    assert await orphans(provider) == NO_ORPHANS


async def test_a_late_write_to_a_pruned_conversation_is_our_clear_error(
    provider: Provider,
) -> None:
    """An agent that still holds the id of a conversation pruned meanwhile (by another
    process, or on another cluster node) gets `MissingRowError`, and writes nothing."""
    conversation_id = await conversation(provider, "late", 1, age_days=100)
    message_id = (await provider.get_message_blocks(conversation_id))[0][0]
    assert (await provider.prune(timedelta(days=90))).counts == _counts(1, 1)
    with pytest.raises(MissingRowError, match=f"conversation_id={conversation_id} .*pruned"):
        await provider.create_message(conversation_id, "U1", "Ann", "ann")
    with pytest.raises(MissingRowError, match=f"message_id.*={message_id} "):
        await provider.append_text_block(message_id, "too late")
    with pytest.raises(MissingRowError, match="message_id"):
        await provider.append_tool_block(
            message_id,
            tool_call_id="late",
            tool_name="n",
            tool_input={},
            tool_output="",
            is_error=False,
        )
    assert await rows_per_conversation(provider) == {}
    assert await orphans(provider) == NO_ORPHANS
    assert await provider.get_tool_call("late") is None


async def test_cancelled_prune_run_again_ends_as_an_uninterrupted_one(
    provider: Provider,
) -> None:
    old = [await conversation(provider, f"old-{n}", 1, age_days=100) for n in range(16)]
    young = [await conversation(provider, f"young-{n}", 1) for n in range(2)]
    before = await rows_per_conversation(provider)
    batches_done = 0
    three_batches = asyncio.Event()

    def on_batch(_: int) -> None:
        nonlocal batches_done
        batches_done += 1
        if batches_done == 3:
            three_batches.set()

    task = asyncio.create_task(provider.prune(timedelta(days=90), batch_size=2, on_batch=on_batch))
    await three_batches.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.db.settle()  # a batch cancelled mid-way still commits whole

    halfway = await rows_per_conversation(provider)
    left = [key for key in old if key in halfway]
    assert 0 < len(left) < len(old) - 4
    # Every conversation left has all its rows: none is partly deleted.
    assert halfway == {key: before[key] for key in halfway}
    assert await orphans(provider) == NO_ORPHANS

    resumed = await provider.prune(timedelta(days=90), batch_size=2)
    assert resumed.counts == _counts(len(left), len(left))
    assert await rows_per_conversation(provider) == {key: before[key] for key in young}
    assert await orphans(provider) == NO_ORPHANS


async def _kv_times(storage: Provider, namespace: str, key: str) -> tuple[datetime, datetime]:
    stmt = select(_entries.c.created_at, _entries.c.updated_at).where(
        _entries.c.namespace == namespace, _entries.c.key == key
    )
    created, updated = tuple((await storage.db.execute(stmt)).one())
    return created, updated


async def _age_entry(storage: Provider, namespace: str, key: str, days: float) -> None:
    when = days_ago(days)
    await storage.db.execute(
        update(_entries).where(_entries.c.namespace == namespace, _entries.c.key == key),
        {"created_at": when, "updated_at": when},
    )


async def test_prune_namespace_deletes_old_set_values_and_appended_items(
    provider: Provider,
) -> None:
    for key in ("stale", "renewed", "fresh"):
        await provider.set("tasks", key, {"key": key})
        await provider.set("other", key, {"key": key})
    await _age_entry(provider, "tasks", "stale", 40)
    await _age_entry(provider, "tasks", "renewed", 40)
    await _age_entry(provider, "other", "stale", 40)
    await provider.set("tasks", "renewed", {"key": "renewed", "state": "again"})
    created, updated = await _kv_times(provider, "tasks", "renewed")
    assert created < days_ago(39) and updated > days_ago(1)  # set keeps created_at

    old_items = [await provider.append("tasks", "log", {"n": n}) for n in range(3)]
    new_item = await provider.append("tasks", "log", {"n": 3})
    other_item = await provider.append("other", "log", {"n": 0})
    await provider.db.execute(
        update(_items).where(_items.c.id.in_([int(item) for item in [*old_items, other_item]])),
        {"created_at": days_ago(40)},
    )

    would = await provider.prune_namespace("tasks", timedelta(days=30), dry_run=True)
    assert would.counts == {"kv_entries": 1, "list_items": 3}
    assert await provider.get("tasks", "stale") == {"key": "stale"}

    pruned = await provider.prune_namespace("tasks", timedelta(days=30), batch_size=2)
    assert pruned.counts == would.counts
    assert pruned.batches == 3  # one DELETE of the entry, two of the items
    assert await provider.get("tasks", "stale") is None
    assert await provider.get("tasks", "renewed") == {"key": "renewed", "state": "again"}
    assert await provider.get("tasks", "fresh") == {"key": "fresh"}
    assert await provider.get_list("tasks", "log") == [{"n": 3, "id": new_item}]
    # Another namespace is never touched, however old.
    assert await provider.get("other", "stale") == {"key": "stale"}
    assert await provider.get_list("other", "log") == [{"n": 0, "id": other_item}]
    assert await provider.query("tasks", {}) == [
        {"n": 3, "id": new_item},
        {"key": "fresh"},
        {"key": "renewed", "state": "again"},
    ]


async def test_prune_namespace_goes_by_created_at_where_an_older_release_left_no_update_time(
    provider: Provider,
) -> None:
    # A release before migration 0005 inserts without updated_at (a rolling deploy).
    for key, days in (("legacy-old", 40), ("legacy-new", 1)):
        await provider.db.execute(
            insert(_entries),
            {"namespace": "ns", "key": key, "value": {"k": key}, "created_at": days_ago(days)},
        )
        await provider.db.execute(
            update(_entries).where(_entries.c.key == key), {"updated_at": None}
        )
    pruned = await provider.prune_namespace("ns", timedelta(days=30))
    assert pruned.counts == {"kv_entries": 1, "list_items": 0}
    assert await provider.get("ns", "legacy-old") is None
    assert await provider.get("ns", "legacy-new") == {"k": "legacy-new"}


async def test_migration_0005_gives_existing_values_the_migration_time_as_update_time(
    empty_url: str,
) -> None:
    # agents_kv_entries as 0004 had it: no updated_at.
    at_0004 = table(
        _entries.name,
        *(
            column(name, _entries.c[name].type)
            for name in ("namespace", "key", "value", "created_at")
        ),
    )
    when = days_ago(3)
    engine = make_engine(normalize_url(empty_url))
    try:
        await upgrade(engine, "0004")
        async with engine.begin() as conn:
            await conn.execute(
                insert(at_0004),
                {"namespace": "ns", "key": "k", "value": {"v": 1}, "created_at": when},
            )
        before = utcnow()
        await upgrade(engine)
        after = utcnow()
        async with engine.connect() as conn:
            row = (await conn.execute(select(_entries.c.created_at, _entries.c.updated_at))).one()
        # Its last write is unknown: it is kept a full retention period from the upgrade.
        assert row.created_at == when
        assert before <= row.updated_at <= after
    finally:
        await engine.dispose()


# --- the CLI --------------------------------------------------------------------------------


async def _filled(url: str) -> tuple[int, int]:
    """An old and a young conversation, and an old and a fresh `set` value."""
    storage = Provider(url=url)
    await storage.initialize()
    try:
        old = await conversation(storage, "old", 2, age_days=100)
        young = await conversation(storage, "young", 1)
        await storage.set("ns", "old", {"v": 1})
        await storage.set("ns", "fresh", {"v": 2})
        await _age_entry(storage, "ns", "old", 40)
        return old, young
    finally:
        await storage.close()


async def _remaining(url: str) -> tuple[dict[int, tuple[int, int, int]], dict[str, int]]:
    storage = Provider(url=url, migrate=False)
    await storage.initialize()
    try:
        return await rows_per_conversation(storage), await orphans(storage)
    finally:
        await storage.close()


async def test_cli_prune_dry_run_then_prune_then_namespace(empty_url: str) -> None:
    _, young = await _filled(empty_url)
    dry = await asyncio.to_thread(
        run_cli, "--url", empty_url, "prune", "--older-than", "90d", "--dry-run"
    )
    assert dry.returncode == EXIT_OK, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("would delete (dry run): older than ")
    assert lines[1:6] == [
        f"{'table':<16}{'rows':>12}",
        f"{'conversations':<16}{1:>12}",
        f"{'messages':<16}{2:>12}",
        f"{'blocks':<16}{10:>12}",
        f"{'tool_calls':<16}{2:>12}",
    ]
    assert lines[6] == "batches: 1, longest " + lines[6].split("longest ")[1]
    assert len((await _remaining(empty_url))[0]) == 2

    other_agent = await asyncio.to_thread(
        run_cli, "--url", empty_url, "prune", "--older-than", "90d", "--agent", "nobody"
    )
    assert other_agent.returncode == EXIT_OK, other_agent.stderr
    assert f"{'conversations':<16}{0:>12}" in other_agent.stdout

    done = await asyncio.to_thread(
        run_cli, "--url", empty_url, "prune", "--older-than", "2160h", "--batch-size", "1"
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stdout.startswith("deleted: older than ")
    assert f"{'blocks':<16}{10:>12}" in done.stdout
    conversations, orphaned = await _remaining(empty_url)
    assert set(conversations) == {young} and orphaned == NO_ORPHANS

    namespace = await asyncio.to_thread(
        run_cli, "--url", empty_url, "prune", "--namespace", "ns", "--older-than", "30d"
    )
    assert namespace.returncode == EXIT_OK, namespace.stderr
    assert f"{'kv_entries':<16}{1:>12}" in namespace.stdout
    assert f"{'list_items':<16}{0:>12}" in namespace.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--older-than", "90 days"], "is not a duration"),
        (["--older-than", "1w"], "is not a duration"),
        (["--older-than", "0d"], "more than 0"),
        (["--older-than", "40000d"], "at most 36500d"),
        (["--older-than", "90d", "--batch-size", "0"], "at least 1"),
        (["--older-than", "90d", "--agent", "a", "--namespace", "n"], "not allowed with"),
        ([], "--older-than"),
    ],
)
def test_cli_prune_refuses_bad_arguments_with_exit_2(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    done = run_cli("--url", f"sqlite:///{tmp_path / 'x.db'}", "prune", *arguments)
    assert done.returncode == EXIT_USAGE
    assert message in done.stderr
    assert not (tmp_path / "x.db").exists()  # refused before connecting


def test_cli_prune_refuses_a_bad_agent_name_with_exit_2(tmp_path: Path) -> None:
    done = run_cli(
        "--url",
        f"sqlite:///{tmp_path / 'x.db'}",
        "prune",
        "--older-than",
        "1d",
        "--agent",
        "a" * 256,
    )
    assert done.returncode == EXIT_USAGE
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --agent is 256 characters long; the limit is 255"
    )
    assert not (tmp_path / "x.db").exists()


async def _bulk_old_conversations(url: str, count: int) -> None:
    """`count` old conversations of one message with a tool block and a text block."""
    when = days_ago(100)
    base = 1_000_000
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.begin() as conn:
            ids = range(base, base + count)
            await conn.execute(
                insert(_conversations),
                [
                    {
                        "id": n,
                        "agent_name": "bulk",
                        "channel_id": "C",
                        "thread_id": str(n),
                        "created_at": when,
                    }
                    for n in ids
                ],
            )
            await conn.execute(
                insert(_messages),
                [
                    {
                        "id": n,
                        "conversation_id": n,
                        "user_id": "U",
                        "user_name": "n",
                        "user_handle": "h",
                        "created_at": when,
                    }
                    for n in ids
                ],
            )
            await conn.execute(
                insert(_blocks),
                [
                    {
                        "id": 2 * n + part,
                        "message_id": n,
                        "in_history": True,
                        "created_at": when,
                        "block_type": "tool_use" if part == 0 else "text",
                        "content": None if part == 0 else {"text": "t"},
                    }
                    for n in ids
                    for part in (0, 1)
                ],
            )
            await conn.execute(
                insert(_tool_calls),
                [
                    {
                        "block_id": 2 * n,
                        "tool_call_id": f"bulk-{n}",
                        "tool_name": "t",
                        "tool_input": {},
                        "tool_output": "o",
                        "is_error": False,
                    }
                    for n in ids
                ],
            )
    finally:
        await engine.dispose()


async def _conversation_count(url: str) -> int:
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(_conversations))).scalar_one()
            )
    finally:
        await engine.dispose()


async def test_killed_cli_prune_run_again_ends_as_an_uninterrupted_one(empty_url: str) -> None:
    _, young = await _filled(empty_url)
    bulk = 600
    await _bulk_old_conversations(empty_url, bulk)
    total = bulk + 2
    script = Path(sys.executable).with_name("slack-agents-sa")
    environment = {k: v for k, v in os.environ.items() if k != "SLACK_AGENTS_SA_URL"}
    process = await asyncio.create_subprocess_exec(
        str(script),
        *("--url", empty_url, "prune", "--older-than", "90d", "--batch-size", "1"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=environment,
    )
    try:
        deadline = time.monotonic() + 60
        while await _conversation_count(empty_url) > total - 20:
            assert process.returncode is None, "prune ended before it could be killed"
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        process.kill()
    finally:
        await asyncio.wait_for(process.wait(), timeout=30)
    assert process.returncode == -signal.SIGKILL

    halfway, orphaned = await _remaining(empty_url)
    assert orphaned == NO_ORPHANS
    assert 1 < len(halfway) < total - 19  # killed mid-way
    bulk_left = {key: rows for key, rows in halfway.items() if key >= 1_000_000}
    assert set(bulk_left.values()) <= {(1, 2, 1)}  # each one whole

    again = await asyncio.to_thread(
        run_cli, "--url", empty_url, "prune", "--older-than", "90d", "--no-progress"
    )
    assert again.returncode == EXIT_OK, again.stderr
    conversations, orphaned = await _remaining(empty_url)
    assert set(conversations) == {young} and orphaned == NO_ORPHANS
