"""Option `search_language` (PostgreSQL): searches with another text search configuration,
through an index rebuilt for it as docs/search.md says; a bad name never reaches SQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from slack_agents_sa import ConfigError, Provider
from tests.databases import POSTGRES, scratch_database
from tests.databases import opened_provider as opened

#: docs/search.md, "Another language on PostgreSQL".
REBUILD_FOR_ENGLISH = (
    "DROP INDEX ix_agents_blocks_search",
    "CREATE INDEX ix_agents_blocks_search ON agents_blocks "
    "USING gin (to_tsvector('english'::regconfig, search_text))",
)


@pytest.mark.parametrize(
    "bad", ["English", "simple'; DROP TABLE agents_blocks; --", "", "a b", "x" * 64, "1abc"]
)
def test_a_search_language_that_is_not_a_plain_name_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="search_language"):
        Provider(url="sqlite://", search_language=bad)


@pytest.mark.parametrize("executor", ["native", "sqlalchemy"])
async def test_english_finds_inflected_words_through_its_rebuilt_index(executor: str) -> None:
    async with scratch_database(POSTGRES) as url:
        async with opened(url, executor=executor) as storage:
            conversation = await storage.get_or_create_conversation("bot", "C1", "T1")
            message = await storage.create_message(conversation, "U1", "Ann", "ann")
            await storage.append_text_block(message, "We decided on the budgets", is_user=True)
            # 'simple' (the default) finds words as written only.
            assert await storage.search_history("bot", "decide budget") == []
            async with storage.db.engine.begin() as conn:
                for statement in REBUILD_FOR_ENGLISH:
                    await conn.execute(text(statement))
        async with opened(url, executor=executor, search_language="english") as storage:
            hits = await storage.search_history("bot", "decide budget", user_id="U1")
            assert [hit.snippet for hit in hits] == ["We decided on the budgets"]
            async with storage.db.engine.begin() as conn:
                await conn.execute(text("SET LOCAL enable_seqscan = off"))  # one row here
                plan = "\n".join(
                    row[0]
                    for row in await conn.execute(
                        text(
                            "EXPLAIN SELECT id FROM agents_blocks WHERE "
                            "to_tsvector('english'::regconfig, search_text) @@ "
                            "plainto_tsquery('english'::regconfig, 'decide')"
                        )
                    )
                )
            assert "ix_agents_blocks_search" in plan
