"""How long `collect_stats` (`slack-agents-sa stats`) takes on a large database.

    .venv/bin/python -m benchmarks.stats_scale [--backend sqlite|postgresql|all] [--blocks N]

Fills N blocks (default 1M) of every type, spread over 10 agents: N/50 conversations, N/5
messages, a tool call per `tool_use` block (N/5), and N/10 key-value entries and N/10 list
items over 20 namespaces. Rows are written in bulk with plain SQL (`benchmarks.bulk_sql`'s
helper: this script's only dialect-specific code). Prints the fill time and the time of
`collect_stats` (first run, then the median of the next runs).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from sqlalchemy import text

from benchmarks.bulk_sql import bulk_sql
from benchmarks.databases import LABELS, chosen, empty_database
from slack_agents_sa import Provider
from slack_agents_sa.stats import collect_stats
from tests.databases import opened_provider

_BLOCK_TYPE = (
    "CASE x % 10 WHEN 0 THEN 'user_text' WHEN 1 THEN 'user_text' WHEN 2 THEN 'text' "
    "WHEN 3 THEN 'text' WHEN 4 THEN 'user_file' WHEN 5 THEN 'file' WHEN 6 THEN 'tool_use' "
    "WHEN 7 THEN 'tool_use' ELSE 'usage' END"
)
# Stored JSON of a plausible size: 200 characters of text, 1 KB of file data (the host
# stores files base64-encoded), a usage record; tool calls keep theirs in agents_tool_calls.
_TEXT = "lorem ipsum " * 17
_DATA = "QUJD" * 256
# (Braces doubled: `bulk_sql` formats the statement.)
_CONTENT = (
    f'CASE WHEN x % 10 < 4 THEN \'{{{{"text": "{_TEXT}"}}}}\' '
    f'WHEN x % 10 < 6 THEN \'{{{{"data": "{_DATA}", "filename": "f.png"}}}}\' '
    'WHEN x % 10 >= 8 THEN \'{{"model": "m", "input_tokens": 1000}}\' END'
)


async def fill(storage: Provider, blocks: int) -> None:
    """`blocks` blocks: 5 to a message, 10 messages to a conversation, 10 agents."""
    await bulk_sql(
        storage,
        "INSERT INTO agents_conversations (id, agent_name, channel_id, thread_id, created_at) "
        "SELECT x, 'agent-' || (x % 10), 'C', 't' || x, {now} FROM {series}",
        first=0,
        last=blocks // 50 - 1,
    )
    await bulk_sql(
        storage,
        "INSERT INTO agents_messages (id, conversation_id, user_id, user_name, user_handle, "
        "created_at) SELECT x, x / 10, 'U', 'n', 'h', {now} FROM {series}",
        first=0,
        last=blocks // 5 - 1,
    )
    await bulk_sql(
        storage,
        "INSERT INTO agents_blocks (id, message_id, block_type, in_history, content, "
        f"size_bytes, created_at) SELECT x, x / 5, {_BLOCK_TYPE}, {{true}}, ({_CONTENT}){{json}}, "
        "CASE WHEN x % 10 IN (4, 5) THEN 1000 + x % 1000 END, {now} FROM {series}",
        first=0,
        last=blocks - 1,
    )
    await bulk_sql(
        storage,
        "INSERT INTO agents_tool_calls (block_id, tool_call_id, tool_name, tool_input, "
        "tool_output, is_error) SELECT x, 'call_' || x, 't', '{{\"q\": 1}}'{json}, 'out', "
        "{true} FROM {series} WHERE x % 10 IN (6, 7)",
        first=0,
        last=blocks - 1,
    )
    for table in ("agents_kv_entries", "agents_list_items"):
        await bulk_sql(
            storage,
            f"INSERT INTO {table} (namespace, key, value, created_at) SELECT 'ns-' || (x % 20), "
            "'k-' || x, ('{{\"n\": ' || x || ', \"state\": \"completed\"}}'){json}, {now} "
            "FROM {series}",
            first=0,
            last=blocks // 10 - 1,
        )


async def measure(storage: Provider, label: str, blocks: int, runs: int) -> list[str]:
    started = time.perf_counter()
    await fill(storage, blocks)
    if storage.db.dialect_name == "postgresql":
        async with storage.db.statement() as conn:
            await conn.execute(text("VACUUM ANALYZE"))
    filled = time.perf_counter() - started
    samples = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        stats = await collect_stats(storage.db.engine)
        samples.append(time.perf_counter() - started)
    counted = (
        sum(sum(agent.blocks.values()) for agent in stats.agents),
        sum(agent.tool_calls for agent in stats.agents),
        sum(namespace.entries + namespace.items for namespace in stats.namespaces),
    )
    assert counted == (blocks, blocks // 5, blocks // 5), counted
    size = stats.database_bytes or 0
    return [
        f"| {label} | {blocks:,} | {len(stats.agents)} | {size / 2**20:,.0f} MiB | "
        f"{filled:,.1f} s | {samples[0] * 1000:,.0f} ms | "
        f"{statistics.median(samples[1:]) * 1000:,.0f} ms |"
    ]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--blocks", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="timed runs after the first")
    args = parser.parse_args()
    output = [
        "| backend | blocks | agents | database | fill | collect_stats, first | "
        f"collect_stats, median of {args.runs} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    backends = chosen(args.backend)
    if backends is None:
        return 2
    for backend in backends:
        print(f"{LABELS[backend]} ...", file=sys.stderr)
        async with empty_database(backend) as url, opened_provider(url) as storage:
            output += await measure(storage, LABELS[backend], args.blocks, args.runs)
    print("\n".join(output))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
