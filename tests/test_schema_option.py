"""The PostgreSQL `schema` option: our tables and version table live in a schema of their
own, so several agents (or a host app) share one database without sharing tables."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.errors import ConfigError
from slack_agents_sa.migrate import VERSION_TABLE
from slack_agents_sa.models import OUR_TABLES
from slack_agents_sa.settings import normalize_url
from tests.databases import POSTGRES, scratch_database
from tests.test_cli import run_cli


@pytest.fixture
async def postgres_empty() -> AsyncIterator[str]:
    async with scratch_database(POSTGRES) as url:
        yield url


async def _tables(url: str) -> dict[str | None, set[str]]:
    engine = create_async_engine(normalize_url(url))
    try:
        async with engine.connect() as conn:

            def names(sync: object) -> dict[str | None, set[str]]:
                inspector = inspect(sync)
                return {
                    schema: set(inspector.get_table_names(schema=schema))
                    for schema in (None, "tenant_a", "tenant_b")
                    if schema is None or schema in inspector.get_schema_names()
                }

            return await conn.run_sync(names)
    finally:
        await engine.dispose()


async def test_two_schemas_in_one_database_keep_their_data_apart(postgres_empty: str) -> None:
    a = Provider(url=postgres_empty, schema="tenant_a")
    b = Provider(url=postgres_empty, schema="tenant_b")
    for storage in (a, b):
        await storage.initialize()
    try:
        await a.set("ns", "k", {"tenant": "a"})
        await b.set("ns", "k", {"tenant": "b"})
        conversation_a = await a.get_or_create_conversation("bot", "C1", "1.1")
        assert await a.get("ns", "k") == {"tenant": "a"}
        assert await b.get("ns", "k") == {"tenant": "b"}
        assert not await b.has_conversation("bot", "C1", "1.1")
        assert await a.get_or_create_conversation("bot", "C1", "1.1") == conversation_a
    finally:
        for storage in (a, b):
            await storage.close()
    tables = await _tables(postgres_empty)
    ours = OUR_TABLES | {VERSION_TABLE}
    assert tables[None] == set()  # nothing in public
    assert tables["tenant_a"] == ours
    assert tables["tenant_b"] == ours

    # migrate: false finds the schema at head; the CLI sees it with --schema.
    checked = Provider(url=postgres_empty, schema="tenant_a", migrate=False)
    await checked.initialize()
    await checked.close()
    result = run_cli("--url", postgres_empty, "--schema", "tenant_a", "check")
    assert result.returncode == 0, result.stderr
    assert run_cli("--url", postgres_empty, "check").returncode == 4  # public is empty


@pytest.mark.parametrize(
    ("url", "schema", "message"),
    [
        ("sqlite:///x.db", "tenant", "supported on PostgreSQL only"),
        ("postgresql://u@h/db", "Tenant; DROP", "String should match pattern"),
    ],
)
def test_bad_schema_options_are_config_errors(url: str, schema: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Provider(url=url, schema=schema)
