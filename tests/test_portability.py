"""Compile-time portability: the schema and every statement the provider issues compile for
dialects we cannot run here (SQL Server, Oracle), so nothing PostgreSQL- or SQLite-only slips
into the portable code unnoticed.

The statements are the ones a real run issues: the provider works through every public
method on SQLite while an engine event records each statement. Upserts are the one known
dialect-specific construct (`Backend.upsert`, in `slack_agents_sa/backends/`);
docs/dialects.md names it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_agents.conversations import ConversationManager
from sqlalchemy import event
from sqlalchemy.dialects import mssql, oracle
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql import ClauseElement, Executable, Insert

from slack_agents_sa import Provider
from slack_agents_sa.models import OUR_TABLES, metadata
from tests.agent_turns import drive_conversation
from tests.samples import CLIENT, TOKEN

COMPILE_ONLY: list[Dialect] = [mssql.dialect(), oracle.dialect()]  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("dialect", COMPILE_ONLY, ids=lambda dialect: dialect.name)
def test_every_table_and_index_compiles(dialect: Dialect) -> None:
    for table in metadata.sorted_tables:
        if table.name not in OUR_TABLES:
            continue  # a host app's table another test put on the shared metadata
        assert str(CreateTable(table).compile(dialect=dialect))
        for index in table.indexes:
            assert str(CreateIndex(index).compile(dialect=dialect))


async def _every_public_call(provider: Provider) -> None:
    cm = ConversationManager(provider)
    conversation_id = await drive_conversation(cm)
    await cm.get_messages(conversation_id)
    await provider.has_conversation("helper", "C042", "1700000000.000100")
    await provider.get_tool_call("toolu_weather_1")
    await provider.upsert_heartbeat("helper", 1.5)
    await provider.get_heartbeat("helper")
    now = datetime.now(UTC)
    await provider.get_conversations_for_export(
        "helper", handle="ann", date_from=now - timedelta(days=1), date_to=now.isoformat()
    )
    await provider.get_messages_with_blocks(conversation_id)
    await provider.set("ns", "k", {"v": 1})
    await provider.get("ns", "k")
    await provider.append("ns", "list", {"v": 2})
    await provider.get_list("ns", "list")
    await provider.query("ns", {"v": 2})
    await provider.delete("ns", "k")
    await provider.put_oauth_token("U1", "srv", TOKEN)
    await provider.get_oauth_token("U1", "srv")
    await provider.delete_oauth_token("U1", "srv")
    await provider.put_oauth_client("srv", "https://cb", CLIENT)
    await provider.get_oauth_client("srv", "https://cb")
    await provider.delete_oauth_client("srv", "https://cb")


async def _issued_statements(tmp_path: Path) -> list[Executable]:
    # SQLAlchemy's path, whose `before_execute` event sees each statement object: the
    # provider builds the same objects on either executor (test_executors compiles the
    # module-level ones natively on every dialect).
    provider = Provider(
        url=f"sqlite+aiosqlite:///{tmp_path / 'portable.db'}", executor="sqlalchemy"
    )
    await provider.initialize()
    assert provider.db.executor_kind == "sqlalchemy"
    issued: list[Executable] = []

    def record(_conn: Any, clause: Any, *_args: Any) -> None:
        issued.append(clause)

    event.listen(provider.db.engine.sync_engine, "before_execute", record)
    try:
        await _every_public_call(provider)
    finally:
        await provider.close()
    return issued


def _is_upsert(statement: Executable) -> bool:
    return isinstance(statement, Insert) and (
        getattr(statement, "_post_values_clause", None) is not None
    )


async def test_every_statement_the_provider_issues_compiles_for_other_dialects(
    tmp_path: Path,
) -> None:
    issued = await _issued_statements(tmp_path)
    assert len(issued) > 30, "the run should exercise every public method"
    portable = [statement for statement in issued if not _is_upsert(statement)]
    upserts = [statement for statement in issued if _is_upsert(statement)]
    # Conversations, heartbeats, key-value set and the two OAuth puts.
    assert {statement.table.name for statement in upserts} == {  # type: ignore[attr-defined]
        "agents_conversations",
        "agents_heartbeats",
        "agents_kv_entries",
        "agents_oauth_tokens",
        "agents_oauth_clients",
    }
    for dialect in COMPILE_ONLY:
        for statement in portable:
            assert isinstance(statement, ClauseElement)
            assert str(statement.compile(dialect=dialect)), statement
