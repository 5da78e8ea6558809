"""Wall time per call of the hot provider calls, at 1 task and at 8 concurrent tasks.

Each contender gets its own database with the same fixture (threads, messages, a
20-message conversation with its blocks, tool calls, key-value entries). A round measures
every call at every concurrency on every contender in turn, the contender order
alternating round by round; round 0 warms up and is not counted. A measurement is
`calls` calls split over the tasks; its figure is wall time / calls.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from slack_agents.storage.base import BaseStorageProvider

from benchmarks.contenders import Backend, started_contenders

AGENT = "bench-bot"
NAMESPACE = "pc_kv"
KEYS = 200
THREADS = 16
BLOCKS_MESSAGES = 20
CONCURRENCIES = (1, 8)


@dataclass
class Fixture:
    """The rows a contender's calls work on."""

    thread_ids: list[str] = field(default_factory=list)
    conversation_ids: list[int | str] = field(default_factory=list)
    message_ids: list[int | str] = field(default_factory=list)
    blocks_conversation: int | str = 0
    tool_call_ids: list[str] = field(default_factory=list)
    #: Calls made so far: writes use it for keys and tool-call ids of their own.
    counter: int = 0


async def _append_turn(
    storage: BaseStorageProvider, message_id: int | str, tool_call_id: str
) -> None:
    await storage.append_text_block(message_id, "How is prod?", is_user=True)
    await storage.append_text_block(message_id, "Let me check the dashboards.")
    await storage.append_tool_block(
        message_id,
        tool_call_id=tool_call_id,
        tool_name="query_metrics",
        tool_input={"service": "api", "window": "1h", "metrics": ["p99", "errors"]},
        tool_output='{"p99_ms": 182, "errors": 3, "status": "ok"}',
        is_error=False,
    )
    await storage.append_usage_block(
        message_id,
        model="claude-sonnet",
        version="2025-01",
        input_tokens=1200,
        output_tokens=180,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=900,
        peak_single_call_input_tokens=1200,
        estimated_cost_usd=0.0042,
    )


async def prepare(storage: BaseStorageProvider) -> Fixture:
    fixture = Fixture()
    for index in range(KEYS):
        await storage.set(NAMESPACE, f"key-{index}", {"prefs": {"tz": "Europe/Paris"}, "n": index})
    for index in range(20):
        await storage.append(NAMESPACE, "list-20", {"event": "seen", "n": index})
    for thread in range(THREADS):
        thread_id = f"1700000000.{thread:06d}"
        conversation_id = await storage.get_or_create_conversation(AGENT, "C042", thread_id, "ops")
        fixture.thread_ids.append(thread_id)
        fixture.conversation_ids.append(conversation_id)
        message_id = await storage.create_message(conversation_id, "U1", "Ann Lee", "ann")
        fixture.message_ids.append(message_id)
    fixture.blocks_conversation = await storage.get_or_create_conversation(
        AGENT, "C042", "1700000001.000000", "ops"
    )
    for turn in range(BLOCKS_MESSAGES):
        message_id = await storage.create_message(
            fixture.blocks_conversation, "U1", "Ann Lee", "ann"
        )
        tool_call_id = f"toolu_fixture_{turn}"
        await _append_turn(storage, message_id, tool_call_id)
        fixture.tool_call_ids.append(tool_call_id)
    return fixture


Call = Callable[[BaseStorageProvider, Fixture, int], Awaitable[object]]


async def _get(storage: BaseStorageProvider, fixture: Fixture, index: int) -> object:
    return await storage.get(NAMESPACE, f"key-{index % KEYS}")


async def _set(storage: BaseStorageProvider, fixture: Fixture, index: int) -> object:
    await storage.set(NAMESPACE, f"key-{index % KEYS}", {"prefs": {"tz": "UTC"}, "n": index})
    return None


async def _append(storage: BaseStorageProvider, fixture: Fixture, index: int) -> object:
    return await storage.append(NAMESPACE, f"list-{index % 10}", {"event": "seen", "n": index})


async def _get_list(storage: BaseStorageProvider, fixture: Fixture, index: int) -> object:
    return await storage.get_list(NAMESPACE, "list-20")


async def _get_or_create(storage: BaseStorageProvider, fixture: Fixture, index: int) -> object:
    thread_id = fixture.thread_ids[index % THREADS]
    return await storage.get_or_create_conversation(AGENT, "C042", thread_id, "ops")


async def _create_message(storage: BaseStorageProvider, fixture: Fixture, index: int) -> object:
    conversation_id = fixture.conversation_ids[index % THREADS]
    return await storage.create_message(conversation_id, "U1", "Ann Lee", "ann")


async def _append_tool_block(storage: BaseStorageProvider, fixture: Fixture, index: int) -> object:
    await storage.append_tool_block(
        fixture.message_ids[index % THREADS],
        tool_call_id=f"toolu_call_{index}",
        tool_name="query_metrics",
        tool_input={"service": "api", "window": "1h", "metrics": ["p99", "errors"]},
        tool_output='{"p99_ms": 182, "errors": 3, "status": "ok"}',
        is_error=False,
    )
    return None


async def _get_message_blocks(storage: BaseStorageProvider, fixture: Fixture, index: int) -> object:
    blocks = await storage.get_message_blocks(fixture.blocks_conversation)
    assert len(blocks) == BLOCKS_MESSAGES
    return blocks


async def _get_tool_call(storage: BaseStorageProvider, fixture: Fixture, index: int) -> object:
    found = await storage.get_tool_call(fixture.tool_call_ids[index % BLOCKS_MESSAGES])
    assert found
    return found


#: The calls measured, and the number of calls a measurement makes (a fraction for the
#: slow ones, so a round stays short).
CALLS: dict[str, tuple[Call, float]] = {
    "get": (_get, 1.0),
    "set": (_set, 1.0),
    "append": (_append, 1.0),
    "get_list": (_get_list, 1.0),
    "get_or_create_conversation (existing)": (_get_or_create, 1.0),
    "create_message": (_create_message, 1.0),
    "append_tool_block": (_append_tool_block, 1.0),
    f"get_message_blocks ({BLOCKS_MESSAGES} messages)": (_get_message_blocks, 0.5),
    "get_tool_call": (_get_tool_call, 1.0),
}


async def _run(
    storage: BaseStorageProvider, fixture: Fixture, call: Call, calls: int, tasks: int
) -> float:
    """Seconds of wall time per call: `calls` calls spread over `tasks` concurrent tasks."""
    first = fixture.counter
    fixture.counter += calls

    async def worker(task: int) -> None:
        for index in range(first + task, first + calls, tasks):
            await call(storage, fixture, index)

    started = time.perf_counter()
    await asyncio.gather(*(worker(task) for task in range(tasks)))
    return (time.perf_counter() - started) / calls


#: Seconds per call: [call][tasks][contender] -> one figure per counted round.
Times = dict[str, dict[int, dict[str, list[float]]]]


async def measure(backend: Backend, rounds: int, calls: int) -> Times:
    names = backend.contenders()
    times: Times = {
        label: {tasks: {name: [] for name in names} for tasks in CONCURRENCIES} for label in CALLS
    }
    async with started_contenders(backend, names) as contenders:
        fixtures = {name: await prepare(storage) for name, storage in contenders.items()}
        for round_number in range(rounds + 1):
            order = names if round_number % 2 else names[::-1]
            for label, (call, share) in CALLS.items():
                count = max(8, int(calls * share))
                for tasks in CONCURRENCIES:
                    for name in order:
                        seconds = await _run(contenders[name], fixtures[name], call, count, tasks)
                        if round_number:  # round 0 warms up
                            times[label][tasks][name].append(seconds)
            print(
                f"  {backend.title} calls: round {round_number}/{rounds} done",
                file=sys.stderr,
                flush=True,
            )
    return times


def _target_met(ratio: float, limit: float) -> str:
    return "met" if ratio <= limit else "NOT met"


def report(backend: Backend, times: Times, target: float | None = None) -> str:
    """One Markdown table per concurrency: µs per call and ratios to the reference."""
    names = backend.contenders()
    others = [name for name in names if name != backend.reference]
    reference = backend.reference
    sections = []
    worst: tuple[float, str] = (0.0, "")
    for tasks in CONCURRENCIES:
        header = (
            "| call | "
            + " | ".join(f"{name} (µs)" for name in names)
            + " | "
            + " | ".join(f"{name} / {reference}" for name in others)
            + (f" | native ≤ {target}x {reference}" if target is not None else "")
            + " |"
        )
        extra = 1 if target is not None else 0
        rule = "|---|" + "---:|" * (len(names) + len(others) + extra)
        lines = [
            f"#### {backend.title}, {tasks} task{'s' if tasks > 1 else ''}",
            "",
            header,
            rule,
        ]
        for label in CALLS:
            medians = {name: statistics.median(times[label][tasks][name]) * 1e6 for name in names}
            ratios = [medians[name] / medians[reference] for name in others]
            cells = [f"{medians[name]:.0f}" for name in names] + [f"{r:.2f}" for r in ratios]
            if target is not None:
                cells.append(_target_met(ratios[0], target))
                worst = max(worst, (ratios[0], f"{label} at {tasks} task(s)"))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    if target is not None:
        sections.append(
            f"Target native ≤ {target}x {reference} on every call: "
            f"**{_target_met(worst[0], target)}** (highest: {worst[0]:.2f}x for {worst[1]})"
        )
    return "\n\n".join(sections)


__all__ = ["CALLS", "measure", "report"]
