"""`erase_user` of one person among 100k blocks of others, while another person's agent
writes: how long it takes, whether its receipt is right, and what it costs the live agent.

    .venv/bin/python -m benchmarks.erasure [--backend sqlite|postgresql|mysql|all]

Other users' 2,000 conversations (10 messages of 5 blocks, one a tool call) are filled with
plain SQL in bulk; the person's 1,000 turns (`tests.conversation_rows.turn`: 5 blocks, 1 tool
call) over 100 conversations, 50 of them shared with another user, and OAuth tokens go
through the provider. The dry run is timed alone; the erasure (default executor, batches of
10) while a third user's agent writes turns in a thread of its own and round the shared
threads, which the batches lock. Prints figures and checks (docs/dev/erasure-figures.md),
never asserts on time. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from sqlalchemy import Select, func, select, text

from benchmarks.bulk_sql import bulk_sql
from benchmarks.databases import LABELS, chosen, empty_database
from benchmarks.prune_scale import _summary, _timed
from benchmarks.scaling import FILL_BASE
from slack_agents_sa import Provider
from slack_agents_sa.erasure import DEFAULT_BATCH_SIZE, ERASED_TABLES, ErasureReceipt
from slack_agents_sa.models import Message, OAuthToken, table_of
from tests.conversation_rows import BLOCKS_PER_TURN, NO_ORPHANS, conversation, orphans
from tests.databases import MYSQL, MYSQL_ENV, opened_provider, scratch_database
from tests.samples import TOKEN

BACKENDS = {**LABELS, "mysql": "MariaDB"}
BACKGROUND_CONVERSATIONS = 2_000
MESSAGES_PER_CONVERSATION = 10
BLOCKS_PER_MESSAGE = 5
#: Distinct authors of the background messages.
BACKGROUND_USERS = 97
#: The person erased: the author `tests.conversation_rows.turn` writes as.
PERSON = "U1"
#: Writes in the person's shared conversations; keeps its messages and token.
OTHER = "U0OTHER"
#: The live agent's user.
LIVE = "U0LIVE"
AGENT = "helper"
SERVER = "mcp.example"
#: Conversations only the person wrote in, and ones shared with OTHER.
SOLE = SHARED = 50
#: The person's turns in each conversation, and OTHER's in each shared one.
TURNS = 10
OTHER_TURNS = 5
#: Conversations written at once while the person's data is made.
WRITERS = 8
#: Seconds the live agent writes before the erasure starts.
BASELINE_S = 3.0
#: The receipt's counts: conversations, messages, blocks, tool calls, tokens.
_TURNS = (SOLE + SHARED) * TURNS
EXPECTED = dict(
    zip(ERASED_TABLES, (SOLE, _TURNS, _TURNS * BLOCKS_PER_TURN, _TURNS, 1), strict=True)
)

#: `bulk_sql`'s parts for MariaDB (benchmarks/bulk_sql.py knows SQLite and PostgreSQL);
#: seq_* is its SEQUENCE engine, read as a range of its key.
_MARIADB_PARTS = {
    "series": "(SELECT seq AS x FROM seq_0_to_4294967295 WHERE seq BETWEEN :first AND :last) g",
    "now": "utc_timestamp(6)",
    "old": "utc_timestamp(6) - INTERVAL 120 DAY",
    "true": "true",
    "json": "",
}
_ANALYZE = {
    "mysql": "ANALYZE TABLE agents_conversations, agents_messages, agents_blocks, "
    "agents_tool_calls, agents_oauth_tokens",
}

_messages = table_of(Message)
_tokens = table_of(OAuthToken)


async def _fill_sql(storage: Provider, statement: str, **params: int) -> None:
    """`bulk_sql`, on MariaDB too."""
    if storage.db.dialect_name not in ("mysql", "mariadb"):
        await bulk_sql(storage, statement, **params)
        return
    async with storage.db.transaction() as conn:
        await conn.execute(text(statement.format(**_MARIADB_PARTS)), params)


async def fill_background(storage: Provider) -> None:
    """Other users' conversations, each row's id computed from its parent's (no division:
    MariaDB's `/` is not an integer one), far above the ids the provider then hands out."""
    await _fill_sql(
        storage,
        "INSERT INTO agents_conversations (id, agent_name, channel_id, thread_id, created_at) "
        f"SELECT {FILL_BASE} + x, 'bench', 'C', CAST(x AS CHAR(20)), {{now}} FROM {{series}}",
        first=1,
        last=BACKGROUND_CONVERSATIONS,
    )
    await _fill_sql(
        storage,
        "INSERT INTO agents_messages (id, conversation_id, user_id, user_name, user_handle, "
        f"created_at) SELECT c.id * {MESSAGES_PER_CONVERSATION} + x, c.id, "
        f"CAST((c.id + x) % {BACKGROUND_USERS} AS CHAR(20)), 'n', 'h', {{now}} "
        "FROM agents_conversations c, {series}",
        first=0,
        last=MESSAGES_PER_CONVERSATION - 1,
    )
    await _fill_sql(
        storage,
        "INSERT INTO agents_blocks (id, message_id, block_type, in_history, content, created_at) "
        f"SELECT m.id * {BLOCKS_PER_MESSAGE} + x, m.id, "
        "CASE WHEN x = 0 THEN 'tool_use' ELSE 'text' END, {true}, "
        'CASE WHEN x = 0 THEN NULL ELSE \'{{"text": "hello there"}}\'{json} END, {now} '
        "FROM agents_messages m, {series}",
        first=0,
        last=BLOCKS_PER_MESSAGE - 1,
    )
    await _fill_sql(
        storage,
        "INSERT INTO agents_tool_calls (block_id, tool_call_id, tool_name, tool_input, "
        "tool_output, is_error) SELECT id, CAST(id AS CHAR(20)), 't', '{{\"q\": 1}}'{json}, "
        "'out', NOT {true} FROM agents_blocks WHERE block_type = 'tool_use'",
    )


async def _exchange(
    storage: Provider,
    conversation_id: int,
    user: str,
    tag: str,
    latencies: list[float],
    written: list[int],
) -> None:
    """A turn of someone other than the person: a message (its id to `written`), its
    question and answer."""
    message = await _timed(latencies, storage.create_message(conversation_id, user, user, user))
    written.append(message)
    await _timed(latencies, storage.append_text_block(message, f"question {tag}", is_user=True))
    await _timed(latencies, storage.append_text_block(message, f"answer {tag}"))


async def fill_person(storage: Provider) -> list[int]:
    """The person's conversations (odd ones shared with OTHER) and both their tokens; the
    shared conversations' ids."""
    gate = asyncio.Semaphore(WRITERS)

    async def one(number: int) -> int:
        async with gate:
            thread = f"erase-{number}"
            conversation_id = await storage.get_or_create_conversation(AGENT, "C1", thread, "ops")
            if number % 2:
                for turn in range(OTHER_TURNS):
                    tag = f"{number}-{turn}"
                    await _exchange(storage, conversation_id, OTHER, tag, [], [])
            await conversation(storage, thread, TURNS, agent=AGENT)
            return conversation_id

    ids = await asyncio.gather(*(one(number) for number in range(SOLE + SHARED)))
    await storage.put_oauth_token(PERSON, SERVER, TOKEN)
    await storage.put_oauth_token(OTHER, SERVER, TOKEN)
    return ids[1::2]


@dataclass
class LiveAgent:
    """Another person's agent writing turns, round `threads`, until stopped; its call
    latencies go to the phase its turn started in, its errors are kept, not raised, and
    the messages it wrote are counted again after the erasure."""

    storage: Provider
    threads: list[int]
    phase: str = "before"
    samples: dict[str, list[float]] = field(default_factory=lambda: {"before": [], "during": []})
    written: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        turn = 0
        while not stop.is_set():
            thread = self.threads[turn % len(self.threads)]
            latencies = self.samples[self.phase]
            try:
                await _exchange(self.storage, thread, LIVE, str(turn), latencies, self.written)
            except Exception as error:
                self.errors.append(f"{type(error).__name__}: {error}")
                await asyncio.sleep(0.05)
            turn += 1


async def _messages_of(storage: Provider, *users: str, but: bool = False) -> int:
    """Messages written by `users` (with `but`: by anyone else)."""
    of_users = _messages.c.user_id.in_(users)
    stmt: Select[int] = select(func.count()).select_from(_messages)
    stmt = stmt.where(~of_users if but else of_users)
    return int((await storage.db.execute(stmt)).scalar_one())


def _counts(receipt: ErasureReceipt) -> str:
    found = " / ".join(f"{receipt.counts[table]:,}" for table in ERASED_TABLES)
    return found + (" (as expected)" if receipt.counts == EXPECTED else " (**DIFFERS**)")


async def _checks_after(
    storage: Provider,
    kept: int,
    shared: list[int],
    agents: list[LiveAgent],
    receipt: ErasureReceipt,
) -> list[str]:
    """What must hold after the erasure, each broken one said in words: the shared
    conversations trimmed, the others deleted, only the person's rows gone."""
    problems = []
    deleted, trimmed = set(receipt.deleted_conversations), set(receipt.trimmed_conversations)
    if trimmed != set(shared) or len(deleted) != SOLE or deleted & trimmed:
        problems.append(
            f"conversations deleted / trimmed {len(deleted)} / {len(trimmed)}, "
            f"trimmed {'=' if trimmed == set(shared) else '!='} the shared ones"
        )
    if left := await _messages_of(storage, PERSON):
        problems.append(f"{left:,} of the person's messages left")
    if (others := await _messages_of(storage, PERSON, LIVE, but=True)) != kept:
        problems.append(f"others' messages {others:,}, were {kept:,}")
    written = sum(len(agent.written) for agent in agents)
    if (live := await _messages_of(storage, LIVE)) != written:
        problems.append(f"live agent's messages {live:,}, it wrote {written:,}")
    tokens = {}
    for user in (PERSON, OTHER):
        stmt = select(func.count()).select_from(_tokens).where(_tokens.c.user_id == user)
        tokens[user] = int((await storage.db.execute(stmt)).scalar_one())
    if tokens != {PERSON: 0, OTHER: 1}:
        problems.append(f"tokens left {tokens}")
    if (found := await orphans(storage)) != NO_ORPHANS:
        problems.append(f"orphans {found}")
    again = await storage.erase_user(PERSON, dry_run=True)
    if any(again.counts.values()):
        problems.append(f"a second dry run still finds {again.counts}")
    return problems


async def run(url: str, label: str) -> list[str]:
    async with opened_provider(url) as storage, opened_provider(url) as live:
        started = time.perf_counter()
        await fill_background(storage)
        background_s = time.perf_counter() - started
        started = time.perf_counter()
        shared = await fill_person(storage)
        person_s = time.perf_counter() - started
        print(f"{label}: filled in {background_s:.1f} + {person_s:.1f} s", file=sys.stderr)
        async with storage.db.statement() as conn:
            await conn.execute(text(_ANALYZE.get(storage.db.dialect_name, "ANALYZE")))

        started = time.perf_counter()
        dry = await storage.erase_user(PERSON, dry_run=True)
        dry_s = time.perf_counter() - started

        kept = await _messages_of(storage, PERSON, LIVE, but=True)
        own = await live.get_or_create_conversation(AGENT, "C1", "live-own", "ops")
        agents = [LiveAgent(live, [own]), LiveAgent(live, shared)]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(agent.run(stop)) for agent in agents]
        await asyncio.sleep(BASELINE_S)
        for agent in agents:
            agent.phase = "during"
        started = time.perf_counter()
        receipt = await storage.erase_user(PERSON)
        erase_s = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks)
        problems = await _checks_after(storage, kept, shared, agents, receipt)
        executor = storage.db.executor_kind

    errors = [error for agent in agents for error in agent.errors]
    messages = BACKGROUND_CONVERSATIONS * MESSAGES_PER_CONVERSATION
    lines = [
        f"### {label} (executor: {executor})",
        "",
        "| | |",
        "|---|---:|",
        f"| background: conversations / messages / blocks / tool calls | "
        f"{BACKGROUND_CONVERSATIONS:,} / {messages:,} / {messages * BLOCKS_PER_MESSAGE:,} / "
        f"{messages:,} |",
        f"| fill: background (SQL) + the person's data (provider) (s) | "
        f"{background_s:.1f} + {person_s:.1f} |",
        f"| dry run (s) | {dry_s:.2f} |",
        f"| erasure, wall (s) | {erase_s:.2f} |",
        f"| batches of {DEFAULT_BATCH_SIZE} conversations | {receipt.batches} "
        f"(dry run: {dry.batches}) |",
        f"| longest batch (ms) | {receipt.longest_batch_ms:.0f} |",
        "| receipt: conversations / messages / blocks / tool calls / tokens | "
        f"{_counts(receipt)} |",
        f"| dry run's receipt | {_counts(dry)} |",
        f"| checks after | {'; '.join(problems) or 'all hold'} |",
        f"| live agent errors | {len(errors)}{': ' + errors[0] if errors else ''} |",
        "",
        "| live agent | phase | calls | p50 (ms) | p99 (ms) | max (ms) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, agent in zip(("own thread", "shared threads"), agents, strict=True):
        for phase, window in (("before", BASELINE_S), ("during", erase_s)):
            if agent.samples[phase]:
                summary = _summary(agent.samples[phase])
                lines.append(f"| {name} | {phase} ({window:.1f} s) | {summary} |")
    return lines


def _database(backend: str) -> AbstractAsyncContextManager[str]:
    """A new, empty database on `backend`, removed afterwards."""
    return scratch_database(MYSQL) if backend == "mysql" else empty_database(backend)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    args = parser.parse_args()
    wanted = list(BACKENDS) if args.backend == "all" else [args.backend]
    if "mysql" in wanted and not os.environ.get(MYSQL_ENV):
        print(f"error: set {MYSQL_ENV} to measure MariaDB", file=sys.stderr)
        return 2
    if "postgresql" in wanted and chosen("postgresql") is None:
        return 2
    sections = []
    for backend in wanted:
        print(f"{BACKENDS[backend]} ...", file=sys.stderr)
        async with _database(backend) as url:
            sections.append(await run(url, BACKENDS[backend]))
    print("\n\n".join("\n".join(section) for section in sections))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
