"""The compiled-statement cache and the row type of the executors (`executors/compiled.py`,
`executors/rows.py`): bounded, shared by equal statements, never running a statement with
another statement's literal values, UPDATE defaults from `onupdate=`, one row type.

No database server: statements are compiled for each dialect, and run through the
standard library's sqlite3 where execution must be shown.
"""

from __future__ import annotations

import gc
import pickle
import sqlite3
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    ColumnClause,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    delete,
    exc,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql import ClauseElement

from slack_agents_sa.executors.compiled import _MANY_ROWS, CompiledStatement
from slack_agents_sa.executors.rows import NativeRow, row_class, rows_of
from slack_agents_sa.executors.statement_cache import StatementCache
from slack_agents_sa.types import PortableJSON, UTCDateTime

_metadata = MetaData()
_t = Table(
    "t",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("x", Integer),
    Column("s", String(50)),
    Column("updated", Integer, default=lambda: 1, onupdate=lambda: 2),
    Column("stamp", Integer, default=10, onupdate=20),
)

DIALECTS: dict[str, Callable[[], Dialect]] = {
    "sqlite": sqlite.dialect,
    "postgresql": postgresql.asyncpg.dialect,
    "mysql": mysql.asyncmy.dialect,
}


@pytest.fixture(params=list(DIALECTS))
def dialect(request: pytest.FixtureRequest) -> Dialect:
    return DIALECTS[request.param]()


class _Uncached(ColumnClause[Any]):
    """A construct SQLAlchemy makes no cache key for (`inherit_cache = False`)."""

    inherit_cache = False


def _arguments(cache: StatementCache, stmt: ClauseElement, **values: Any) -> list[Any]:
    return cache.get(stmt, values).arguments(values)[1]


# --- 1. bounded, and shared by equal statements -------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda n: select(_t.c.id).where(_t.c.x == n), id="one-shape"),
        pytest.param(lambda n: select(_t.c.id.label(f"c{n}")).where(_t.c.x == n), id="shapes"),
        pytest.param(lambda n: select(_t.c.id, _Uncached(f"c{n}")), id="no-cache-key"),
    ],
)
def test_statements_built_per_call_are_let_go_beyond_the_bound(
    dialect: Dialect, build: Callable[[int], ClauseElement]
) -> None:
    cache = StatementCache(dialect, size=50)
    alive: list[weakref.ref[ClauseElement]] = []

    def call(n: int) -> None:
        stmt = build(n)
        alive.append(weakref.ref(stmt))
        cache.get(stmt, {}).arguments({})

    for n in range(1000):
        call(n)
    gc.collect()
    assert len(cache) <= 50
    assert sum(ref() is not None for ref in alive) <= 50


def test_equal_statements_built_separately_share_one_compilation(dialect: Dialect) -> None:
    cache = StatementCache(dialect)
    first = select(_t.c.id).where(_t.c.x == bindparam("x"))
    second = select(_t.c.id).where(_t.c.x == bindparam("x"))
    assert first is not second
    a, b = cache.get(first, {"x": 1}), cache.get(second, {"x": 1})
    assert cache.compilations == 1 and len(cache) == 1
    assert a.sql == b.sql
    assert a._form is b._form
    # Another set of value names is another compilation (column_keys differ).
    cache.get(insert(_t), {"x": 1})
    cache.get(insert(_t), {"x": 1, "s": "a"})
    assert cache.compilations == 3


def test_a_statement_met_again_is_found_by_identity(dialect: Dialect) -> None:
    cache = StatementCache(dialect)
    stmt = select(_t.c.id).where(_t.c.x == bindparam("x"))
    found = cache.get(stmt, {"x": 1})
    assert cache.get(stmt, {"x": 2}) is found
    assert cache.compilations == 1


def test_a_statement_in_use_outlives_a_flood_of_statements_built_per_call(
    dialect: Dialect,
) -> None:
    """Least recently used goes first: a module-level statement run now and then stays."""
    cache = StatementCache(dialect, size=20)
    hot = select(_t.c.s).where(_t.c.id == bindparam("id"))
    cache.get(hot, {"id": 1})
    for n in range(500):
        cache.get(select(_t.c.id.label(f"c{n}")), {})
        if n % 10 == 0:
            cache.get(hot, {"id": n})
    compiled_before = cache.compilations
    cache.get(hot, {"id": 1})
    assert cache.compilations == compiled_before == 501


def test_the_bound_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least one"):
        StatementCache(sqlite.dialect(), size=0)


# --- 2. literal values: each statement's own ------------------------------------------------


_DEFAULTED = select(_t.c.id).where(_t.c.x == bindparam("x", value=5))

#: Statements with one cache key and different literal values, built separately, the call's
#: values, and the values each must run with (in SQLite's placeholder order).
SAME_KEY = [
    pytest.param(
        select(_t.c.id).where(_t.c.x == 5),
        select(_t.c.id).where(_t.c.x == 7),
        {},
        [5],
        [7],
        id="where-literal",
    ),
    pytest.param(
        _DEFAULTED,
        select(_t.c.id).where(_t.c.x == bindparam("x", value=7)),
        {},
        [5],
        [7],
        id="bindparam-value",
    ),
    pytest.param(_DEFAULTED, _DEFAULTED.params(x=9), {}, [5], [9], id="params"),
    pytest.param(
        select(_t.c.id).where(_t.c.x == bindparam("x")),
        select(_t.c.id).where(_t.c.x == bindparam("x", value=8)),
        {"x": 3},
        [3],
        [3],
        id="required-then-valued-with-the-calls-value",
    ),
    pytest.param(
        select(_t.c.id).where(_t.c.x == bindparam("x", value=8)),
        select(_t.c.id).where(_t.c.x == bindparam("x")),
        {},
        [8],
        None,
        id="valued-then-required",
    ),
    pytest.param(
        insert(_t).values(x=5, s="a"),
        insert(_t).values(x=7, s="b"),
        {},
        [5, "a", 1, 10],
        [7, "b", 1, 10],
        id="insert-values",
    ),
    pytest.param(
        update(_t).values(x=5).where(_t.c.id == 1),
        update(_t).values(x=7).where(_t.c.id == 2),
        {},
        [5, 2, 20, 1],
        [7, 2, 20, 2],
        id="update-values",
    ),
    pytest.param(
        delete(_t).where(_t.c.s == "a"),
        delete(_t).where(_t.c.s == "b"),
        {},
        ["a"],
        ["b"],
        id="delete",
    ),
    pytest.param(
        select(_t.c.id).where(_t.c.x.in_([1, 2, 3]), _t.c.s == "a"),
        select(_t.c.id).where(_t.c.x.in_([4, 5]), _t.c.s == "b"),
        {},
        [1, 2, 3, "a"],
        [4, 5, "b"],
        id="in-list",
    ),
    pytest.param(
        select(_t.c.id).limit(5), select(_t.c.id).limit(9), {}, [5, 0], [9, 0], id="limit"
    ),
    pytest.param(
        text("SELECT :a, :b").bindparams(a=1, b="x"),
        text("SELECT :a, :b").bindparams(a=2, b="y"),
        {},
        [1, "x"],
        [2, "y"],
        id="text",
    ),
]


@pytest.mark.parametrize(("first", "second", "values", "one", "two"), SAME_KEY)
def test_statements_sharing_a_cache_key_each_run_with_their_own_literals(
    first: ClauseElement,
    second: ClauseElement,
    values: dict[str, Any],
    one: list[Any],
    two: list[Any] | None,
) -> None:
    first_key, second_key = first._generate_cache_key(), second._generate_cache_key()
    assert first_key is not None and first_key == second_key
    cache = StatementCache(sqlite.dialect())
    assert cache.get(first, values).arguments(values)[1] == one
    if two is None:  # the second statement lacks a value the first had: never borrowed
        with pytest.raises(exc.StatementError, match="A value is required"):
            cache.get(second, values).arguments(values)
    else:
        assert cache.get(second, values).arguments(values)[1] == two
    assert cache.get(first, values).arguments(values)[1] == one
    assert cache.compilations == 1


def test_literals_are_each_statements_own_on_every_dialect(dialect: Dialect) -> None:
    cache = StatementCache(dialect)
    five, seven = select(_t.c.id).where(_t.c.x == 5), select(_t.c.id).where(_t.c.x == 7)
    assert _arguments(cache, five) == [5]
    assert _arguments(cache, seven) == [7]
    expanded = [select(_t.c.id).where(_t.c.x.in_(values)) for values in ([1, 2], [3, 4, 5])]
    assert _arguments(cache, expanded[0]) == [1, 2]
    assert _arguments(cache, expanded[1]) == [3, 4, 5]
    assert _arguments(cache, five) == [5]
    # The call's value wins over the statement's.
    defaulted = select(_t.c.id).where(_t.c.x == bindparam("x", value=5))
    assert _arguments(cache, defaulted) == [5]
    assert _arguments(cache, defaulted, x=6) == [6]
    assert cache.compilations == 4


def test_a_value_neither_the_call_nor_the_statement_gives_is_refused(dialect: Dialect) -> None:
    cache = StatementCache(dialect)
    stmt = select(_t.c.id).where(_t.c.x == bindparam("x"))
    with pytest.raises(exc.StatementError, match="bind parameter 'x'") as refused:
        cache.get(stmt, {}).arguments({})
    assert isinstance(refused.value.orig, exc.InvalidRequestError)  # as on SQLAlchemy's path


def test_a_bind_callable_runs_per_call(dialect: Dialect) -> None:
    counter = iter(range(100))
    stmt = select(_t.c.id).where(_t.c.x == bindparam("x", callable_=lambda: next(counter)))
    compiled = StatementCache(dialect).get(stmt, {})
    assert [compiled.arguments({})[1] for _ in range(3)] == [[0], [1], [2]]


def test_statements_without_a_cache_key_keep_their_own_literals(dialect: Dialect) -> None:
    cache = StatementCache(dialect)
    first = select(_t.c.id, _Uncached("c")).where(_t.c.x == 5)
    second = select(_t.c.id, _Uncached("c")).where(_t.c.x == 7)
    assert first._generate_cache_key() is None
    assert _arguments(cache, first) == [5]
    assert _arguments(cache, second) == [7]
    assert _arguments(cache, first) == [5]
    assert cache.compilations == 2


# --- 3. Python-side defaults: `default=` on INSERT, `onupdate=` on UPDATE -----------------


def test_insert_takes_default_and_update_takes_onupdate(dialect: Dialect) -> None:
    cache = StatementCache(dialect)
    sql, inserted = cache.get(insert(_t), {"x": 1}).arguments({"x": 1})
    assert "updated" in sql and "stamp" in sql
    assert sorted(inserted) == [1, 1, 10]
    stmt = update(_t).where(_t.c.id == bindparam("key")).values(x=bindparam("x"))
    sql, updated = cache.get(stmt, {"x": 5, "key": 9}).arguments({"x": 5, "key": 9})
    assert "updated" in sql and "stamp" in sql
    assert sorted(updated) == [2, 5, 9, 20]
    # A value given wins over both.
    values = {"x": 5, "key": 9, "updated": 7, "stamp": 8}
    assert sorted(cache.get(stmt, values).arguments(values)[1]) == [5, 7, 8, 9]


# --- 4. through sqlite3, against SQLAlchemy's own execution ----------------------------------


def _run(
    conn: sqlite3.Connection, cache: StatementCache, stmt: ClauseElement, **values: Any
) -> Any:
    compiled = cache.get(stmt, values)
    sql, arguments = compiled.arguments(values)
    cursor = conn.execute(sql, arguments)
    return compiled.rows(cursor.fetchall()) if cursor.description else cursor.rowcount


def _steps() -> list[tuple[Any, dict[str, Any]]]:
    """Inserts and updates, each built anew (equal statements, different literals)."""
    steps: list[tuple[Any, dict[str, Any]]] = []
    for n in (5, 7, 9):
        steps.append((insert(_t).values(x=n, s=f"s{n}"), {}))
    steps.append((insert(_t), {"x": 11}))
    for n in (5, 9):
        steps.append((update(_t).where(_t.c.x == n).values(s=f"changed {n}"), {}))
    moved = update(_t).where(_t.c.x == bindparam("n")).values(x=bindparam("to"))
    steps.append((moved, {"n": 11, "to": 12}))
    return steps


def test_native_execution_matches_sqlalchemys_own() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(str(CreateTable(_t).compile(dialect=sqlite.dialect())))
    engine = create_engine("sqlite://")
    _metadata.create_all(engine)
    cache = StatementCache(sqlite.dialect())
    with engine.begin() as theirs:
        for stmt, values in _steps():
            _run(conn, cache, stmt, **values)
            theirs.execute(stmt, values)
        query = select(_t).order_by(_t.c.id)
        result = theirs.execute(query)
        expected = rows_of(list(result.keys()), result.all())
    engine.dispose()
    native = _run(conn, cache, query)
    assert native == expected
    assert [tuple(row) for row in native] == [
        (1, 5, "changed 5", 2, 20),
        (2, 7, "s7", 1, 10),
        (3, 9, "changed 9", 2, 20),
        (4, 12, None, 2, 20),
    ]
    for n, s in ((5, "changed 5"), (7, "s7"), (9, "changed 9")):
        [row] = _run(conn, cache, select(_t.c.s, _t.c.x).where(_t.c.x == n))
        assert (row.s, row.x) == (s, n)
    conn.close()


# --- 5. one row type ---------------------------------------------------------------------


def test_rows_are_tuples_with_attributes_a_mapping_and_fields() -> None:
    [row] = rows_of(["id", "my col", "count(*)", "s"], [(1, "a", 3, None)])
    assert isinstance(row, tuple) and isinstance(row, NativeRow)
    assert hash(row) == hash((1, "a", 3, None))
    assert len(row) == 4 and row[0] == 1 and row[-1] is None and row[1:3] == ("a", 3)
    ident, col, count, s = row
    assert (ident, col, count, s) == (1, "a", 3, None)
    assert row.id == 1 and row.s is None
    assert getattr(row, "my col") == "a" and row._mapping["my col"] == "a"
    assert row._mapping["count(*)"] == 3
    assert row._fields == ("id", "my col", "count(*)", "s")
    assert row._asdict() == {"id": 1, "my col": "a", "count(*)": 3, "s": None}
    assert dict(row._mapping) == row._asdict() and "id" in row._mapping
    assert list(row._mapping) == ["id", "my col", "count(*)", "s"]
    assert row._t == (1, "a", 3, None) and type(row._t) is tuple
    with pytest.raises(KeyError):
        row._mapping["nope"]
    with pytest.raises(AttributeError):
        _ = row.nope
    # Last: mypy takes `row` for a plain tuple after these.
    assert row == (1, "a", 3, None)
    assert (1, "a", 3, None) == row  # noqa: SIM300 - the tuple's side of ==


def test_duplicate_keys_the_first_wins_and_keys_are_never_renamed() -> None:
    [row] = rows_of(["id", "x", "id"], [(1, 2, 3)])
    assert row.id == 1 and row._mapping["id"] == 1 and row[2] == 3
    assert row._fields == ("id", "x", "id")
    assert row._asdict() == {"id": 1, "x": 2}
    assert not hasattr(row, "_0") and not hasattr(row, "_2")


def test_a_key_naming_a_row_method_stays_the_method_as_on_sqlalchemys_row() -> None:
    [row] = rows_of(["count", "index", "_fields"], [(7, 8, 9)])
    assert row.count(7) == 1 and row.index(8) == 1
    assert row._fields == ("count", "index", "_fields")
    assert row._mapping["count"] == 7 and row._mapping["_fields"] == 9


def test_an_unnamed_column_is_reached_by_position_only() -> None:
    [row] = rows_of(["id", None], [(1, 2)])
    assert row._fields == ("id",) and row._asdict() == {"id": 1}
    assert row == (1, 2)


def test_one_class_per_key_tuple_and_rows_pickle() -> None:
    assert row_class(("a", "b")) is row_class(("a", "b"))
    assert row_class(("a", "b")) is not row_class(("b", "a"))
    [row] = rows_of(("a", "my col"), [(1, [2])])
    back = pickle.loads(pickle.dumps(row))  # noqa: S301 - our own bytes
    assert back == row and back.a == 1 and back._mapping["my col"] == [2]


def test_both_paths_give_the_same_rows() -> None:
    """SQLAlchemy's rows (`rows_of(result.keys(), ...)`) and the native ones: same type,
    fields and values."""
    engine = create_engine("sqlite://")
    _metadata.create_all(engine)
    stmt = select(_t.c.id, _t.c.s.label("my col"), _t.c.x).order_by(_t.c.id)
    with engine.begin() as conn:
        conn.execute(insert(_t), [{"x": 1, "s": "a"}, {"x": 2, "s": None}])
        result = conn.execute(stmt)
        theirs = rows_of(list(result.keys()), result.all())
        [sqlalchemy_row, _] = conn.execute(stmt).all()
        raw = conn.exec_driver_sql(str(stmt.compile(dialect=engine.dialect))).fetchall()
    engine.dispose()
    native = CompiledStatement(stmt, sqlite.dialect(), frozenset()).rows(raw)
    assert type(native[0]) is type(theirs[0])
    assert native == theirs == [(1, "a", 1), (2, None, 2)]
    assert native[0]._fields == theirs[0]._fields == sqlalchemy_row._fields
    assert native[0]._asdict() == sqlalchemy_row._asdict()
    assert native[0]._mapping["my col"] == sqlalchemy_row._mapping["my col"] == "a"
    assert native[0] == sqlalchemy_row


@pytest.mark.parametrize("count", [0, 1, _MANY_ROWS - 1, _MANY_ROWS, 3 * _MANY_ROWS])
def test_converted_columns_match_sqlalchemys_rows_few_or_many(count: int) -> None:
    """Results of many rows are converted column by column, of few row by row: both give
    SQLAlchemy's own values (JSON parsed, datetimes made aware, NULLs kept)."""
    table = Table(
        "converted",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("doc", PortableJSON),
        Column("at", UTCDateTime),
        Column("s", String(10)),
    )
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    values = [
        {"doc": None if n % 3 == 0 else {"n": n}, "at": start + timedelta(seconds=n), "s": f"{n}"}
        for n in range(count)
    ]
    stmt = select(table.c.doc, table.c.id, table.c.at, table.c.s).order_by(table.c.id)
    with engine.begin() as conn:
        if values:
            conn.execute(insert(table), values)
        result = conn.execute(stmt)
        theirs = rows_of(list(result.keys()), result.all())
        raw = conn.exec_driver_sql(str(stmt.compile(dialect=engine.dialect))).fetchall()
    engine.dispose()
    native = CompiledStatement(stmt, sqlite.dialect(), frozenset()).rows(raw)
    assert native == theirs
    assert [row.doc for row in native] == [value["doc"] for value in values]
    assert all(row.at.tzinfo is UTC for row in native)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 7, 17, 54, 19, 914797, tzinfo=UTC),
        datetime(2026, 1, 2, tzinfo=UTC),  # no microseconds: still six digits
        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),  # a three-digit year: padded
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=-7))),
    ],
)
def test_sqlite_timestamps_are_the_text_sqlalchemy_writes(moment: datetime) -> None:
    """UTCDateTime on SQLite writes with `isoformat`: the text of SQLAlchemy's own DATETIME
    (which reads it back), for every datetime it can hold."""
    dialect = sqlite.dialect()
    ours = UTCDateTime().dialect_impl(dialect)
    write, read = ours.bind_processor(dialect), ours.result_processor(dialect, None)
    theirs = sqlite.DATETIME().bind_processor(dialect)  # type: ignore[no-untyped-call]
    assert write is not None and read is not None and theirs is not None
    written = write(moment)
    assert written == theirs(moment.astimezone(UTC).replace(tzinfo=None))
    assert read(written) == moment
