"""SQLite's search index takes new blocks in batches (migration 0009), and a search still
finds every block the moment it is committed.

- Blocks on both sides of the index's `done` are found; the newest hits cross it in order.
- Deletes and changes of indexed and not-yet-indexed blocks, at random: after each step
  the index holds exactly the text blocks up to `done`, and the search condition gives
  what a plain reading of the table gives.
- A rowid SQLite hands out again (below `done`) goes into the index at once.
- The append whose id starts a batch, cancelled at every await point: all of it or none.
- Migration 0009 up and down on a database with history: nothing lost either way.

SQLite only (file and memory, both executors): other databases index every write as it
happens (tests/test_search.py).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from slack_agents_sa import Provider
from slack_agents_sa.database import make_engine
from slack_agents_sa.migrate import downgrade, upgrade
from slack_agents_sa.models import SEARCH_TABLE, Block, Conversation, Message, table_of
from slack_agents_sa.search_text import indexed_words
from slack_agents_sa.settings import normalize_url
from tests.databases import (
    SQLITE_FILE,
    SQLITE_FILE_SQLALCHEMY,
    SQLITE_MEMORY,
    backend_params,
    opened_provider,
)
from tests.search_index import (
    BATCH,
    assert_search_index_matches_the_blocks,
    indexed_up_to,
)

AGENT = "helper"
SQLITE = backend_params([SQLITE_FILE, SQLITE_FILE_SQLALCHEMY, SQLITE_MEMORY])
_blocks = table_of(Block)


async def a_message(storage: Provider, thread_id: str = "1.1") -> int:
    conversation_id = await storage.get_or_create_conversation(AGENT, "C1", thread_id, "ops")
    return await storage.create_message(conversation_id, "U1", "Ann", "ann")


async def write_blocks(storage: Provider, message_id: int, texts: list[str | None]) -> None:
    """One block per entry in one statement (the triggers fire for each row): a text block
    for a text, a tool block (no `search_text`) for None."""
    rows = [
        {
            "message_id": message_id,
            "block_type": "user_text" if words is not None else "tool_use",
            "in_history": True,
            "content": {"text": words if words is not None else "tool output"},
            "search_text": indexed_words(words) if words is not None else None,
        }
        for words in texts
    ]

    async def written(conn: AsyncConnection) -> None:
        await conn.execute(insert(_blocks), rows)

    await storage.db.run_transaction(written)


async def max_block_id(storage: Provider) -> int:
    rows = await storage.db.fetch(select(func.coalesce(func.max(_blocks.c.id), 0)))
    return int(rows[0][0])


async def found_ids(storage: Provider, words: str) -> set[int]:
    """The blocks the backend's search condition finds for `words` (FTS5 and the scan)."""
    condition = storage.db.backend.text_search.condition(words.split(), "simple")
    return {int(row[0]) for row in await storage.db.fetch(select(Block.id).where(condition))}


async def ids_holding(storage: Provider, words: str) -> set[int]:
    """The same, read plainly from the table: the reference."""
    wanted = set(words.split())
    rows = await storage.db.fetch(
        select(_blocks.c.id, _blocks.c.search_text).where(_blocks.c.search_text.is_not(None))
    )
    return {int(block_id) for block_id, held in rows if wanted <= set(held.split())}


@pytest.mark.parametrize("fresh_url", SQLITE, indirect=True)
async def test_every_block_is_found_before_and_after_its_batch(provider: Provider) -> None:
    message_id = await a_message(provider)
    total = 3 * BATCH + 60  # ids 1..1596: batches at 512, 1023 and 1534
    await write_blocks(provider, message_id, [f"kestrel entry{n}" for n in range(total - 3)])
    for n in range(total - 3, total):  # the last three through the provider's own append
        await provider.append_text_block(message_id, f"kestrel entry{n}", is_user=True)

    done = await indexed_up_to(provider)
    assert done == 3 * BATCH - 3 and await max_block_id(provider) == total
    for n in (0, done - 2, done - 1, done, total - 4, total - 1):  # ids n + 1
        [hit] = await provider.search_history(AGENT, f"entry{n}")
        assert hit.snippet == f"kestrel entry{n}"
    newest = await provider.search_history(AGENT, "kestrel", limit=200)  # crosses `done`
    assert [hit.snippet for hit in newest] == [
        f"kestrel entry{n}" for n in range(total - 1, total - 201, -1)
    ]
    await assert_search_index_matches_the_blocks(provider)


@pytest.mark.parametrize("fresh_url", SQLITE, indirect=True)
async def test_deletes_and_changes_on_both_sides_of_done_keep_the_index_exact(
    provider: Provider,
) -> None:
    rng = random.Random(9)  # noqa: S311 - test data, not secrets
    vocabulary = [f"w{n}" for n in range(12)]
    message_id = await a_message(provider)

    def some_text() -> str | None:
        return None if rng.random() < 0.3 else " ".join(rng.sample(vocabulary, 3))

    async def some_ids(count: int) -> list[int]:
        rows = await provider.db.fetch(select(_blocks.c.id))
        ids = [int(row[0]) for row in rows]
        return rng.sample(ids, min(count, len(ids)))

    for step in range(40):
        action = rng.choice(("write", "write", "delete", "change"))
        if action == "write":
            await write_blocks(
                provider, message_id, [some_text() for _ in range(rng.randint(1, 300))]
            )
        elif action == "delete":
            doomed = await some_ids(rng.randint(1, 80))
            await provider.db.execute(delete(_blocks).where(_blocks.c.id.in_(doomed)))
        else:
            for block_id in await some_ids(rng.randint(1, 20)):
                words = some_text()
                await provider.db.execute(
                    update(_blocks).where(_blocks.c.id == block_id).values(search_text=words)
                )
        await assert_search_index_matches_the_blocks(provider)
        for words in ("w1", "w2 w3", rng.choice(vocabulary)):
            assert await found_ids(provider, words) == await ids_holding(provider, words), (
                f"step {step} ({action}), {words!r}"
            )
    assert await indexed_up_to(provider) > BATCH  # batches did run


@pytest.mark.parametrize("fresh_url", SQLITE, indirect=True)
async def test_a_rowid_handed_out_again_below_done_is_indexed_at_once(
    provider: Provider,
) -> None:
    """SQLite gives a new row the highest rowid plus one, so after the newest blocks are
    deleted a new block can get an id the index has already passed."""
    message_id = await a_message(provider)
    await write_blocks(provider, message_id, [f"plover old{n}" for n in range(BATCH + 40)])
    done = await indexed_up_to(provider)
    assert done == BATCH - 1
    await provider.db.execute(delete(_blocks).where(_blocks.c.id > done - 10))
    await provider.append_text_block(message_id, "plover reborn", is_user=True)
    assert await max_block_id(provider) == done - 9  # below `done`: indexed by its insert
    [hit] = await provider.search_history(AGENT, "reborn")
    assert hit.snippet == "plover reborn"
    await assert_search_index_matches_the_blocks(provider)
    await write_blocks(provider, message_id, [f"plover new{n}" for n in range(BATCH + 20)])
    assert await indexed_up_to(provider) > done
    assert len(await found_ids(provider, "plover")) == await max_block_id(provider)
    await assert_search_index_matches_the_blocks(provider)


@pytest.mark.parametrize("fresh_url", SQLITE, indirect=True)
async def test_the_append_that_starts_a_batch_cancelled_at_every_await_point(
    provider: Provider,
) -> None:
    message_id = await a_message(provider)
    cancelled = 0
    async with asyncio.timeout(120):
        for turns in range(1, 200):
            done = await indexed_up_to(provider)
            filler = done + BATCH - 1 - await max_block_id(provider)
            await write_blocks(provider, message_id, [f"filler x{turns}"] * filler)
            before = await max_block_id(provider)  # the next block starts a batch
            task = asyncio.ensure_future(
                provider.append_text_block(message_id, f"swift turn{turns}", is_user=True)
            )
            for _ in range(turns):
                if task.done():
                    break
                await asyncio.sleep(0)
            finished = task.done()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                cancelled += 1
            written = await max_block_id(provider) - before
            assert written in (0, 1)
            # All or nothing: the batch ran with the block, or neither happened.
            assert await indexed_up_to(provider) == (before if written else done)
            assert len(await found_ids(provider, f"x{turns}")) == filler
            assert len(await found_ids(provider, f"turn{turns}")) == written
            if finished:
                break  # done before the cancel could land: every point was tried
    assert cancelled >= 1, "the append was never cancelled: the test proved nothing"
    await assert_search_index_matches_the_blocks(provider)
    await provider.append_text_block(message_id, "swift after", is_user=True)
    assert len(await provider.search_history(AGENT, "swift after")) == 1


async def _word_counts(url: str, words: list[str]) -> dict[str, int]:
    """How many blocks the FTS5 table itself finds for each word (no scan of newer blocks)."""
    engine = make_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:
            found = f"SELECT count(*) FROM {SEARCH_TABLE} WHERE {SEARCH_TABLE} MATCH :word"
            return {
                word: int((await conn.execute(text(found), {"word": word})).scalar_one())
                for word in words
            }
    finally:
        await engine.dispose()


async def test_migration_0009_up_and_down_loses_no_block(tmp_path: Path) -> None:
    (tmp_path / "db.sqlite").touch()
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(normalize_url(url))
    try:
        await upgrade(engine, "0008")
        async with engine.begin() as conn:  # history as 0008's triggers indexed it
            await conn.execute(
                insert(table_of(Conversation)).values(
                    agent_name=AGENT, channel_id="C1", thread_id="1.1", channel_name="ops"
                )
            )
            await conn.execute(
                insert(table_of(Message)).values(
                    conversation_id=1, user_id="U1", user_name="Ann", user_handle="ann"
                )
            )
            await conn.execute(
                insert(_blocks),
                [
                    {
                        "message_id": 1,
                        "block_type": "user_text",
                        "in_history": True,
                        "content": {"text": f"tern before{n}"},
                        "search_text": f"tern before{n}",
                    }
                    for n in range(700)
                ],
            )
        await upgrade(engine)
        async with opened_provider(url) as storage:
            assert await indexed_up_to(storage) == 700
            await assert_search_index_matches_the_blocks(storage)
            message_id = await storage.create_message(1, "U2", "Bo", "bo")
            for n in range(30):
                await storage.append_text_block(message_id, f"tern after{n}", is_user=True)
            assert len(await storage.search_history(AGENT, "tern", limit=200)) == 200
            [hit] = await storage.search_history(AGENT, "after29")
            assert hit.author_user_id == "U2"
        await downgrade(engine, "0008")  # the blocks past `done` go into the index
        assert await _word_counts(url, ["tern", "before0", "after29"]) == {
            "tern": 730,
            "before0": 1,
            "after29": 1,
        }
        await upgrade(engine)
        async with opened_provider(url) as storage:
            assert await indexed_up_to(storage) == 730
            await assert_search_index_matches_the_blocks(storage)
            [hit] = await storage.search_history(AGENT, "after29")
            assert hit.snippet == "tern after29"
    finally:
        await engine.dispose()
