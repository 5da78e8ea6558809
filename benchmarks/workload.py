"""The realistic agent workload the benchmarks drive, as operation groups over any provider.

Every group takes a storage provider (ours or the host's built-in ones) and a round number,
so each round writes threads of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from slack_agents.storage.base import BaseStorageProvider

AGENT = "bench-bot"
THREADS = 20
CONCURRENT_THREADS = 8
TURNS = 10
HANDLES = ("ann", "bo", "cy")
QUERY_NAMESPACE = "bench_tasks"
#: Entries in the namespace `query` scans: half `set`, half `append`ed.
QUERY_NAMESPACE_SIZE = 2_000

Group = Callable[[BaseStorageProvider, int], Awaitable[None]]


def _thread_id(round_number: int, thread: int) -> str:
    return f"17000{round_number:05d}.{thread:06d}"


def tool_call_id(round_number: int, thread: int, turn: int) -> str:
    return f"toolu_{round_number}_{thread}_{turn}"


async def _one_thread(storage: BaseStorageProvider, round_number: int, thread: int) -> None:
    thread_id = _thread_id(round_number, thread)
    await storage.get_or_create_conversation(AGENT, "C042", thread_id, "ops")
    for turn in range(TURNS):
        # Every Slack event looks its thread up again, with the channel name it carries.
        conversation_id = await storage.get_or_create_conversation(AGENT, "C042", thread_id, "ops")
        message_id = await storage.create_message(
            conversation_id, "U1", "Ann Lee", HANDLES[thread % len(HANDLES)]
        )
        await storage.append_text_block(message_id, f"Question {turn}: how is prod?", is_user=True)
        await storage.get_message_blocks(conversation_id)
        await storage.append_text_block(message_id, "Let me check the dashboards.")
        await storage.append_tool_block(
            message_id,
            tool_call_id=tool_call_id(round_number, thread, turn),
            tool_name="query_metrics",
            tool_input={"service": "api", "window": "1h", "metrics": ["p99", "errors"]},
            tool_output='{"p99_ms": 182, "errors": 3, "status": "ok"}',
            is_error=False,
        )
        await storage.append_text_block(message_id, "All green: p99 182 ms, 3 errors.")
        await storage.append_usage_block(
            message_id,
            model="claude-sonnet",
            version="2025-01",
            input_tokens=1200 + turn,
            output_tokens=180,
            cache_creation_input_tokens=0,
            cache_read_input_tokens=900,
            peak_single_call_input_tokens=1200,
            estimated_cost_usd=0.0042,
        )


async def agent_turns(storage: BaseStorageProvider, round_number: int) -> None:
    """THREADS threads, CONCURRENT_THREADS at a time, TURNS turns each."""
    gate = asyncio.Semaphore(CONCURRENT_THREADS)

    async def gated(thread: int) -> None:
        async with gate:
            await _one_thread(storage, round_number, thread)

    await asyncio.gather(*(gated(thread) for thread in range(THREADS)))


async def tool_call_lookups(storage: BaseStorageProvider, round_number: int) -> None:
    for thread in range(THREADS):
        for turn in range(0, TURNS, 2):
            assert await storage.get_tool_call(tool_call_id(round_number, thread, turn))
    assert await storage.get_tool_call("toolu_missing") is None


async def export(storage: BaseStorageProvider, round_number: int) -> None:
    conversations = await storage.get_conversations_for_export(AGENT, handle="ann")
    # This round's threads of ann: the reads an export of them makes.
    prefix = _thread_id(round_number, 0).split(".")[0]
    mine = [row for row in conversations if str(row["thread_id"]).startswith(prefix)]
    assert mine, "export found nothing"
    for row in mine:
        await storage.get_messages_with_blocks(row["id"])


async def key_value(storage: BaseStorageProvider, round_number: int) -> None:
    namespace = f"bench_kv_{round_number}"
    for index in range(100):
        key = f"user-{index}"
        await storage.set(namespace, key, {"prefs": {"tz": "Europe/Paris"}, "n": index})
        assert await storage.get(namespace, key)
        await storage.append(namespace, f"list-{index % 10}", {"event": "seen", "n": index})
        if index % 10 == 9:
            await storage.get_list(namespace, f"list-{index % 10}")
        if index % 2:
            await storage.delete(namespace, key)


async def fill_query_namespace(storage: BaseStorageProvider) -> None:
    """QUERY_NAMESPACE_SIZE entries, 1 in 50 of them 'working' (what A2A resume looks for)."""
    for index in range(QUERY_NAMESPACE_SIZE // 2):
        state = "working" if index % 50 == 0 else "completed"
        await storage.set(QUERY_NAMESPACE, f"task-{index}", {"task_id": index, "state": state})
        await storage.append(QUERY_NAMESPACE, "events", {"task_id": index, "state": state})


async def query(storage: BaseStorageProvider, round_number: int) -> None:
    for _ in range(10):
        found = await storage.query(QUERY_NAMESPACE, {"state": "working"})
        assert found, "query found nothing"
    await storage.query(QUERY_NAMESPACE, {})


GROUPS: dict[str, Group] = {
    "agent turns": agent_turns,
    "get_tool_call": tool_call_lookups,
    "export": export,
    "key-value": key_value,
    "query": query,
}


def describe() -> str:
    return (
        f"{THREADS} threads, {CONCURRENT_THREADS} at a time, {TURNS} turns each "
        f"(8 calls a turn); {THREADS * TURNS // 2 + 1} get_tool_call; export of one handle's "
        f"threads; 100 x set/get/append (+ get_list, delete); 11 queries over "
        f"{QUERY_NAMESPACE_SIZE:,} entries"
    )


__all__ = ["GROUPS", "Group", "describe", "fill_query_namespace"]
