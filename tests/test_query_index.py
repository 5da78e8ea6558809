"""PostgreSQL: `query` through its GIN index (migration 0008) gives the reference's answer,
with the index and without it, and its statements use the index under a generic plan.

The index holds `{namespace: [top-level strings]}` of the documents jsonb can read; any
other document (NUL, a lone surrogate, a string holding a backslash and a u that looks like
such an escape; over 128 KiB) is held as `{namespace: null}`, and every query reads those of
its namespace. Python decides equality on the decoded values either way.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from slack_agents_sa import Provider, keyvalue
from tests.databases import POSTGRES, opened_provider, scratch_database
from tests.reference import ReferenceStore

INDEXES = ("ix_agents_kv_entries_query", "ix_agents_list_items_query")
#: Held as `{namespace: null}`: jsonb cannot read them, or (a backslash and a u) they look so.
UNREADABLE = ["a\x00b", "\x00", "a\ud800b", "\udfff", "\\u0000", "\\ud800"]
#: Escaped in our JSON text (`\u001b`, `\n`, `\\`) and read by jsonb all the same.
ESCAPED = ["\x1b[1m", "\x01", "\\u0041", "\\", "a\\b", '"', "a\nb\t"]
STRINGS = ["x", "X", "x ", "", "1", "null", "true", "é", "👋🏽", "\x7f"]
ALL_STRINGS = [*STRINGS, *ESCAPED, *UNREADABLE]
#: Field names a JSON path or a SQL string would treat as more than a name.
ODD_NAMES = ['a"b', "a'b", "a.b", "$", "$.x", "{}", "{", "[0]", "*", "a\\b", "", " ", "é"]
#: Past 128 KiB of JSON text: held as null (a number this long overflows jsonb's numeric).
HUGE_DIGITS = 140_000
#: Provider options: each executor, and the native one with the unnamed statements the
#: `pgbouncer` option makes it use (planned for their values each time, as behind PgBouncer;
#: no PgBouncer needed for that).
OPTIONS = [
    pytest.param({}, id="postgresql", marks=pytest.mark.native),
    pytest.param(
        {"executor": "sqlalchemy"}, id="postgresql-sqlalchemy", marks=pytest.mark.sqlalchemy
    ),
    pytest.param({"pgbouncer": True}, id="postgresql-unnamed-statements", marks=pytest.mark.native),
]


def _documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for value in ALL_STRINGS:
        documents += [
            {"k": value},
            {"k": value, "j": "y"},
            {"k": [value]},
            {"k": {"k": value}},
            {"other": value},
            {value: "k"},
            {"k": "x", "other": value},
        ]
    for name in ODD_NAMES:
        documents += [{name: "v"}, {name: name}, {"k": name}]
    documents += [
        {"n": 1},
        {"n": "1"},
        {"n": 1.0},
        {"n": True},
        {"n": None},
        {"id": "1", "k": "x"},
        {"k": "x", "big": "y" * 140_000},
        {"k": "x", "deep": _nested(500)},
    ]
    return documents


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"k": "x"}
    for _ in range(depth):
        value = {"k": value}
    return value


def _filters() -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = [{"k": value} for value in ALL_STRINGS]
    filters += [{"other": value} for value in ALL_STRINGS]
    filters += [{value: "k"} for value in ALL_STRINGS]
    filters += [{name: "v"} for name in ODD_NAMES] + [{name: name} for name in ODD_NAMES]
    filters += [
        {"k": "x", "j": "y"},
        {"k": "x", "other": "a\x00b"},
        {"n": "1"},
        {"n": 1},
        {"n": True},
        {"n": None},
        {"id": "1"},
        {"id": "1", "k": "x"},
        {"k": ["x"]},
        {"k": {"k": "x"}},
        {"missing": None, "k": "x"},
        {"missing": "x"},
        {},
    ]
    return filters


@contextmanager
def _long_ints() -> Iterator[None]:
    """Python writes and reads a 140,000-digit int only with its digit limit lifted."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(limit)


async def _fill(stores: list[Any]) -> None:
    for index, document in enumerate(_documents()):
        for store in stores:
            # The same documents in a second namespace: a query never sees them.
            for namespace in ("ns", "other ns"):
                await store.set(namespace, f"key-{index:03}", document)
                await store.append(namespace, f"list-{index % 3}", document)


async def _answers(storage: Provider | ReferenceStore) -> list[list[dict[str, Any]]]:
    return [await storage.query("ns", filters) for filters in _filters()]


async def _database_setting(url: str, setting: str) -> None:
    database = make_url(url).database
    async with opened_provider(url) as storage, storage.db.engine.begin() as conn:
        await conn.execute(text(f'ALTER DATABASE "{database}" {setting}'))


@pytest.mark.parametrize("options", OPTIONS)
async def test_query_gives_the_reference_answer_through_the_index_and_without_it(
    options: dict[str, Any],
) -> None:
    reference = ReferenceStore()
    async with scratch_database(POSTGRES) as url:
        async with opened_provider(url, **options) as storage:
            await _fill([storage, reference])
        expected = await _answers(reference)
        assert any(expected[:-1]) and expected[-1], "the filters find something"
        # With sequential scans off, every filtered query goes through the index.
        await _database_setting(url, "SET enable_seqscan = off")
        async with opened_provider(url, **options) as storage:
            assert await _answers(storage) == expected
        await _database_setting(url, "RESET enable_seqscan")
        async with opened_provider(url, **options) as storage:
            async with storage.db.engine.begin() as conn:
                for index in INDEXES:
                    await conn.execute(text(f"DROP INDEX {index}"))
            assert await _answers(storage) == expected


async def _plan(conn: AsyncConnection, sql: str, arguments: str) -> str:
    await conn.exec_driver_sql(f"PREPARE query_plan AS {sql}")
    try:
        rows = await conn.exec_driver_sql(f"EXPLAIN EXECUTE query_plan({arguments})")
        return "\n".join(row[0] for row in rows)
    finally:
        await conn.exec_driver_sql("DEALLOCATE query_plan")


@pytest.mark.parametrize("plans", ["force_generic_plan", "force_custom_plan"])
@pytest.mark.parametrize("filters", [(1, 1), (1, 2), (0, 1)], ids=["1-1", "1-2", "0-1"])
async def test_query_statements_use_the_index_under_generic_and_custom_plans(
    plans: str, filters: tuple[int, int]
) -> None:
    # asyncpg prepares each statement once per connection: after five runs PostgreSQL may
    # keep a generic plan, made without the values. Behind PgBouncer every statement is the
    # unnamed one, planned for its values (a custom plan).
    async with scratch_database(POSTGRES) as url, opened_provider(url) as storage:
        for index in range(1_000):
            await storage.set("ns", f"key-{index}", {"state": "done", "n": index})
        for index in range(100):
            await storage.append("ns", "events", {"state": "done", "n": index})
        backend = storage.db.backend
        stmt = keyvalue._query_statement(backend, *filters)
        sql = str(stmt.compile(dialect=storage.db.engine.dialect))
        arguments = ", ".join(["'ns'"] + ["'working'"] * sum(filters))
        async with storage.db.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
            await conn.execute(text(f"SET LOCAL plan_cache_mode = {plans}"))
            await conn.execute(text("SET LOCAL enable_seqscan = off"))  # small tables
            plan = await _plan(conn, sql, arguments)
    kv_index, items_index = INDEXES
    assert f"Bitmap Index Scan on {kv_index}" in plan, plan
    assert (f"Bitmap Index Scan on {items_index}" in plan) == (filters[0] > 0), plan
    assert "Seq Scan" not in plan, plan


async def test_only_documents_jsonb_cannot_read_or_over_128_kib_are_held_as_null() -> None:
    # The rows SQL gives back for a value no document holds: those held as null, which
    # every query of the namespace reads.
    documents = {f"unreadable-{i}": {"k": value} for i, value in enumerate(UNREADABLE)}
    documents |= {f"escaped-{i}": {"k": value} for i, value in enumerate([*ESCAPED, *STRINGS])}
    documents |= {"big": {"k": "x" * 140_000}, "almost big": {"k": "x" * 130_000}}
    async with scratch_database(POSTGRES) as url, opened_provider(url) as storage:
        for key, document in documents.items():
            await storage.set("ns", key, document)
        stmt = keyvalue._query_statement(storage.db.backend, 0, 1)
        values = {"namespace": "ns", "entry_field_0": "k", "entry_value_0": "nowhere"}
        held_as_null = {row.key for row in await storage.db.fetch(stmt, values)}
    assert held_as_null == {*(key for key in documents if key.startswith("unreadable")), "big"}


@pytest.mark.parametrize("options", OPTIONS)
async def test_documents_jsonb_cannot_read_are_written_and_found(options: dict[str, Any]) -> None:
    # Each of these would fail a jsonb cast inside the index, and with it the write.
    documents = [{"k": "x", "v": value} for value in UNREADABLE]
    documents.append({"k": "x", "v": 10**HUGE_DIGITS})
    with _long_ints():
        async with scratch_database(POSTGRES) as url, opened_provider(url, **options) as storage:
            for index, document in enumerate(documents):
                await storage.set("ns", f"key-{index}", document)
            item_ids = [await storage.append("ns", "list", document) for document in documents]
            found = await storage.query("ns", {"k": "x"})
    appended = [{**document, "id": id_} for document, id_ in zip(documents, item_ids, strict=True)]
    assert found == appended + documents  # keys key-0 to key-7: their order is the list's
