"""Ours against the host's built-in provider of the same database, in one process.

    .venv/bin/python -m benchmarks.compare [--backend sqlite|postgresql|all] [--rounds N]

Each round runs every operation group of `benchmarks.workload` on each contender in turn,
the order alternating round by round; the first round warms up and is not counted. Prints
the median time of each group, and ours / built-in ratios. A third contender, ours with
every domain method left to the host base class's defaults, shows what the overrides buy.
PostgreSQL runs in scratch databases on SLACK_AGENTS_SA_TEST_POSTGRES_URL's server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from slack_agents.storage import postgres as builtin_postgres
from slack_agents.storage import sqlite as builtin_sqlite
from slack_agents.storage.base import BaseStorageProvider

from benchmarks.workload import GROUPS, describe, fill_query_namespace
from slack_agents_sa import Provider
from slack_agents_sa.settings import normalize_url
from tests.databases import POSTGRES_ENV, create_scratch_database, drop_scratch_database

#: Domain methods the host base class implements on the six primitives.
DOMAIN_METHODS = (
    "get_or_create_conversation",
    "has_conversation",
    "create_message",
    "get_message_blocks",
    "append_text_block",
    "append_file_block",
    "append_tool_block",
    "append_usage_block",
    "get_tool_call",
    "upsert_heartbeat",
    "get_heartbeat",
    "get_conversations_for_export",
    "get_messages_with_blocks",
)


class PrimitivesOnly(Provider):
    """Our provider with every domain method left to the host base class's defaults."""


for _name in DOMAIN_METHODS:
    setattr(PrimitivesOnly, _name, getattr(BaseStorageProvider, _name))

OURS, BUILTIN, PRIMITIVES = "ours", "built-in", "ours, primitives only"
Factory = Callable[[], AsyncIterator[BaseStorageProvider]]


@asynccontextmanager
async def _started(storage: BaseStorageProvider) -> AsyncIterator[BaseStorageProvider]:
    await storage.initialize()
    try:
        await fill_query_namespace(storage)
        yield storage
    finally:
        await storage.close()


@asynccontextmanager
async def sqlite_contenders(folder: Path) -> AsyncIterator[dict[str, BaseStorageProvider]]:
    async with AsyncExitStack() as stack:
        yield {
            OURS: await stack.enter_async_context(
                _started(Provider(url=f"sqlite:///{folder / 'ours.db'}"))
            ),
            BUILTIN: await stack.enter_async_context(
                _started(builtin_sqlite.Provider(str(folder / "builtin.db")))
            ),
            PRIMITIVES: await stack.enter_async_context(
                _started(PrimitivesOnly(url=f"sqlite:///{folder / 'primitives.db'}"))
            ),
        }


@asynccontextmanager
async def postgres_contenders(server_url: str) -> AsyncIterator[dict[str, BaseStorageProvider]]:
    server = normalize_url(server_url)
    databases = [await create_scratch_database(server) for _ in range(3)]
    try:
        ours, builtin, primitives = (url.render_as_string(hide_password=False) for url in databases)
        # asyncpg itself takes a plain postgresql:// URL.
        builtin = builtin.replace("postgresql+asyncpg://", "postgresql://", 1)
        async with AsyncExitStack() as stack:
            yield {
                OURS: await stack.enter_async_context(_started(Provider(url=ours))),
                BUILTIN: await stack.enter_async_context(
                    _started(builtin_postgres.Provider(builtin))
                ),
                PRIMITIVES: await stack.enter_async_context(
                    _started(PrimitivesOnly(url=primitives))
                ),
            }
    finally:
        for url in databases:
            await drop_scratch_database(server, url)


async def measure(
    contenders: dict[str, BaseStorageProvider], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per group per contender per counted round."""
    times: dict[str, dict[str, list[float]]] = {
        name: {group: [] for group in [*GROUPS, "total"]} for name in contenders
    }
    order = list(contenders)
    for round_number in range(rounds + 1):
        for name in order if round_number % 2 else reversed(order):
            storage = contenders[name]
            total = 0.0
            for group, run in GROUPS.items():
                started = time.perf_counter()
                await run(storage, round_number)
                elapsed = time.perf_counter() - started
                total += elapsed
                if round_number:  # round 0 warms up
                    times[name][group].append(elapsed)
            if round_number:
                times[name]["total"].append(total)
        print(f"  round {round_number}/{rounds} done", file=sys.stderr, flush=True)
    return times


def report(title: str, times: dict[str, dict[str, list[float]]]) -> str:
    def median_ms(name: str, group: str) -> float:
        return statistics.median(times[name][group]) * 1000

    lines = [
        f"### {title}",
        "",
        f"| group | {OURS} (ms) | {BUILTIN} (ms) | ours / built-in | {PRIMITIVES} (ms) "
        "| ours / primitives only |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for group in [*GROUPS, "total"]:
        ours, builtin, primitives = (median_ms(name, group) for name in (OURS, BUILTIN, PRIMITIVES))
        label = f"**{group}**" if group == "total" else group
        lines.append(
            f"| {label} | {ours:.1f} | {builtin:.1f} | {ours / builtin:.2f} | "
            f"{primitives:.1f} | {ours / primitives:.2f} |"
        )
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds (default 5)")
    args = parser.parse_args()
    print(f"workload per round: {describe()}; medians of {args.rounds} rounds\n")
    if args.backend in ("sqlite", "all"):
        print("SQLite (file) ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="sa-bench-") as folder:
            async with sqlite_contenders(Path(folder)) as contenders:
                print(report("SQLite (file)", await measure(contenders, args.rounds)) + "\n")
    if args.backend in ("postgresql", "all"):
        server = os.environ.get(POSTGRES_ENV)
        if not server:
            print(f"error: set {POSTGRES_ENV} to benchmark PostgreSQL", file=sys.stderr)
            return 2
        print("PostgreSQL ...", file=sys.stderr)
        async with postgres_contenders(server) as contenders:
            print(report("PostgreSQL", await measure(contenders, args.rounds)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
