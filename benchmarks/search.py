"""Search over history at scale: how long `search_history` takes over 100k and 1M blocks,
what its index adds to `append_text_block`, and how long an erasure takes with it.

    .venv/bin/python -m benchmarks.search [--backend sqlite|postgresql|mysql|all]
        [--blocks 100000,1000000] [--searches 40] [--appends 2000] [--rounds 5]

Each size is a new database, filled in bulk with Core inserts (executemany, a transaction
per 500 conversations), not through the provider: conversations of 10 messages of 5 blocks
(the person's text, the agent's preamble, a tool call or every fifth message a file, the
agent's answer, usage: 60 % text blocks), one agent, 40 channels, every person writing in
about 50 conversations. Texts are words of a made-up 500,000-word vocabulary drawn with
Zipf's law (s = 1), so a few words are in most blocks and most words in a handful.
PostgreSQL's and MariaDB's index is dropped for the fill and built after it (timed);
SQLite's triggers fill its FTS5 table as rows arrive. Then ANALYZE (VACUUM ANALYZE on
PostgreSQL), as autovacuum would have.

Then, through the provider (default executor): searches of each kind below, shuffled,
once each; erasing a person with 1,000 messages (`erase_user`); `append_text_block` in
rounds alternately with the index and without it (PostgreSQL and MariaDB: index dropped;
SQLite: its triggers dropped; MariaDB: all rounds with it first, see
`MariaDBIndex`); a second person's erasure without the index. The plans of the slowest
searches are printed (EXPLAIN ANALYZE; SQLite: EXPLAIN QUERY PLAN; MariaDB: ANALYZE), the
searches' figures as soon as they are done.
Prints figures (docs/dev/search-figures.md), never asserts on time. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

from sqlalchemy import ClauseElement, Executable, Table, insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler

from benchmarks.databases import LABELS, chosen, empty_database
from slack_agents_sa import Provider
from slack_agents_sa.backends.search import MySQLSearch
from slack_agents_sa.models import (
    SEARCH_INDEX,
    SEARCH_TABLE,
    Block,
    Conversation,
    Message,
    ToolCall,
    table_of,
)
from slack_agents_sa.search import HistoryHit
from tests.databases import MYSQL, MYSQL_ENV, opened_provider, scratch_database
from tests.search_index import catch_up

BACKENDS = {**LABELS, "mysql": "MariaDB"}
AGENT = "helper"
MESSAGES = 10
BLOCKS_PER_MESSAGE = 5
CONVERSATIONS_PER_USER = 50
CHANNELS = 40
#: Conversations written per transaction of the fill.
CHUNK = 500
VOCABULARY = 500_000
#: Erased people (index on, then off): each the only writer of 50 conversations of 10
#: messages, and in 50 more with 10 messages of theirs and 2 of someone else's.
ERASED = ("U0ERASE1", "U0ERASE2")
ERASED_CONVERSATIONS = 100
#: Words per text block: the person's, the agent's preamble, the agent's answer.
LENGTHS = {"user_text": (5, 35), "preamble": (5, 30), "answer": (20, 160)}
#: Words by the share of blocks holding them (the rare ones by count of blocks).
RARE = (2, 20)
BANDS = {"moderate": (0.001, 0.01), "second": (0.01, 0.05), "common": (0.05, 0.20)}
#: A search kind: its words, who searches (None: no access rule; "tool": user_id and the
#: current thread left out, as the history tool searches; "channel": with also_in_channel
#: too), its limit, and whether it counts for the ≤ 50 ms target.
KINDS = {
    "rare word": ("rare", None, 20, True),
    "rare word, as the tool": ("rare", "tool", 10, True),
    "moderate word": ("moderate", None, 20, True),
    "moderate word, as the tool": ("moderate", "tool", 10, True),
    "two words": ("pair", None, 20, True),
    "two words, as the tool": ("pair", "tool", 10, True),
    "common word": ("common", None, 20, False),
    "common word, as the tool": ("common", "tool", 10, False),
    "moderate word, tool with scope channel": ("moderate", "channel", 10, False),
}
TARGET_MS = 50.0

_conversations, _messages = table_of(Conversation), table_of(Message)
_blocks, _tool_calls = table_of(Block), table_of(ToolCall)


def _seeded(seed: int) -> random.Random:
    """The same dataset and searches every run: made-up text, not secrets."""
    return random.Random(seed)  # noqa: S311


class Words:
    """Made-up words drawn with Zipf's law, and how many text blocks hold each one."""

    def __init__(self, rng: random.Random) -> None:
        letters = "abcdefghijklmnopqrstuvwxyz"
        found: dict[str, None] = {}
        while len(found) < VOCABULARY:
            word = "".join(rng.choices(letters, k=rng.randint(4, 11)))
            if word not in MySQLSearch.STOP_WORDS:  # so MariaDB finds every word
                found[word] = None
        self.vocabulary = list(found)
        self.cumulative = list(itertools.accumulate(1 / rank for rank in range(1, VOCABULARY + 1)))
        self.blocks_with: Counter[str] = Counter()

    def text(self, rng: random.Random, kind: str, count: bool = True) -> str:
        words = rng.choices(
            self.vocabulary, cum_weights=self.cumulative, k=rng.randint(*LENGTHS[kind])
        )
        if count:
            self.blocks_with.update(set(words))
        return " ".join(words)

    def band(self, low: float, high: float) -> list[str]:
        return sorted(word for word, blocks in self.blocks_with.items() if low <= blocks <= high)


@dataclass
class Layout:
    """Who writes in which conversation (index i is conversation id i + 1)."""

    conversations: int

    def __post_init__(self) -> None:
        self.step = self.conversations // ERASED_CONVERSATIONS
        regular = self.conversations - len(ERASED) * ERASED_CONVERSATIONS
        self.users = [f"U{n:05d}" for n in range(max(1, regular // CONVERSATIONS_PER_USER))]
        self.of_user: dict[str, list[int]] = {}
        for index in range(self.conversations):
            self.of_user.setdefault(self.owner(index), []).append(index)

    def owner(self, index: int) -> str:
        if 1 <= index % self.step <= len(ERASED):
            return ERASED[index % self.step - 1]
        return self.users[index % len(self.users)]

    def shared(self, index: int) -> bool:
        """An erased person's conversation where someone else wrote too."""
        return self.owner(index) in ERASED and index // self.step % 2 == 0

    @staticmethod
    def thread(index: int) -> tuple[str, str]:
        return f"C{index % CHANNELS:02d}", f"{1_700_000_000 + index}.000100"


@dataclass
class Fill:
    """The rows written so far, and where the time went."""

    messages: int = 0
    blocks: int = 0
    text_blocks: int = 0
    python_s: float = 0.0
    total_s: float = 0.0


def _chunk(
    layout: Layout, words: Words, rng: random.Random, first: int, fill: Fill
) -> list[tuple[Table, list[dict[str, Any]]]]:
    started = datetime.now(UTC) - timedelta(days=365)
    spacing = timedelta(days=360) / layout.conversations
    rows: dict[str, list[dict[str, Any]]] = {"c": [], "m": [], "b": [], "t": []}
    for index in range(first, min(first + CHUNK, layout.conversations)):
        channel, thread = layout.thread(index)
        at = started + index * spacing
        rows["c"].append(
            dict(
                id=index + 1,
                agent_name=AGENT,
                channel_id=channel,
                thread_id=thread,
                channel_name=f"team-{channel}",
                created_at=at,
            )
        )
        writers = [layout.owner(index)] * MESSAGES
        if layout.shared(index):
            writers += [layout.users[index % len(layout.users)]] * 2
        for number, writer in enumerate(writers):
            fill.messages += 1
            message_at = at + timedelta(minutes=2 * number)
            rows["m"].append(
                dict(
                    id=fill.messages,
                    conversation_id=index + 1,
                    user_id=writer,
                    user_name=writer.lower(),
                    user_handle=writer.lower(),
                    created_at=message_at,
                )
            )
            tool = fill.messages % 5 != 0
            for position, block_type in enumerate(
                ("user_text", "text", "tool_use" if tool else "file", "text", "usage")
            ):
                fill.blocks += 1
                block = dict(
                    id=fill.blocks,
                    message_id=fill.messages,
                    block_type=block_type,
                    in_history=block_type != "usage",
                    content=None,
                    search_text=None,
                    filename=None,
                    mimetype=None,
                    size_bytes=None,
                    created_at=message_at + timedelta(milliseconds=position),
                )
                if block_type in ("user_text", "text"):
                    length = (
                        "user_text" if position == 0 else "preamble" if position == 1 else "answer"
                    )
                    block["search_text"] = words.text(rng, length)
                    block["content"] = {"text": block["search_text"]}
                    fill.text_blocks += 1
                elif block_type == "tool_use":
                    rows["t"].append(
                        dict(
                            block_id=fill.blocks,
                            tool_call_id=f"toolu_{fill.blocks}",
                            tool_name="lookup",
                            tool_input={"query": "status"},
                            tool_output="ok",
                            is_error=False,
                        )
                    )
                elif block_type == "file":
                    block.update(
                        content={"file_id": f"F{fill.blocks}"},
                        filename="chart.png",
                        mimetype="image/png",
                        size_bytes=48_213,
                    )
                else:
                    block["content"] = {"input_tokens": 1_200, "output_tokens": 300, "model": "m"}
                rows["b"].append(block)
    return [
        (_conversations, rows["c"]),
        (_messages, rows["m"]),
        (_blocks, rows["b"]),
        (_tool_calls, rows["t"]),
    ]


async def fill(storage: Provider, layout: Layout, words: Words, rng: random.Random) -> Fill:
    figures = Fill()
    started = time.perf_counter()
    for first in range(0, layout.conversations, CHUNK):
        generating = time.perf_counter()
        chunk = _chunk(layout, words, rng, first, figures)
        figures.python_s += time.perf_counter() - generating
        async with storage.db.transaction() as conn:
            for table, rows in chunk:
                if rows:
                    await conn.execute(insert(table), rows)
    figures.total_s = time.perf_counter() - started
    return figures


class PostgreSQLIndex:
    """The GIN index: dropped, and built again from its own definition."""

    fill_with_index = False
    rebuild_is_cheap = True
    explain = "EXPLAIN (ANALYZE, BUFFERS) "
    optimize: str | None = None
    definition = ""

    async def off(self, conn: AsyncConnection) -> None:
        found = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
        self.definition = (await conn.execute(text(found), {"name": SEARCH_INDEX})).scalar_one()
        await conn.execute(text(f"DROP INDEX {SEARCH_INDEX}"))

    async def on(self, conn: AsyncConnection) -> None:
        await conn.execute(text(self.definition))

    async def settle(self, conn: AsyncConnection) -> None:
        """The ids the fill wrote are behind the sequences; then what autovacuum does."""
        for table in ("agents_conversations", "agents_messages", "agents_blocks"):
            await conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
                )
            )
        await conn.execute(text("VACUUM ANALYZE"))


class SQLiteIndex:
    """The FTS5 table's triggers: dropped, and created again from their own SQL; the blocks
    written meanwhile go into the index then, as the next batch would have taken them."""

    fill_with_index = True
    rebuild_is_cheap = True
    explain = "EXPLAIN QUERY PLAN "
    optimize: str | None = f"INSERT INTO {SEARCH_TABLE} ({SEARCH_TABLE}) VALUES ('optimize')"
    triggers: list[str]

    async def off(self, conn: AsyncConnection) -> None:
        found = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE :prefix"
        rows = (await conn.execute(text(found), {"prefix": f"{SEARCH_TABLE}_%"})).all()
        self.triggers = [row.sql for row in rows]
        for row in rows:
            await conn.execute(text(f"DROP TRIGGER {row.name}"))

    async def on(self, conn: AsyncConnection) -> None:
        await catch_up(conn)
        for sql in self.triggers:
            await conn.execute(text(sql))

    async def settle(self, conn: AsyncConnection) -> None:
        await conn.execute(text("ANALYZE"))


class MariaDBIndex:
    """The FULLTEXT index: dropped, and added again by a copy of the table.

    MariaDB 10.11.19 answers nothing from a FULLTEXT index dropped and created again in
    place (MATCH finds 0 rows, with or without rows written in between; a CREATE after the
    column was dropped and added again is fine): ALGORITHM=COPY rebuilds it right, and the
    fill keeps the index the migration built. That copy took 15 to 17 minutes at 1M
    blocks, so the append rounds with the index all come before those without it.
    """

    fill_with_index = True
    rebuild_is_cheap = False
    explain = "ANALYZE "
    optimize: str | None = None

    async def off(self, conn: AsyncConnection) -> None:
        await conn.execute(text(f"DROP INDEX {SEARCH_INDEX} ON agents_blocks"))

    async def on(self, conn: AsyncConnection) -> None:
        await conn.execute(
            text(
                f"ALTER TABLE agents_blocks ADD FULLTEXT INDEX {SEARCH_INDEX} (search_text), "
                "ALGORITHM=COPY"
            )
        )

    async def settle(self, conn: AsyncConnection) -> None:
        tables = "agents_conversations, agents_messages, agents_blocks, agents_tool_calls"
        await conn.execute(text(f"ANALYZE TABLE {tables}"))


#: This benchmark's only dialect-specific code, by dialect name.
INDEXES: dict[str, type[PostgreSQLIndex | SQLiteIndex | MariaDBIndex]] = {
    "postgresql": PostgreSQLIndex,
    "sqlite": SQLiteIndex,
    "mysql": MariaDBIndex,
    "mariadb": MariaDBIndex,
}


@asynccontextmanager
async def maintenance(url: str) -> AsyncIterator[AsyncConnection]:
    """A connection outside the provider, each statement committed by itself (VACUUM)."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def timed_s(conn: AsyncConnection, step: Any) -> float:
    started = time.perf_counter()
    await step(conn)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Search:
    kind: str
    text: str
    limit: int
    #: Blocks holding the search's rarest word.
    blocks: int
    user_id: str | None = None
    exclude_thread: tuple[str, str] | None = None
    also_in_channel: str | None = None

    async def run(self, storage: Provider) -> list[HistoryHit]:
        return await storage.search_history(
            AGENT,
            self.text,
            user_id=self.user_id,
            limit=self.limit,
            also_in_channel=self.also_in_channel,
            exclude_thread=self.exclude_thread,
        )


async def searches(storage: Provider, layout: Layout, words: Words, per_kind: int) -> list[Search]:
    """`per_kind` searches of each kind, their words picked from the blocks' word counts;
    a searcher's current thread (left out) is their newest conversation without the hit."""
    rng = _seeded(11)
    blocks = layout.conversations * 10 * BLOCKS_PER_MESSAGE
    pools = {"rare": words.band(*RARE)}
    pools |= {name: words.band(low * blocks, high * blocks) for name, (low, high) in BANDS.items()}
    made = []
    for kind, (band, searcher, limit, target) in KINDS.items():
        for _ in range(per_kind if target else per_kind // 2):
            chosen_words = [rng.choice(pools["moderate" if band == "pair" else band])]
            if band == "pair":
                chosen_words.append(rng.choice(pools["second"]))
            query = " ".join(chosen_words)
            rarest = min(words.blocks_with[word] for word in chosen_words)
            if searcher is None:
                made.append(Search(kind, query, limit, rarest))
                continue
            user, holding = rng.choice(layout.users), None
            if band == "rare":  # someone who wrote it, looking for it again
                hit = (await Search(kind, query, 1, rarest).run(storage))[0]
                holding = hit.conversation_id - 1
                user = layout.owner(holding)
            current = next(i for i in reversed(layout.of_user[user]) if i != holding)
            channel, thread = layout.thread(current)
            made.append(
                Search(
                    kind,
                    query,
                    limit,
                    rarest,
                    user,
                    (channel, thread),
                    channel if searcher == "channel" else None,
                )
            )
    rng.shuffle(made)
    return made


async def measure(storage: Provider, planned: list[Search]) -> list[tuple[Search, float, int]]:
    """Each search once, in order: (search, seconds, hits)."""
    for warm_up in planned[:10]:
        await warm_up.run(storage)
    timings = []
    for search in planned:
        started = time.perf_counter()
        hits = await search.run(storage)
        timings.append((search, time.perf_counter() - started, len(hits)))
    return timings


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(share * len(ordered) + 0.5) - 1)]


def search_table(timings: list[tuple[Search, float, int]]) -> list[str]:
    lines = [
        "| search | limit | searches | blocks holding its (rarest) word, median | hits, mean | "
        "p50 (ms) | p95 (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, (_, _, limit, _) in KINDS.items():
        mine = [(s, seconds * 1e3, hits) for s, seconds, hits in timings if s.kind == kind]
        if not mine:
            continue
        ms = [each[1] for each in mine]
        holding = statistics.median(s.blocks for s, _, _ in mine)
        lines.append(
            f"| {kind} | {limit} | {len(mine)} | {holding:,.0f} | "
            f"{statistics.mean(h for _, _, h in mine):.1f} | {_percentile(ms, 0.5):.1f} | "
            f"{_percentile(ms, 0.95):.1f} | {max(ms):.1f} |"
        )
    target = [seconds * 1e3 for s, seconds, _ in timings if KINDS[s.kind][3]]
    lines.append(
        f"| **the six target kinds** | | {len(target)} | | | **{_percentile(target, 0.5):.1f}** | "
        f"**{_percentile(target, 0.95):.1f}** | {max(target):.1f} |"
    )
    return lines


class _Explain(Executable, ClauseElement):
    """`prefix` (EXPLAIN ...) before a statement, its parameters bound as usual."""

    inherit_cache = False

    def __init__(self, prefix: str, statement: ClauseElement) -> None:
        self.prefix, self.statement = prefix, statement


@compiles(_Explain)
def _explain_sql(element: _Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return element.prefix + compiler.process(element.statement, **kw)


async def plan(storage: Provider, conn: AsyncConnection, index: Any, search: Search) -> list[str]:
    """The database's plan of `search`'s statement, as the provider builds it."""
    statements: list[ClauseElement] = []
    fetch = storage.db.fetch

    async def capture(stmt: ClauseElement, values: Any = None) -> list[Any]:
        statements.append(stmt)
        return await fetch(stmt, values)

    with patch.object(storage.db, "fetch", side_effect=capture):
        await search.run(storage)
    result = await conn.execute(_Explain(index.explain, statements[0]))
    if index.explain.startswith("EXPLAIN QUERY PLAN"):
        depth: dict[int, int] = {0: 0}
        lines = []
        for node, parent, _, detail in result:
            depth[node] = depth.get(parent, 0) + 1
            lines.append("  " * (depth[node] - 1) + detail)
        return lines
    keys = list(result.keys())
    header = [" | ".join(keys)] if len(keys) > 1 else []
    return header + [" | ".join(str(value) for value in row) for row in result]


@dataclass
class Appends:
    """Per-append latencies (s) of each round, with the index and without it."""

    rounds: dict[bool, list[list[float]]] = field(default_factory=lambda: {True: [], False: []})
    rebuilds_s: list[float] = field(default_factory=list)

    def mean_us(self, with_index: bool) -> float:
        return statistics.median(statistics.mean(r) for r in self.rounds[with_index]) * 1e6

    def row(self, with_index: bool) -> str:
        every = [s * 1e6 for r in self.rounds[with_index] for s in r]
        means = ", ".join(f"{statistics.mean(r) * 1e6:,.0f}" for r in self.rounds[with_index])
        state = "with" if with_index else "without"
        return (
            f"| {state} | {means} | {self.mean_us(with_index):,.0f} | "
            f"{_percentile(every, 0.5):,.0f} | {_percentile(every, 0.99):,.0f} | "
            f"{max(every):,.0f} |"
        )


async def appends(
    storage: Provider, conn: AsyncConnection, index: Any, words: Words, per_round: int, rounds: int
) -> tuple[Appends, bool]:
    """`rounds` rounds of `per_round` appends each way, in the order ABBA ABBA ... (A: with
    the index; where building it again is slow, AAAAA BBBBB), after a round with it to warm
    up; whether the index is on at the end."""
    rng, figures, on = _seeded(5), Appends(), True
    kinds = ("user_text", "preamble", "answer")
    order = [True, False, False, True] * rounds if index.rebuild_is_cheap else [True, False]
    order = order[: 2 * rounds] if index.rebuild_is_cheap else sorted(order * rounds)[::-1]
    for number, with_index in enumerate([True, *order]):
        if with_index != on:
            if with_index:
                figures.rebuilds_s.append(await timed_s(conn, index.on))
            else:
                await index.off(conn)
            on = with_index
        conversation = await storage.get_or_create_conversation(AGENT, "CAPPEND", f"a{number}")
        messages = [
            await storage.create_message(conversation, "U0APPEND", "a", "a")
            for _ in range(-(-per_round // 10))
        ]
        texts = [words.text(rng, kinds[n % 3], count=False) for n in range(per_round)]
        latencies = []
        for n, body in enumerate(texts):
            started = time.perf_counter()
            await storage.append_text_block(messages[n // 10], body, is_user=n % 3 == 0)
            latencies.append(time.perf_counter() - started)
        if number:
            figures.rounds[with_index].append(latencies)
    return figures, on


async def erase(storage: Provider, person: str) -> str:
    started = time.perf_counter()
    receipt = await storage.erase_user(person)
    wall = time.perf_counter() - started
    counts = " / ".join(f"{value:,}" for value in receipt.counts.values())
    longest = receipt.longest_batch_ms
    return f"{wall:.2f} s ({receipt.batches} batches, longest {longest:.0f} ms; {counts})"


async def run(url: str, label: str, blocks: int, args: argparse.Namespace) -> None:
    """Prints the figures of `blocks` blocks on `url`: the searches' as soon as they are
    done (the append rounds can take long), then the rest."""
    layout = Layout(blocks // (MESSAGES * BLOCKS_PER_MESSAGE))
    rng = _seeded(3)
    words = Words(rng)

    def say(what: str) -> None:
        print(f"{label}, {blocks:,} blocks: {what}", file=sys.stderr, flush=True)

    async with opened_provider(url) as storage, maintenance(url) as conn:
        index = INDEXES[storage.db.dialect_name]()
        if not index.fill_with_index:
            await index.off(conn)
        filled = await fill(storage, layout, words, rng)
        say(f"filled in {filled.total_s:.0f} s")
        index_s = 0.0 if index.fill_with_index else await timed_s(conn, index.on)
        settle_s = await timed_s(conn, index.settle)
        say(f"index {index_s:.0f} s, ANALYZE {settle_s:.0f} s")
        planned = await searches(storage, layout, words, args.searches)
        passes = {"": await measure(storage, planned)}
        if index.optimize is not None:
            started = time.perf_counter()
            await conn.execute(text(index.optimize))
            optimize_s = time.perf_counter() - started
            passes[f", after FTS5 'optimize' ({optimize_s:.1f} s)"] = await measure(
                storage, planned
            )
        say("searched")
        plans = []
        for target in (True, False):
            group = [timing for timing in passes[""] if KINDS[timing[0].kind][3] == target]
            slowest = max(group, key=lambda timing: timing[1])
            plans.append((slowest, await plan(storage, conn, index, slowest[0])))
        lines = [f"### {label}, {filled.blocks:,} blocks (executor: {storage.db.executor_kind})"]
        for name, timings in passes.items():
            lines += ["", f"Searches{name}:", "", *search_table(timings)]
        for (search, seconds, hits), lines_of_plan in plans:
            lines += [
                "",
                f"Plan of the slowest {'target ' if KINDS[search.kind][3] else 'other '}search "
                f"({search.kind}: {search.text!r}, {seconds * 1e3:.0f} ms, {hits} hits):",
                "",
                "```",
                *lines_of_plan,
                "```",
            ]
        print("\n".join(lines), flush=True)
        erased_with = await erase(storage, ERASED[0])
        say("erased")
        appended, on = await appends(storage, conn, index, words, args.appends, args.rounds)
        if on:
            await index.off(conn)
        erased_without = await erase(storage, ERASED[1])

    ratio = appended.mean_us(True) / appended.mean_us(False)
    people = len(layout.users) + len(ERASED)
    typical = len(layout.of_user[layout.users[0]])
    rebuilds = ", ".join(f"{s:.0f} s" for s in appended.rebuilds_s) or "never"
    rows: list[str | None] = [
        "",
        f"{label}, {filled.blocks:,} blocks, the rest:",
        "",
        "| | |",
        "|---|---:|",
        f"| conversations / messages / blocks / text blocks | {layout.conversations:,} / "
        f"{filled.messages:,} / {filled.blocks:,} / {filled.text_blocks:,} |",
        f"| people / conversations each | {people:,} / {typical} (erased people: 100) |",
        f"| distinct words in the text | {len(words.blocks_with):,} |",
        f"| fill (s), of it making the rows in Python | {filled.total_s:.0f}, {filled.python_s:.0f}"
        f"{' (with the index)' if index.fill_with_index else ''} |",
        f"| index built after the fill (s) | {index_s:.1f} |" if index_s else None,
        f"| ANALYZE (s) | {settle_s:.1f} |",
        f"| erase_user, 1,000 messages, index on: wall (conversations / messages / blocks / "
        f"tool calls / tokens) | {erased_with} |",
        f"| the same, index off | {erased_without} |",
        f"| append_text_block, mean per append, with / without the index (µs) | "
        f"{appended.mean_us(True):,.0f} / {appended.mean_us(False):,.0f} = **{ratio:.2f}x** |",
    ]
    lines = [row for row in rows if row is not None]
    lines += [
        "",
        f"append_text_block, {args.appends:,} appends a round (µs; index built again between "
        f"rounds: {rebuilds}):",
        "",
        "| index | round means | median of round means | p50 | p99 | max |",
        "|---|---|---:|---:|---:|---:|",
        appended.row(True),
        appended.row(False),
    ]
    print("\n".join(lines) + "\n", flush=True)


def _database(backend: str) -> AbstractAsyncContextManager[str]:
    """A new, empty database on `backend`, removed afterwards."""
    return scratch_database(MYSQL) if backend == "mysql" else empty_database(backend)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    parser.add_argument("--blocks", default="100000,1000000", help="sizes, comma-separated")
    parser.add_argument("--searches", type=int, default=40, help="searches of each kind (40)")
    parser.add_argument("--appends", type=int, default=2_000, help="appends a round (2,000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds each way (5)")
    args = parser.parse_args()
    wanted = list(BACKENDS) if args.backend == "all" else [args.backend]
    sizes = [int(size) for size in args.blocks.split(",")]
    if min(sizes) < 50_000:
        print("error: --blocks: at least 50000 (1,000 conversations)", file=sys.stderr)
        return 2
    if args.searches < 2:
        print("error: --searches: at least 2 (the other kinds run half as many)", file=sys.stderr)
        return 2
    if "mysql" in wanted and not os.environ.get(MYSQL_ENV):
        print(f"error: set {MYSQL_ENV} to measure MariaDB", file=sys.stderr)
        return 2
    if "postgresql" in wanted and chosen("postgresql") is None:
        return 2
    for backend in wanted:
        for size in sizes:
            async with _database(backend) as url:
                await run(url, BACKENDS[backend], size, args)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
