"""`prune` on 1M blocks, removing 10 %, while an agent workload keeps running.

    .venv/bin/python -m benchmarks.prune_scale [--backend sqlite|postgresql|all]
        [--conversations N] [--batch-size N] [--agents N]

Fills `--conversations` conversations (default 10,000) of 10 messages of 10 blocks each
(1M blocks; one block in five is a tool call, 200k tool calls) with plain SQL in bulk (this
script's only dialect-specific code); one conversation in ten was last active 120 days ago.
Then, with a second provider on the same database (as a cron job would be), it measures
the same agent workload twice: for a few seconds alone, then while
`prune(older_than=90 days)` runs. It prints fill time, prune time, rows deleted, the
longest batch, and the workload's calls completed, median and worst latency.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from benchmarks.bulk_sql import bulk_sql
from benchmarks.databases import LABELS, chosen, empty_database
from slack_agents_sa import Provider
from slack_agents_sa.retention import DEFAULT_BATCH_SIZE, PruneResult

MESSAGES_PER_CONVERSATION = 10
BLOCKS_PER_MESSAGE = 10
#: One conversation in this many is old.
OLD_EVERY = 10
BASELINE_S = 5.0


async def fill(storage: Provider, conversations: int) -> None:
    """Conversation c (1..N) is old when c % OLD_EVERY == 0; ids are computed, not generated."""
    messages = conversations * MESSAGES_PER_CONVERSATION
    blocks = messages * BLOCKS_PER_MESSAGE
    per_conversation = MESSAGES_PER_CONVERSATION * BLOCKS_PER_MESSAGE
    await bulk_sql(
        storage,
        "INSERT INTO agents_conversations (id, agent_name, channel_id, thread_id, created_at) "
        "SELECT x, 'bench', 'C', 't' || x, "
        f"CASE WHEN x % {OLD_EVERY} = 0 THEN {{old}} ELSE {{now}} END FROM {{series}}",
        first=1,
        last=conversations,
    )
    await bulk_sql(
        storage,
        "INSERT INTO agents_messages (id, conversation_id, user_id, user_name, user_handle, "
        f"created_at) SELECT x, (x - 1) / {MESSAGES_PER_CONVERSATION} + 1, 'U', 'n', 'h', "
        f"CASE WHEN ((x - 1) / {MESSAGES_PER_CONVERSATION} + 1) % {OLD_EVERY} = 0 "
        "THEN {old} ELSE {now} END FROM {series}",
        first=1,
        last=messages,
    )
    await bulk_sql(
        storage,
        "INSERT INTO agents_blocks (id, message_id, block_type, in_history, content, created_at) "
        f"SELECT x, (x - 1) / {BLOCKS_PER_MESSAGE} + 1, "
        "CASE WHEN x % 5 = 0 THEN 'tool_use' ELSE 'text' END, {true}, "
        'CASE WHEN x % 5 = 0 THEN NULL ELSE \'{{"text": "hello there"}}\'{json} END, '
        f"CASE WHEN ((x - 1) / {per_conversation} + 1) % {OLD_EVERY} = 0 "
        "THEN {old} ELSE {now} END FROM {series}",
        first=1,
        last=blocks,
    )
    await bulk_sql(
        storage,
        "INSERT INTO agents_tool_calls (block_id, tool_call_id, tool_name, tool_input, "
        "tool_output, is_error) SELECT 5 * x, 'fill_' || x, 't', '{{\"q\": 1}}'{json}, "
        "'out', {true} FROM {series}",
        first=1,
        last=blocks // 5,
    )
    if storage.db.dialect_name == "postgresql":
        async with storage.db.transaction() as conn:
            for table in ("agents_conversations", "agents_messages", "agents_blocks"):
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    async with storage.db.statement() as conn:
        await conn.execute(text("ANALYZE"))


async def _timed[T](latencies: list[float], call: Awaitable[T]) -> T:
    started = time.perf_counter()
    result = await call
    latencies.append(time.perf_counter() - started)
    return result


async def agent(storage: Provider, name: int, stop: asyncio.Event, latencies: list[float]) -> None:
    """Turns on young conversations (existing threads): what a live agent does."""
    turn = 0
    while not stop.is_set():
        thread = f"t{(name * 7919 + turn * 104729) % 5000 * 2 + 1}"  # odd: never old
        conversation = await _timed(
            latencies, storage.get_or_create_conversation("bench", "C", thread)
        )
        message = await _timed(latencies, storage.create_message(conversation, "U", "n", "h"))
        await _timed(latencies, storage.append_text_block(message, "question", is_user=True))
        await _timed(latencies, storage.get_message_blocks(conversation))
        await _timed(
            latencies,
            storage.append_tool_block(
                message,
                tool_call_id=f"live-{name}-{turn}",
                tool_name="t",
                tool_input={"q": turn},
                tool_output="out",
                is_error=False,
            ),
        )
        await _timed(latencies, storage.append_text_block(message, "answer"))
        turn += 1


def _summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{len(ordered):,} | {statistics.median(ordered) * 1e3:.1f} | {p99 * 1e3:.1f} | "
        f"{ordered[-1] * 1e3:.1f}"
    )


async def _workload(url: str, agents: int, during: asyncio.Future[Any] | None) -> list[float]:
    storage = Provider(url=url)
    await storage.initialize()
    latencies: list[float] = []
    stop = asyncio.Event()
    try:
        tasks = [asyncio.create_task(agent(storage, n, stop, latencies)) for n in range(agents)]
        if during is None:
            await asyncio.sleep(BASELINE_S)
        else:
            await asyncio.wait({during})
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        await storage.close()
    return latencies


async def run(url: str, label: str, conversations: int, batch_size: int, agents: int) -> str:
    storage = Provider(url=url)
    await storage.initialize()
    try:
        started = time.perf_counter()
        await fill(storage, conversations)
        fill_s = time.perf_counter() - started
        print(f"{label}: filled in {fill_s:.1f} s", file=sys.stderr)
        baseline = await _workload(url, agents, None)

        async def prune() -> tuple[PruneResult, float]:
            await asyncio.sleep(0.5)  # the workload is under way first
            began = time.perf_counter()
            result = await storage.prune(timedelta(days=90), batch_size=batch_size)
            return result, time.perf_counter() - began

        pruning = asyncio.ensure_future(prune())
        during = await _workload(url, agents, pruning)
        result, prune_s = pruning.result()
    finally:
        await storage.close()
    counts = result.counts
    deleted = " / ".join(f"{counts[t]:,}" for t in counts)
    return (
        f"| {label} | {conversations * 100:,} | {fill_s:.1f} | {prune_s:.1f} | {deleted} | "
        f"{result.batches} x {batch_size} | {result.longest_batch_ms:.0f} | "
        f"{_summary(baseline)} | {_summary(during)} |"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--agents", type=int, default=4, help="concurrent agent tasks")
    args = parser.parse_args()
    rows = [
        "| database | blocks | fill (s) | prune (s) | deleted: conversations / messages / "
        "blocks / tool calls | batches | longest batch (ms) | workload alone: calls | "
        "p50 (ms) | p99 (ms) | max (ms) | during prune: calls | p50 (ms) | p99 (ms) | "
        "max (ms) |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    shape = (args.conversations, args.batch_size, args.agents)
    backends = chosen(args.backend)
    if backends is None:
        return 2
    for backend in backends:
        async with empty_database(backend) as url:
            rows.append(await run(url, LABELS[backend], *shape))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
