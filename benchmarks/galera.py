"""What a 3-node Galera cluster costs and gives the provider: throughput, read-your-writes,
failover. Starts its own throwaway cluster (tests/galera_cluster.py) and always removes it.

    .venv/bin/python -m benchmarks.galera [--turns N] [--rounds N]

On both executors:

1. calls per second of WORKERS agent workers all through node 1, and spread over the three
   nodes (one provider per node), with the conflicts the provider retried and the calls
   that failed;
2. the cost of `read_your_writes` (`wsrep_sync_wait = 1`): median `get` on a quiet node, a
   read on node 2 right after a write on node 1, and how many of those reads were stale;
3. failover: writers on a URL listing all three nodes while node 1 is SIGKILLed, with the
   tests' short failure detection and with Galera's default (a second cluster).

Prints figures only: a loaded 2-core machine makes them noisy, so nothing here asserts on
time. Writes lost or written twice in a failover are printed too (both must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal

from sqlalchemy import text

from benchmarks.workload import AGENT, HANDLES
from slack_agents_sa import Provider
from slack_agents_sa.errors import ConnectionLostError
from tests.databases import create_scratch_database, opened_provider
from tests.galera_cluster import GaleraCluster

Executor = Literal["native", "sqlalchemy"]
EXECUTORS: tuple[Executor, ...] = ("native", "sqlalchemy")
#: Concurrent agent workers of section 1 (each its own Slack thread).
WORKERS = 8
#: Concurrent writers of the failover.
WRITERS = 4
#: Seconds of writing before the kill, and after writes resumed.
STEADY_S = 1.0
#: A call not done after this many seconds counts as failed (TimeoutError).
CALL_LIMIT_S = 60.0
#: Give up waiting for writes to resume after this many seconds.
RESUME_LIMIT_S = 60.0
#: The message the provider logs (INFO, slack_agents_sa.database) before each retry.
RETRY_MESSAGE = "retrying a call the database rolled back"

Sections = Coroutine[Any, Any, list[str]]


class _RetryCount(logging.Handler):
    """Counts the provider's retries of calls the database rolled back as conflicts."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(RETRY_MESSAGE):
            self.retries += 1


RETRIES = _RetryCount()
#: The first error of each type other than ConnectionLostError, with its cause, as text.
UNEXPECTED: dict[str, str] = {}


def _failed(error: Exception) -> str:
    """`error`'s type name, noting the first of each unexpected type in UNEXPECTED."""
    name = type(error).__name__
    if not isinstance(error, ConnectionLostError) and name not in UNEXPECTED:
        cause = error.__cause__
        caused = f" (from {type(cause).__module__}.{type(cause).__name__})" if cause else ""
        UNEXPECTED[name] = f"{type(error).__module__}.{name}{caused}: {error}"[:300]
    return name


@dataclass
class _Tally:
    """Calls made by some workers: how many, and the failures by exception type."""

    calls: int = 0
    failed: Counter[str] = field(default_factory=Counter)

    async def call[T](self, call: Awaitable[T]) -> T | None:
        """`call`'s result, or None when it raised (counted by type)."""
        self.calls += 1
        try:
            return await asyncio.wait_for(call, CALL_LIMIT_S)
        except Exception as error:
            self.failed[_failed(error)] += 1
            return None

    def failures(self) -> str:
        return ", ".join(f"{n} {name}" for name, n in self.failed.most_common()) or "0"


# -- 1. throughput ------------------------------------------------------------------------


async def _agent(storage: Provider, tally: _Tally, thread_id: str, worker: int, turns: int) -> None:
    """One worker's Slack thread, `turns` turns of 7 calls: benchmarks/workload.py's turn cut
    down, failures counted instead of raised; the user preferences it sets are shared by
    every worker (HANDLES), the hot rows of a real agent fleet."""
    handle = HANDLES[worker % len(HANDLES)]
    for turn in range(turns):
        conversation = await tally.call(
            storage.get_or_create_conversation(AGENT, "C042", thread_id, "ops")
        )
        if conversation is None:
            continue
        message = await tally.call(storage.create_message(conversation, "U1", "Ann Lee", handle))
        if message is None:
            continue
        await tally.call(storage.append_text_block(message, f"Question {turn}", is_user=True))
        await tally.call(storage.get_message_blocks(conversation))
        await tally.call(storage.append_text_block(message, "All green: p99 182 ms."))
        await tally.call(storage.set("bench_prefs", handle, {"turn": turn, "worker": worker}))
        await tally.call(storage.get("bench_prefs", handle))


async def throughput(urls: list[str], executor: Executor, turns: int) -> list[str]:
    """Rows of section 1: WORKERS workers through node 1, then spread over every node."""
    rows = []
    alone = 0.0
    for layout, targets in (("node 1 only", urls[:1]), ("three nodes", urls)):
        async with AsyncExitStack() as stack:
            providers = [
                await stack.enter_async_context(opened_provider(url, executor=executor))
                for url in targets
            ]
            tally = _Tally()
            run = f"{executor}-{len(targets)}-{time.time_ns()}"
            workers = [
                _agent(providers[w % len(providers)], tally, f"{run}.{w}", w, turns)
                for w in range(WORKERS)
            ]
            RETRIES.retries = 0
            started = time.perf_counter()
            await asyncio.gather(*workers)
            seconds = time.perf_counter() - started
        rate = tally.calls / seconds
        alone = alone or rate
        rows.append(
            f"| {executor} | {layout} | {tally.calls:,} | {seconds:.1f} | {rate:,.0f} | "
            f"{rate / alone:.2f} | {RETRIES.retries} | {tally.failures()} |"
        )
    return rows


# -- 2. read_your_writes ------------------------------------------------------------------


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def read_your_writes(urls: list[str], executor: Executor, rounds: int) -> list[str]:
    """Rows of section 2: the option on, then off, on the same two nodes."""
    rows = []
    figures: dict[bool, tuple[float, float]] = {}
    for on in (True, False):
        async with (
            opened_provider(urls[0], executor=executor, read_your_writes=on) as writer,
            opened_provider(urls[1], executor=executor, read_your_writes=on) as reader,
        ):
            await writer.set("ryw", "quiet", {"v": 1})
            await asyncio.sleep(0.2)
            quiet = []
            for _ in range(rounds):
                started = time.perf_counter()
                await reader.get("ryw", "quiet")
                quiet.append(time.perf_counter() - started)
            after_write = []
            stale = 0
            for n in range(rounds):
                await writer.set("ryw", "turn", {"n": n})
                started = time.perf_counter()
                value = await reader.get("ryw", "turn")
                after_write.append(time.perf_counter() - started)
                stale += value != {"n": n}
        figures[on] = (_median_us(quiet), _median_us(after_write))
        rows.append(
            f"| {executor} | {'on' if on else 'off'} | {figures[on][0]:,.0f} | "
            f"{figures[on][1]:,.0f} | {stale} of {rounds} |"
        )
    quiet_ratio, write_ratio = (figures[True][i] / figures[False][i] for i in (0, 1))
    rows.append(f"| {executor} | on / off | {quiet_ratio:.2f} | {write_ratio:.2f} | |")
    return rows


# -- 3. failover --------------------------------------------------------------------------


@dataclass
class _Writers:
    """What the failover's writers saw."""

    acknowledged: list[int] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)
    failed_numbers: list[int] = field(default_factory=list)
    longest_s: float = 0.0
    killed_at: float | None = None
    #: When the first write started after the kill succeeded.
    resumed_at: float | None = None


async def _writer(
    storage: Provider, seen: _Writers, key: str, numbers: itertools.count[int]
) -> None:
    """Append items with unique sequence numbers to the list `key` until cancelled."""
    while True:
        number = next(numbers)
        started = time.monotonic()
        try:
            await asyncio.wait_for(storage.append("failover", key, {"seq": number}), CALL_LIMIT_S)
        except Exception as error:
            seen.failed[_failed(error)] += 1
            seen.failed_numbers.append(number)
            await asyncio.sleep(0.05)
        else:
            seen.acknowledged.append(number)
            after_kill = seen.killed_at is not None and started >= seen.killed_at
            if after_kill and seen.resumed_at is None:
                seen.resumed_at = time.monotonic()
        finally:
            seen.longest_s = max(seen.longest_s, time.monotonic() - started)


def _listed(cluster: GaleraCluster, database: str) -> str:
    """A URL naming every node of `cluster`, in node order (see tests/test_mysql_hosts.py)."""
    hosts = ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes)
    return f"mysql+asyncmy://root@{hosts}/{database}"


async def failover(cluster: GaleraCluster, database: str, executor: Executor, label: str) -> str:
    """One row of section 3: kill node 1 under WRITERS writers, then restart it."""
    seen = _Writers()
    numbers = itertools.count()
    try:
        async with opened_provider(
            _listed(cluster, database), executor=executor, connect_timeout=5
        ) as storage:
            key = f"{executor}-{time.time_ns()}"
            writers = [
                asyncio.create_task(_writer(storage, seen, key, numbers)) for _ in range(WRITERS)
            ]
            try:
                await asyncio.sleep(STEADY_S)
                seen.killed_at = time.monotonic()
                await asyncio.to_thread(cluster.kill, 1)
                while seen.resumed_at is None:
                    if time.monotonic() - seen.killed_at > RESUME_LIMIT_S:
                        break
                    await asyncio.sleep(0.02)
                await asyncio.sleep(STEADY_S)
            finally:
                for task in writers:
                    task.cancel()
                await asyncio.gather(*writers, return_exceptions=True)
                await storage.db.settle()
            # The node a new connection reaches now (both executors try the hosts in order).
            async with storage.db.statement() as conn:
                node = await conn.scalar(text("SELECT @@wsrep_node_name"))
            written = [item["seq"] for item in await storage.get_list("failover", key)]
    finally:
        started = time.monotonic()
        if not cluster.nodes[0].running():  # not when the provider failed before the kill
            await asyncio.to_thread(cluster.restart, 1)
        rejoin_s = time.monotonic() - started
    counts = Counter(written)
    lost = len(set(seen.acknowledged) - counts.keys())
    twice = sum(1 for n in counts.values() if n > 1)
    landed = len(set(seen.failed_numbers) & counts.keys())
    lost_connections = seen.failed.pop(ConnectionLostError.__name__, 0)
    other = ", ".join(f"{n} {name}" for name, n in seen.failed.items()) or "0"
    assert seen.killed_at is not None
    resumed = (
        f"{seen.resumed_at - seen.killed_at:.2f}" if seen.resumed_at else f"> {RESUME_LIMIT_S:g}"
    )
    return (
        f"| {label} | {executor} | {lost_connections} | {other} | {resumed} | "
        f"{seen.longest_s:.2f} | {len(seen.acknowledged):,} | {lost} | {twice} | {landed} | "
        f"{node} | {rejoin_s:.1f} |"
    )


# -- running it ---------------------------------------------------------------------------

THROUGHPUT_HEAD = [
    "| executor | workers through | calls | s | calls/s | vs node 1 only | retried "
    "conflicts | failed calls |",
    "|---|---|---:|---:|---:|---:|---:|---|",
]
READ_HEAD = [
    "| executor | read_your_writes | get, quiet node 2 (µs) | get on node 2 right after a "
    "set on node 1 (µs) | stale reads |",
    "|---|---|---:|---:|---:|",
]
FAILOVER_HEAD = [
    "| failure detection | executor | ConnectionLostError | other failures | kill → first "
    "write (s) | longest call (s) | acknowledged | lost | written twice | failed but landed "
    "| serving after | node 1 rejoin (s) |",
    "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
]


async def _scratch(cluster: GaleraCluster) -> tuple[list[str], str]:
    """A new database on `cluster`: its URL on each node, and its name (not dropped: it goes
    with the cluster's files)."""
    database = (await create_scratch_database(cluster.url)).database
    assert database is not None
    named = [url.set(database=database) for url in cluster.urls()]
    urls = [url.render_as_string(hide_password=False) for url in named]
    return urls, database


async def _fast_cluster_sections(cluster: GaleraCluster, args: argparse.Namespace) -> list[str]:
    urls, database = await _scratch(cluster)
    lines = [f"## 1. {WORKERS} agent workers, {args.turns} turns each (7 calls a turn)", ""]
    lines += THROUGHPUT_HEAD
    for executor in EXECUTORS:
        _progress(f"throughput, {executor}")
        lines += await throughput(urls, executor, args.turns)
    lines += ["", f"## 2. read_your_writes ({args.rounds} rounds)", "", *READ_HEAD]
    for executor in EXECUTORS:
        _progress(f"read_your_writes, {executor}")
        lines += await read_your_writes(urls, executor, args.rounds)
    lines += ["", f"## 3. failover: SIGKILL node 1 under {WRITERS} writers", "", *FAILOVER_HEAD]
    for executor in EXECUTORS:
        _progress(f"failover, {executor}, suspect PT2S")
        lines.append(await failover(cluster, database, executor, "PT2S / PT0.5S (tests)"))
    return lines


async def _default_cluster_sections(cluster: GaleraCluster) -> list[str]:
    _, database = await _scratch(cluster)
    lines = []
    for executor in EXECUTORS:
        _progress(f"failover, {executor}, suspect PT5S")
        lines.append(await failover(cluster, database, executor, "PT5S / PT1S (default)"))
    return lines


def _progress(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C, so the `finally` that stops the cluster runs either way."""
    raise KeyboardInterrupt


def _on_cluster(fast: bool, sections: Callable[[GaleraCluster], Sections]) -> list[str]:
    """`sections(cluster)` on a cluster started for it, stopped and removed whatever happens."""
    _progress(f"starting a 3-node cluster (fast failure detection: {fast})")
    cluster = GaleraCluster.start(fast_failure_detection=fast)
    try:
        return asyncio.run(sections(cluster))
    finally:
        _progress("stopping the cluster")
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=60, help="turns per worker (section 1)")
    parser.add_argument("--rounds", type=int, default=300, help="reads per figure (section 2)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.WARNING)
    database_log = logging.getLogger("slack_agents_sa.database")
    database_log.setLevel(logging.INFO)
    database_log.addHandler(RETRIES)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)  # the retries are counted, not printed
    lines = _on_cluster(True, lambda cluster: _fast_cluster_sections(cluster, args))
    lines += _on_cluster(False, _default_cluster_sections)
    if UNEXPECTED:
        lines += ["", "Errors other than ConnectionLostError (the first of each type):", ""]
        lines += [f"- {text}" for text in UNEXPECTED.values()]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
