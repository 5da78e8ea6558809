"""SQLite's FTS5 search index in tests: put every block into it at once, and check that it
holds exactly what its triggers promise (migration 0009)."""

from __future__ import annotations

import re

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from slack_agents_sa import Provider
from slack_agents_sa.models import SEARCH_TABLE, Block, table_of

_blocks = table_of(Block)
#: A word as FTS5's unicode61 tokenizer reads ASCII (letters and digits).
_WORD = re.compile(r"[^\W_]+")
STATE_TABLE = f"{SEARCH_TABLE}_state"
#: Blocks between two batches of the triggers (migration 0009).
BATCH = 512


def is_sqlite(storage: Provider) -> bool:
    return storage.db.dialect_name == "sqlite"


async def indexed_up_to(storage: Provider) -> int:
    """SQLite: the index's `done` (every block up to it is in the index, none above)."""
    rows = await storage.db.fetch(text(f"SELECT done FROM {STATE_TABLE}"))
    return int(rows[0][0])


async def catch_up(conn: AsyncConnection) -> None:
    """SQLite: every block past the index's `done` into it now, as the next batch would put
    them, and `done` moved past them (in the caller's transaction)."""
    done = f"(SELECT done FROM {STATE_TABLE})"
    await conn.execute(
        text(
            f"INSERT INTO {SEARCH_TABLE} (rowid, search_text) SELECT id, search_text "
            f"FROM agents_blocks WHERE id > {done} AND search_text IS NOT NULL"
        )
    )
    await conn.execute(
        text(
            f"UPDATE {STATE_TABLE} "
            "SET done = max(done, (SELECT coalesce(max(id), 0) FROM agents_blocks))"
        )
    )


async def index_every_block(storage: Provider) -> None:
    """SQLite: every block into the index now (a search then goes through FTS5 alone);
    other databases index every write already."""
    if is_sqlite(storage):
        await storage.db.run_transaction(catch_up)


async def assert_search_index_matches_the_blocks(storage: Provider) -> None:
    """SQLite: the FTS5 index holds the words of exactly the text blocks up to its `done`,
    each as its text is now (a deleted block's or a replaced text's words would be left
    behind: found by a search, or making FTS5's own 'delete' corrupt the index).

    FTS5's `integrity-check` checks the index itself; its check against the content table
    (rank 1) cannot serve, as it expects every row of `agents_blocks` indexed, and only the
    text blocks up to `done` are. So the index's entries are read through `fts5vocab` and
    compared with the blocks' text (tokenized as FTS5's unicode61 does ASCII: words,
    lower-cased)."""
    if not is_sqlite(storage):
        return
    await storage.db.execute(
        text(f"INSERT INTO {SEARCH_TABLE} ({SEARCH_TABLE}) VALUES ('integrity-check')")
    )

    async def entries(conn: AsyncConnection) -> dict[int, set[str]]:
        await conn.execute(
            text(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.search_terms "
                f"USING fts5vocab(main, {SEARCH_TABLE}, instance)"
            )
        )
        found: dict[int, set[str]] = {}
        for term, doc in await conn.execute(text("SELECT term, doc FROM temp.search_terms")):
            found.setdefault(int(doc), set()).add(term)
        return found

    indexed = await storage.db.run(entries)
    done = await indexed_up_to(storage)
    texts = select(_blocks.c.id, _blocks.c.search_text).where(
        _blocks.c.search_text.is_not(None), _blocks.c.id <= done
    )
    expected = {
        int(block_id): set(_WORD.findall(words.lower()))
        for block_id, words in map(tuple, await storage.db.fetch(texts))
    }
    assert indexed == {block_id: words for block_id, words in expected.items() if words}
