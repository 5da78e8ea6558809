"""Compile-only checks for distributed SQL engines (docs/scaling.md, "Distributed SQL").

CockroachDB has its own SQLAlchemy dialect package, `sqlalchemy-cockroachdb`
(`cockroachdb+asyncpg://`): our schema and the provider's statements must compile for it.
Nothing here connects to a CockroachDB server; what compiles may still be refused or behave
differently there (docs/scaling.md says what, point by point). YugabyteDB (YSQL) and Citus
speak PostgreSQL's dialect, which the rest of the suite compiles and runs.

sqlalchemy-cockroachdb 2.0.4 declares `SQLAlchemy<2.1` but loads with 2.1: install it
with `pip install --no-deps sqlalchemy-cockroachdb`, or these tests are skipped (a failure
under SLACK_AGENTS_SA_STRICT=1).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pytest
from sqlalchemy import ClauseElement, Insert
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.schema import CreateIndex, CreateTable

from slack_agents_sa import conversations, export, keyvalue, oauth
from slack_agents_sa.backends import Backend, backend_for
from slack_agents_sa.models import OUR_TABLES, metadata
from tests.statements import UPSERT_SHAPES, module_statements

COCKROACH_URL = "cockroachdb+asyncpg://root@127.0.0.1:26257/agents"
#: Tables with a generated BIGINT id (BIGSERIAL in the DDL).
ID_TABLES = {"agents_conversations", "agents_messages", "agents_blocks", "agents_list_items"}
#: JSON columns: `json` on PostgreSQL, which CockroachDB takes as an alias of JSONB.
JSON_COLUMNS = {
    ("agents_blocks", "content"),
    ("agents_tool_calls", "tool_input"),
    ("agents_kv_entries", "value"),
    ("agents_list_items", "value"),
}


@pytest.fixture(scope="module")
def dialect() -> Dialect:
    # Skipped in the fixture, not at import: a test's skip is what SLACK_AGENTS_SA_STRICT=1
    # turns into a failure (a module skipped at collection would pass unnoticed).
    pytest.importorskip(
        "sqlalchemy_cockroachdb",
        reason="sqlalchemy-cockroachdb is not installed: "
        "pip install --no-deps sqlalchemy-cockroachdb",
    )
    loaded: Dialect = make_url(COCKROACH_URL).get_dialect()()
    return loaded


def _sql(statement: Any, dialect: Dialect) -> str:
    """The statement's SQL for `dialect`, on one line."""
    sql = " ".join(str(statement.compile(dialect=dialect)).split())
    assert sql, statement
    return sql


def test_the_cockroachdb_dialect_loads_on_asyncpg(dialect: Dialect) -> None:
    assert dialect.name == "cockroachdb"
    assert dialect.driver == "asyncpg"
    assert dialect.paramstyle == "numeric_dollar"
    # No backend module of ours yet: the generic Backend (no upsert, no migration lock,
    # no native executor). docs/scaling.md says what a backends/cockroachdb.py would add.
    assert type(backend_for(make_url(COCKROACH_URL))) is Backend


def test_every_table_and_index_compiles(dialect: Dialect) -> None:
    tables = [table for table in metadata.sorted_tables if table.name in OUR_TABLES]
    assert {table.name for table in tables} >= ID_TABLES | {"agents_tool_calls"}
    for table in tables:
        ddl = _sql(CreateTable(table), dialect)
        # A generated id is BIGSERIAL: on CockroachDB that means DEFAULT unique_rowid() by
        # default (serial_normalization = rowid), unique but not in insertion order.
        assert ("BIGSERIAL" in ddl) == (table.name in ID_TABLES), ddl
        for name, column in table.columns.items():
            if (table.name, name) in JSON_COLUMNS:
                assert column.type.compile(dialect=dialect) == "JSON", (table.name, name)
        for index in table.indexes:
            _sql(CreateIndex(index), dialect)


def test_every_module_level_statement_compiles(dialect: Dialect) -> None:
    statements: dict[str, ClauseElement] = {}
    for module in (keyvalue, conversations, oauth, export):
        statements |= {f"{module.__name__}.{n}": s for n, s in module_statements(module).items()}
    assert {
        "slack_agents_sa.keyvalue._GET_LIST",
        "slack_agents_sa.conversations._HISTORY",
        "slack_agents_sa.conversations._INSERT_TOOL_BLOCK_AND_CALL",
        "slack_agents_sa.export._MESSAGES_WITH_BLOCKS",
        "slack_agents_sa.oauth._GET_TOKEN",
    } <= set(statements)
    for name, statement in statements.items():
        sql = _sql(statement, dialect)
        assert "POSTCOMPILE" not in sql, name
    # The tool block and its ToolCall in one statement: a data-modifying CTE.
    tool_block = _sql(conversations._INSERT_TOOL_BLOCK_AND_CALL, dialect)
    assert tool_block.startswith("WITH new_block AS (INSERT INTO agents_blocks"), tool_block
    # The queries whose order comes from a generated id.
    assert "ORDER BY agents_list_items.id" in _sql(keyvalue._GET_LIST, dialect)
    # The history by message id; each message's blocks by id in Python (`in_block_order`).
    history = _sql(conversations._HISTORY, dialect)
    assert history.endswith("ORDER BY agents_messages.id"), history


def test_export_and_query_statements_compile(dialect: Dialect) -> None:
    filters = ("handle", "date_from", "date_to")
    for size in range(len(filters) + 1):
        for chosen in combinations(filters, size):
            _sql(export._conversations_for_export(frozenset(chosen)), dialect)
    # `query` with PostgreSQL's pre-filter through its GIN index (jsonb_set, a jsonpath,
    # casts to text and jsonb), which a CockroachDB backend would inherit, and with none
    # (the generic Backend).
    for backend in (backend_for("postgresql"), backend_for(make_url(COCKROACH_URL))):
        for item_filters, entry_filters in ((0, 0), (1, 1), (2, 3)):
            sql = _sql(keyvalue._query_statement(backend, item_filters, entry_filters), dialect)
            assert ("jsonb_path_query_array" in sql) == (
                backend.name == "postgresql" and item_filters > 0
            ), sql


def test_postgresql_upserts_compile(dialect: Dialect) -> None:
    postgres = backend_for("postgresql")
    generic = backend_for(make_url(COCKROACH_URL))
    for model, columns, keys, update, returning in UPSERT_SHAPES:
        stmt: Insert = postgres.upsert(model, columns, keys, update, returning)
        sql = _sql(stmt, dialect)
        assert "ON CONFLICT (" + ", ".join(keys) + ") DO UPDATE SET" in sql, sql
        assert ("RETURNING" in sql) == returning, sql
        # What a cockroachdb URL gets today: no upsert at all.
        with pytest.raises(NotImplementedError):
            generic.upsert(model, columns, keys, update, returning)
