"""The PostgreSQL `schema` option: our tables and version table live in a schema of their
own, so several agents (or a host app) share one database without sharing tables."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.errors import ConfigError
from slack_agents_sa.migrate import VERSION_TABLE
from slack_agents_sa.models import OUR_TABLES
from slack_agents_sa.settings import normalize_url
from tests.databases import POSTGRES, scratch_database
from tests.test_cli import agent_config, run_cli


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


async def test_the_command_line_works_on_the_schema_of_the_agents_config(
    postgres_empty: str, tmp_path: Path
) -> None:
    config = agent_config(tmp_path, f'url: "{postgres_empty}"\nschema: tenant_b')
    upgraded = run_cli("--config", str(config), "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    tables = await _tables(postgres_empty)
    assert tables[None] == set()  # nothing in public
    assert tables["tenant_b"] == OUR_TABLES | {VERSION_TABLE}

    storage = Provider(url=postgres_empty, schema="tenant_b")
    await storage.initialize()
    try:
        conversation = await storage.get_or_create_conversation("agent", "C1", "T1")
        await storage.create_message(conversation, "U1", "user", "@user")
    finally:
        await storage.close()
    stats = run_cli("--config", str(config), "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert [agent["agent"] for agent in json.loads(stats.stdout)["agents"]] == ["agent"]
    assert run_cli("--config", str(config), "check").returncode == 0

    other = run_cli("--config", str(config), "--schema", "tenant_a", "check")
    assert other.returncode == 2
    assert "--schema tenant_a and the schema 'tenant_b' of --config" in other.stderr
