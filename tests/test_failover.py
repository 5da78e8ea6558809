"""Failover: the primary stops, its synchronous standby is promoted, the agents carry on.

A PostgreSQL primary and a streaming standby with synchronous replication
(`tests.pg_cluster`); the provider reaches them through one multi-host URL with
`target_session_attrs=read-write`. Several tasks run agent turns (conversation, message,
text and tool blocks, `set`, `append`) and record every call. The primary is stopped
(`pg_ctl stop -m fast`, then again with `-m immediate`) and the standby promoted while
they run. Then:

- every failed call failed with `ConnectionLostError`, and was running while there was no
  primary: in flight when the stop began, or started before the promotion ended;
- the same provider (its asyncpg lanes, or SQLAlchemy's pool) writes to the new primary
  without a restart: every task acknowledges writes after the promotion;
- every write acknowledged (returned without error) is on the new primary, none twice:
  one conversation per thread, each text block, tool call and list item once, each key at
  its last acknowledged value or a later attempted one.

The figures (calls failed, time from the stop and from the promotion to the first write
acknowledged by the new primary, writes acknowledged, lost, duplicated) are printed: run
with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.errors import ConnectionLostError
from slack_agents_sa.models import Block, Conversation, KeyValueEntry, ListItem, Message, ToolCall
from tests.conftest import STRICT_ENV
from tests.pg_cluster import PgCluster, find_bindir, pg_cluster

#: Concurrent agent tasks (more than the default 5 lanes / pool connections).
TASKS = 8
#: Seconds of workload before the primary is stopped.
WARM_UP_S = 0.4
#: Seconds the workload goes on after every task has written to the new primary.
SETTLE_S = 0.3
#: The whole failover must be over (every task writing again) within this many seconds.
RECOVERY_LIMIT_S = 15.0
#: A task's pause after a failed call: doubling from the first to the last.
BACKOFF_S = (0.005, 0.05)

AGENT = "failover-agent"
NAMESPACE = "failover"
LIST_KEY = "log"
#: The provider calls that write (get_or_create_conversation is mostly a read).
WRITES = frozenset({"create_message", "append_text_block", "append_tool_block", "set", "append"})


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server programs (initdb, pg_ctl, pg_basebackup) not installed"
        if os.environ.get(STRICT_ENV) == "1":
            pytest.fail(f"{message}; {STRICT_ENV}=1 forbids skipping the failover test")
        pytest.skip(message)
    with pg_cluster(bindir) as started:
        yield started


@dataclass
class Call:
    """One provider call of the workload, and what came of it."""

    task: int
    op: str
    #: What identifies the write in the database (a thread, a text, a tool_call_id, ...).
    key: Any
    started: float
    ended: float = 0.0
    result: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Timeline:
    stop_begun: float = 0.0
    stopped: float = 0.0
    promote_begun: float = 0.0
    promoted: float = 0.0


@dataclass
class Workload:
    storage: Provider
    calls: list[Call] = field(default_factory=list)
    running: bool = True
    #: Each task's last `set` value sent (acknowledged or not).
    sets_sent: dict[int, int] = field(default_factory=dict)
    #: Set once every task had a write acknowledged that it started after `recovering_since`.
    recovered: asyncio.Event = field(default_factory=asyncio.Event)
    recovering_since: float = float("inf")
    _writers: set[int] = field(default_factory=set)

    async def call(self, task: int, op: str, key: Any, work: Awaitable[Any]) -> Call:
        """Await `work`, one provider call, and record it."""
        record = Call(task, op, key, time.monotonic())
        self.calls.append(record)
        try:
            record.result = await work
        except Exception as error:
            record.error = error
        record.ended = time.monotonic()
        if record.ok and op in WRITES and record.started >= self.recovering_since:
            self._writers.add(task)
            if len(self._writers) == TASKS:
                self.recovered.set()
        return record

    async def agent(self, task: int) -> None:
        """Agent turns until told to stop; a failed call ends its turn, after a pause."""
        turn = 0
        failures = 0
        while self.running:
            turn += 1
            if await self.turn(task, turn):
                failures = 0
                continue
            await asyncio.sleep(min(BACKOFF_S[0] * 2**failures, BACKOFF_S[1]))
            failures += 1

    async def turn(self, task: int, turn: int) -> bool:
        """One agent turn, as the host makes it; False at its first failed call."""
        storage = self.storage
        tag = f"{task}.{turn}"
        thread = f"1700000000.{task:03d}{turn // 4:03d}"  # a new thread every 4 turns
        work: Awaitable[Any] = storage.get_or_create_conversation(AGENT, f"C{task}", thread)
        conversation = await self.call(task, "get_or_create_conversation", thread, work)
        if not conversation.ok:
            return False
        work = storage.create_message(conversation.result, "U1", "Ann Lee", "ann")
        message = await self.call(task, "create_message", conversation.result, work)
        if not message.ok:
            return False
        message_id = message.result
        text = f"text {tag}"
        work = storage.append_text_block(message_id, text)
        if not (await self.call(task, "append_text_block", (message_id, text), work)).ok:
            return False
        tool_call_id = f"toolu_{tag}"
        work = storage.append_tool_block(
            message_id,
            tool_call_id=tool_call_id,
            tool_name="get_weather",
            tool_input={"city": "Paris", "turn": tag},
            tool_output='{"temp": 12}',
            is_error=False,
        )
        if not (await self.call(task, "append_tool_block", (message_id, tool_call_id), work)).ok:
            return False
        self.sets_sent[task] = turn
        work = storage.set(NAMESPACE, f"task-{task}", {"seq": turn})
        if not (await self.call(task, "set", turn, work)).ok:
            return False
        work = storage.append(NAMESPACE, LIST_KEY, {"v": tag})
        return (await self.call(task, "append", tag, work)).ok


async def _fail_over(cluster: PgCluster, mode: str, timeline: Timeline) -> None:
    timeline.stop_begun = time.monotonic()
    await asyncio.to_thread(cluster.stop_primary, mode)
    timeline.stopped = time.monotonic()
    timeline.promote_begun = time.monotonic()
    await asyncio.to_thread(cluster.promote_standby)
    timeline.promoted = time.monotonic()


async def _stored(cluster: PgCluster) -> dict[str, list[Any]]:
    """What the new primary (the promoted standby, reached by its own port) holds."""
    engine = create_async_engine(cluster.url_of(cluster.standby_port))
    try:
        async with engine.connect() as conn:
            in_recovery = (await conn.exec_driver_sql("SELECT pg_is_in_recovery()")).scalar()
            assert in_recovery is False, "the standby was not promoted"
            queries = {
                "conversations": select(
                    Conversation.id,
                    Conversation.agent_name,
                    Conversation.channel_id,
                    Conversation.thread_id,
                ),
                "messages": select(Message.id, Message.conversation_id),
                "texts": select(Block.message_id, Block.content).where(Block.block_type == "text"),
                "tool_calls": select(
                    ToolCall.tool_call_id, ToolCall.block_id, Block.message_id
                ).join(Block, Block.id == ToolCall.block_id),
                "entries": select(KeyValueEntry.key, KeyValueEntry.value).where(
                    KeyValueEntry.namespace == NAMESPACE
                ),
                "items": select(ListItem.id, ListItem.value).where(
                    ListItem.namespace == NAMESPACE, ListItem.key == LIST_KEY
                ),
            }
            return {name: list((await conn.execute(q)).all()) for name, q in queries.items()}
    finally:
        await engine.dispose()


def _check_writes(
    workload: Workload, stored: dict[str, list[Any]]
) -> tuple[int, list[str], list[str]]:
    """The writes acknowledged, those missing from `stored`, and what `stored` holds twice."""
    acked = [c for c in workload.calls if c.ok]
    lost: list[str] = []
    duplicates: list[str] = []

    def twice(kind: str, counts: Counter[Any]) -> None:
        duplicates.extend(f"{kind} {key} x{n}" for key, n in counts.items() if n > 1)

    threads = Counter((r.agent_name, r.channel_id, r.thread_id) for r in stored["conversations"])
    twice("conversation", threads)
    conversation_of = {(r.channel_id, r.thread_id): r.id for r in stored["conversations"]}
    messages = {r.id: r.conversation_id for r in stored["messages"]}
    texts = Counter((r.message_id, (r.content or {}).get("text")) for r in stored["texts"])
    twice("text block", texts)
    tool_calls = Counter((r.message_id, r.tool_call_id) for r in stored["tool_calls"])
    twice("tool call", tool_calls)
    tool_blocks = {(r.tool_call_id, r.block_id) for r in stored["tool_calls"]}
    twice("list item", Counter(r.value.get("v") for r in stored["items"]))
    item_values = {str(r.id): r.value.get("v") for r in stored["items"]}
    entries = {r.key: r.value.get("seq") for r in stored["entries"]}
    last_set_acked: dict[int, int] = {}

    for c in acked:
        if c.op == "get_or_create_conversation":
            if conversation_of.get((f"C{c.task}", c.key)) != c.result:
                lost.append(f"conversation {c.task}/{c.key} (id {c.result})")
        elif c.op == "create_message":
            if messages.get(c.result) != c.key:
                lost.append(f"message {c.result} of conversation {c.key}")
        elif c.op == "append_text_block":
            if c.key not in texts:
                lost.append(f"text block {c.key}")
        elif c.op == "append_tool_block":
            if c.key not in tool_calls or (c.key[1], c.result) not in tool_blocks:
                lost.append(f"tool call {c.key} (block {c.result})")
        elif c.op == "append":
            if item_values.get(c.result) != c.key:
                lost.append(f"list item {c.key} (id {c.result})")
        elif c.op == "set":
            last_set_acked[c.task] = max(c.key, last_set_acked.get(c.task, 0))
    for task, seq in last_set_acked.items():
        # A later set that failed may have committed (its outcome is unknown): never older.
        found = entries.get(f"task-{task}")
        if found is None or not seq <= found <= workload.sets_sent[task]:
            lost.append(f"set task-{task}: acknowledged {seq}, stored {found}")
    return sum(1 for c in acked if c.op in WRITES), lost, duplicates


@pytest.mark.parametrize("mode", ["fast", "immediate"])
@pytest.mark.parametrize("executor", ["native", "sqlalchemy"])
async def test_failover_to_promoted_standby(cluster: PgCluster, executor: str, mode: str) -> None:
    storage = Provider(url=cluster.url(), executor=executor)
    await storage.initialize()
    try:
        assert storage.db.executor_kind == executor
        workload = Workload(storage)
        timeline = Timeline()
        async with asyncio.timeout(RECOVERY_LIMIT_S + 15):
            agents = [asyncio.create_task(workload.agent(task)) for task in range(TASKS)]
            try:
                await asyncio.sleep(WARM_UP_S)
                await _fail_over(cluster, mode, timeline)
                workload.recovering_since = timeline.promoted
                with suppress(TimeoutError):  # (asserted below, after the figures)
                    await asyncio.wait_for(workload.recovered.wait(), RECOVERY_LIMIT_S)
                await asyncio.sleep(SETTLE_S)
            finally:
                workload.running = False
                await asyncio.gather(*agents)
        stored = await _stored(cluster)
    finally:
        await storage.close()

    calls = workload.calls
    failed = [c for c in calls if not c.ok]
    # The primary goes down somewhere between `pg_ctl stop` starting and returning.
    stopping = [c for c in failed if c.started < timeline.stopped]
    outage = [c for c in failed if timeline.stopped <= c.started < timeline.promoted]
    after = [c for c in failed if c.started >= timeline.promoted]
    before_stop = [c for c in calls if c.started < timeline.stop_begun]
    # A task's first failed call is the one it was making when the primary went; the rest
    # are its next turns, tried (after a pause) before a primary was back.
    tasks_hit = len({c.task for c in failed})
    # Writes started once `pg_ctl stop` returned: only the new primary can acknowledge them.
    new_writes = [c for c in calls if c.op in WRITES and c.ok and c.started >= timeline.stopped]
    nan = float("nan")
    first_write = min((c.ended for c in new_writes), default=nan)
    every_task = max(
        (min((c.ended for c in new_writes if c.task == t), default=nan) for t in range(TASKS)),
        default=nan,
    )
    written, lost, duplicates = _check_writes(workload, stored)
    ms = 1000
    print(
        f"\nfailover[{executor}, {mode}]: {len(calls)} calls, {len(failed)} failed "
        f"({len(stopping)} in flight or started while the primary was stopping, "
        f"{len(outage)} started while there was no primary, {len(after)} after the "
        f"promotion); {TASKS} tasks, {len(before_stop)} calls before the stop; "
        f"{tasks_hit} calls the tasks were making when the primary went, "
        f"{len(failed) - tasks_hit} later turns of theirs before a primary was back\n"
        f"  stop took {(timeline.stopped - timeline.stop_begun) * ms:.0f} ms, promotion "
        f"{(timeline.promoted - timeline.promote_begun) * ms:.0f} ms\n"
        f"  first write acknowledged by the new primary (started after the stop ended): "
        f"{(first_write - timeline.stop_begun) * ms:.0f} ms after the stop began, "
        f"{(first_write - timeline.promote_begun) * ms:.0f} ms after `pg_ctl promote` began, "
        f"{(first_write - timeline.promoted) * ms:.0f} ms after it returned; every task "
        f"writing again {(every_task - timeline.stop_begun) * ms:.0f} ms after the stop\n"
        f"  writes acknowledged {written}, lost {len(lost)}, duplicates {len(duplicates)}"
    )
    kinds = Counter(
        f"{type(c.error).__name__}: {c.error} ({c.error.__cause__!r})"
        for c in failed
        if c.error is not None
        if not isinstance(c.error, ConnectionLostError)
    )
    assert not kinds, f"failures other than ConnectionLostError: {kinds}"
    assert not after, [(c.op, c.started - timeline.promoted, c.error) for c in after]
    assert all(c.ended >= timeline.stop_begun for c in failed), "a call failed before the stop"
    assert workload.recovered.is_set(), "a task never wrote to the new primary"
    assert written > 0
    assert not lost, lost
    assert not duplicates, duplicates
