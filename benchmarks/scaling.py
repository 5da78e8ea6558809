"""How the cost of the hot calls grows with the data around them.

    .venv/bin/python -m benchmarks.scaling [--backend sqlite|postgresql|all] [--max-blocks N]

- `get_message_blocks` against the conversation's own length (10 → 1,000 messages);
- `get_tool_call`, `get_or_create_conversation` (an existing thread) and `get_message_blocks`
  of one 100-message conversation against table size (10k → 1M blocks and tool calls,
  1k → 100k conversations);
- `query` against namespace size (1k → 100k entries, 1 in 100 matching).

Filler rows are written in bulk with plain SQL (this script's only dialect-specific code);
the calls measured go through the provider. Each figure is the median of many calls.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text

from benchmarks.bulk_sql import bulk_sql
from benchmarks.databases import LABELS, chosen, empty_database
from slack_agents_sa import Provider
from tests.databases import opened_provider

#: Offset of filler ids, far above anything the measured calls create.
FILL_BASE = 10_000_000


async def _median_us(call: Callable[[int], Awaitable[Any]], times: int) -> float:
    await call(0)
    samples = []
    for index in range(times):
        started = time.perf_counter()
        await call(index)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


async def fill_blocks(storage: Provider, first: int, last: int) -> None:
    """Blocks (tool calls) first..last, ten to a message, one message to a conversation."""
    lo, hi = first // 10, (last - 1) // 10
    await bulk_sql(
        storage,
        "INSERT INTO agents_conversations (id, agent_name, channel_id, thread_id, created_at) "
        f"SELECT {FILL_BASE} + x, 'filler', 'C', 't' || x, {{now}} FROM {{series}}",
        first=lo,
        last=hi,
    )
    await bulk_sql(
        storage,
        "INSERT INTO agents_messages (id, conversation_id, user_id, user_name, user_handle, "
        f"created_at) SELECT {FILL_BASE} + x, {FILL_BASE} + x, 'U', 'n', 'h', {{now}} "
        "FROM {series}",
        first=lo,
        last=hi,
    )
    await bulk_sql(
        storage,
        "INSERT INTO agents_blocks (id, message_id, block_type, in_history, created_at) "
        f"SELECT {FILL_BASE} + x, {FILL_BASE} + x / 10, 'tool_use', {{true}}, {{now}} "
        "FROM {series}",
        first=first,
        last=last - 1,
    )
    await bulk_sql(
        storage,
        "INSERT INTO agents_tool_calls (block_id, tool_call_id, tool_name, tool_input, "
        f"tool_output, is_error) SELECT {FILL_BASE} + x, 'fill_' || x, 't', "
        "'{{\"q\": 1}}'{json}, 'out', {true} FROM {series}",
        first=first,
        last=last - 1,
    )


async def fill_namespace(storage: Provider, namespace: str, first: int, last: int) -> None:
    await bulk_sql(
        storage,
        "INSERT INTO agents_kv_entries (namespace, key, value, created_at) "
        f"SELECT '{namespace}', 'task-' || x, ('{{{{\"task_id\": ' || x || ', \"state\": \"' "
        "|| CASE WHEN x % 100 = 0 THEN 'working' ELSE 'completed' END || '\"}}'){json}, "
        "{now} FROM {series}",
        first=first,
        last=last - 1,
    )


def _history_of(storage: Provider, conversation_id: int) -> Callable[[int], Awaitable[Any]]:
    async def call(_: int) -> Any:
        return await storage.get_message_blocks(conversation_id)

    return call


async def conversation_of(storage: Provider, thread: str, messages: int) -> int:
    conversation_id = await storage.get_or_create_conversation("bench", "C1", thread, "ops")
    for turn in range(messages):
        message_id = await storage.create_message(conversation_id, "U1", "Ann", "ann")
        await storage.append_text_block(message_id, f"question {turn}", is_user=True)
        await storage.append_text_block(message_id, "answer " * 20)
        await storage.append_tool_block(
            message_id,
            tool_call_id=f"{thread}-{turn}",
            tool_name="lookup",
            tool_input={"q": turn},
            tool_output="result",
            is_error=False,
        )
    return conversation_id


async def run(storage: Provider, label: str, max_blocks: int) -> list[str]:
    lines = [f"### {label}", ""]

    lines += ["| messages in the conversation | get_message_blocks (µs) |", "|---:|---:|"]
    for length in (10, 100, 1000):
        conversation_id = await conversation_of(storage, f"len-{length}", length)
        cost = await _median_us(_history_of(storage, conversation_id), 30)
        lines.append(f"| {length:,} | {cost:,.0f} |")

    probe = await conversation_of(storage, "probe", 100)
    lines += [
        "",
        "| blocks (tool calls) | conversations | get_tool_call (µs) | "
        "get_or_create_conversation, existing (µs) | get_message_blocks, 100 messages (µs) |",
        "|---:|---:|---:|---:|---:|",
    ]
    filled = 0
    size = 10_000
    while size <= max_blocks:
        await fill_blocks(storage, filled, size)
        filled = size
        if storage.db.dialect_name == "postgresql":
            async with storage.db.statement() as conn:
                await conn.execute(text("ANALYZE"))
        span = size

        async def lookup(index: int, span: int = span) -> None:
            assert await storage.get_tool_call(f"fill_{(index * 7919) % span}")

        async def existing(index: int, span: int = span) -> None:
            await storage.get_or_create_conversation(
                "filler", "C", f"t{(index * 7919) % (span // 10)}", None
            )

        tool_call = await _median_us(lookup, 300)
        get_or_create = await _median_us(existing, 300)
        history = await _median_us(lambda _: storage.get_message_blocks(probe), 30)
        lines.append(
            f"| {size:,} | {size // 10:,} | {tool_call:,.0f} | {get_or_create:,.0f} | "
            f"{history:,.0f} |"
        )
        size *= 10

    lines += [
        "",
        "| entries in the namespace | matching | query (µs) |",
        "|---:|---:|---:|",
    ]
    filled = 0
    for size in (1_000, 10_000, 100_000):
        await fill_namespace(storage, "scale", filled, size)
        filled = size
        cost = await _median_us(lambda _: storage.query("scale", {"state": "working"}), 10)
        lines.append(f"| {size:,} | {size // 100:,} | {cost:,.0f} |")
    return lines


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--max-blocks", type=int, default=1_000_000)
    args = parser.parse_args()
    backends = chosen(args.backend)
    if backends is None:
        return 2
    sections: list[list[str]] = []
    for backend in backends:
        print(f"{LABELS[backend]} ...", file=sys.stderr)
        async with empty_database(backend) as url, opened_provider(url) as storage:
            sections.append(await run(storage, LABELS[backend], args.max_blocks))
    print("\n\n".join("\n".join(section) for section in sections))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
