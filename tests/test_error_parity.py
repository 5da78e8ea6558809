"""One error contract on every path: each failure raises the same class on every backend and
executor (native and `executor: sqlalchemy`), leaves nothing written, and the next call on
the same provider (on the very connection that failed: one lane, one pooled connection)
works.

Each failure is forced for real: a constraint the row breaks, a value no column can take, a
statement that runs or waits past the provider's `statement_timeout` / `lock_timeout`, a
session the server kills, a conflict a trigger raises on every attempt, a bind value
missing in a transaction's second step. Each case runs as a single statement and as the
second step of a transaction whose first step wrote a row that must not remain.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ClauseElement, bindparam, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.database import RETRY_ATTEMPTS
from slack_agents_sa.errors import (
    ConnectionLostError,
    InvalidValueError,
    LockTimeoutError,
    StatementTimeoutError,
    TransactionConflictError,
)
from slack_agents_sa.executors import Step
from slack_agents_sa.models import OUR_TABLES, metadata
from tests.admin import admin_rows, admin_url
from tests.databases import (
    MYSQL_AIOMYSQL,
    PERSISTENT_BACKENDS_BOTH,
    SERVER_BACKENDS,
    Backend,
    backend_params,
    empty_all_tables,
    opened_provider,
)

#: Generous bound on waiting for the server (a killed session, a waiting call) or for a
#: whole test: a busy machine is slow, not stuck.
WAIT_S = 120
_entries = metadata.tables["agents_kv_entries"]
_items = metadata.tables["agents_list_items"]
_messages = metadata.tables["agents_messages"]
_blocks = metadata.tables["agents_blocks"]
#: The row every transaction below writes in its first step: it must never remain.
FRESH = {"namespace": "ns", "key": "fresh", "value": {"v": 1}}
ITEM = {"namespace": "ns", "key": "list", "value": {"n": 1}}
#: Backends where another client can hold a lock the provider waits on.
LOCKABLE = [*PERSISTENT_BACKENDS_BOTH, MYSQL_AIOMYSQL]


def _url_of(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    backend: Backend = request.param
    if backend.storage == "file":
        return f"sqlite+aiosqlite:///{tmp_path / 'agents.db'}"
    url = request.getfixturevalue("server_databases")[backend]
    asyncio.run(empty_all_tables(url))
    return str(url.render_as_string(hide_password=False))


@pytest.fixture(params=backend_params(LOCKABLE))
def lockable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url_of(request, tmp_path)


@pytest.fixture(params=backend_params(SERVER_BACKENDS))
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url_of(request, tmp_path)


@asynccontextmanager
async def _opened(url: str, options: dict[str, Any], **extra: Any) -> AsyncIterator[Provider]:
    """A provider with one connection (lane), so the next call reuses the one that failed;
    the whole test under a hang guard."""
    async with (
        asyncio.timeout(WAIT_S),
        opened_provider(url, **options, pool_size=1, max_overflow=0, **extra) as storage,
    ):
        yield storage


async def _counts(storage: Provider) -> dict[str, int]:
    counted = {}
    for name in sorted(OUR_TABLES):
        [(n,)] = await storage.db.fetch(select(func.count()).select_from(metadata.tables[name]))
        counted[name] = int(n)
    return counted


async def _setup(storage: Provider) -> tuple[int, dict[str, int]]:
    """A message to hang rows on and a kv row `held`; the row counts then."""
    conversation_id = await storage.get_or_create_conversation("bot", "C1", "1.1")
    message_id = await storage.create_message(conversation_id, "U1", "Ann", "ann")
    await storage.set("ns", "held", {"v": 0})
    return message_id, await _counts(storage)


async def _nothing_written_and_next_calls_work(storage: Provider, before: dict[str, int]) -> None:
    assert await _counts(storage) == before
    assert await storage.get("ns", "fresh") is None
    assert await storage.get("ns", "held") == {"v": 0}
    await storage.set("ns", "after", {"v": 2})
    assert await storage.get("ns", "after") == {"v": 2}
    ids = await storage.db.steps([_fresh(), Step(insert(_items), ITEM, returns_id=True)])
    assert isinstance(ids[1], int)
    assert await storage.get("ns", "fresh") == {"v": 1}
    assert await storage.get_list("ns", "list") == [{"n": 1, "id": str(ids[1])}]


def _fresh() -> Step:
    return Step(insert(_entries), FRESH)


def _message(conversation_id: int) -> dict[str, Any]:
    return {"conversation_id": conversation_id, "user_id": "U", "user_name": "n"} | {
        "user_handle": "h"
    }


# --- a constraint violation ----------------------------------------------------------------


async def test_a_constraint_violation_is_an_integrity_error(
    fresh_url: str, provider_options: dict[str, Any]
) -> None:
    async with _opened(fresh_url, provider_options) as storage:
        _message_id, before = await _setup(storage)
        with pytest.raises(ValueError, match="conversation_id=999"):
            await storage.create_message(999, "U1", "Ann", "ann")  # a foreign key
        with pytest.raises(IntegrityError):
            await storage.db.insert_id(insert(_messages), _message(999))
        duplicate = {"namespace": "ns", "key": "held", "value": {"v": 9}}
        with pytest.raises(IntegrityError):
            await storage.db.write(insert(_entries), duplicate)  # the primary key
        with pytest.raises(IntegrityError):
            await storage.db.steps([_fresh(), Step(insert(_messages), _message(999))])
        with pytest.raises(IntegrityError):
            await storage.db.steps([_fresh(), Step(insert(_entries), duplicate)])
        await _nothing_written_and_next_calls_work(storage, before)


# --- a value that cannot be stored ---------------------------------------------------------

#: Block columns each given a value it cannot take, by what is wrong with it.
BAD_VALUES: dict[str, dict[str, Any]] = {
    "not-json": {"content": {"v": {1, 2}}},
    "nan": {"content": {"v": float("nan")}},
    "naive-datetime": {"created_at": datetime(2024, 1, 1)},
    "lone-surrogate-text": {"filename": "a\ud800b"},
    "lone-surrogate-name": {"mimetype": "a\ud800b"},
}


@pytest.mark.parametrize("bad", list(BAD_VALUES))
async def test_a_value_that_cannot_be_stored_is_an_invalid_value_error(
    fresh_url: str, provider_options: dict[str, Any], bad: str
) -> None:
    async with _opened(fresh_url, provider_options) as storage:
        message_id, before = await _setup(storage)
        block = {"message_id": message_id, "block_type": "file", "in_history": True}
        row = block | {"content": {}, "created_at": datetime.now(UTC)} | BAD_VALUES[bad]
        with pytest.raises(InvalidValueError, match="cannot store value"):
            await storage.db.write(insert(_blocks), row)
        with pytest.raises(InvalidValueError, match="cannot store value"):
            await storage.db.steps([_fresh(), Step(insert(_blocks), row, returns_id=True)])
        await _nothing_written_and_next_calls_work(storage, before)


# --- a bind value missing --------------------------------------------------------------------

#: Every value bound by name, so one left out is missing (not a column left to its default).
_NAMED_ITEM = insert(_items).values(
    namespace=bindparam("namespace"), key=bindparam("key"), value=bindparam("value")
)


async def test_a_bind_value_missing_in_a_later_step_is_a_statement_error(
    fresh_url: str, provider_options: dict[str, Any]
) -> None:
    async with _opened(fresh_url, provider_options) as storage:
        _message_id, before = await _setup(storage)
        missing = {"namespace": "ns", "value": {"n": 1}}  # no "key"
        with pytest.raises(StatementError, match="'key'"):
            await storage.db.write(_NAMED_ITEM, missing)
        with pytest.raises(StatementError, match="'key'"):
            await storage.db.steps([_fresh(), Step(_NAMED_ITEM, missing)])
        with pytest.raises(StatementError, match="'key'"):
            await storage.db.steps([_fresh(), Step(_NAMED_ITEM, lambda _previous: missing)])
        await _nothing_written_and_next_calls_work(storage, before)


# --- a statement past `statement_timeout` ----------------------------------------------------


def _slow_statement(dialect: str) -> tuple[ClauseElement, dict[str, Any]]:
    """A statement that runs for a minute or more unless the database stops it."""
    if dialect == "postgresql":
        return text("SELECT 1 FROM pg_sleep(:seconds)"), {"seconds": 60}
    if dialect in ("mysql", "mariadb"):
        return text("SELECT SLEEP(:seconds)"), {"seconds": 60}
    counting = (
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < :rows) "
        "SELECT count(*) FROM c"
    )
    return text(counting), {"rows": 10**9}


async def test_a_statement_past_statement_timeout_is_a_statement_timeout_error(
    fresh_url: str, provider_options: dict[str, Any]
) -> None:
    async with _opened(fresh_url, provider_options, statement_timeout=1.0) as storage:
        _message_id, before = await _setup(storage)
        slow, values = _slow_statement(storage.db.dialect_name)
        with pytest.raises(StatementTimeoutError):
            await storage.db.fetch(slow, values)
        with pytest.raises(StatementTimeoutError):
            await storage.db.steps([_fresh(), Step(slow, values)])
        await _nothing_written_and_next_calls_work(storage, before)


# --- a lock wait past `lock_timeout`, and a session killed while it waits -------------------


@asynccontextmanager
async def _row_held(url: str) -> AsyncIterator[None]:
    """Hold a write lock on the kv row `held` from another client until the block ends (on
    SQLite, the database's write lock)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        other = sqlite3.connect(str(parsed.database), isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            yield
            other.execute("ROLLBACK")
        finally:
            other.close()
        return
    engine = create_async_engine(admin_url(url))
    try:
        async with engine.connect() as conn:
            held = _entries.c.namespace == "ns", _entries.c.key == "held"
            await conn.execute(select(_entries.c.key).where(*held).with_for_update())
            yield
            await conn.rollback()
    finally:
        await engine.dispose()


def _update_held() -> Step:
    held = (_entries.c.namespace == "ns") & (_entries.c.key == "held")
    return Step(update(_entries).where(held), {"value": {"v": 5}})


async def test_a_lock_wait_past_lock_timeout_is_a_lock_timeout_error(
    lockable_url: str, provider_options: dict[str, Any]
) -> None:
    async with _opened(lockable_url, provider_options, lock_timeout=0.5) as storage:
        _message_id, before = await _setup(storage)
        async with _row_held(lockable_url):
            with pytest.raises(LockTimeoutError):
                await storage.set("ns", "held", {"v": 2})
            with pytest.raises(LockTimeoutError):
                await storage.db.steps([_fresh(), _update_held()])
        await _nothing_written_and_next_calls_work(storage, before)


async def _seen[T](probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """What `probe()` finds (not None), asked every 50 ms for up to WAIT_S seconds."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (found := await probe()) is None:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"never saw {what} on the server in {WAIT_S} s")
        await asyncio.sleep(0.05)
    return found


def _is_mysql(url: str) -> bool:
    return make_url(url).get_backend_name() in ("mysql", "mariadb")


async def _session_waiting_on_a_lock(url: str) -> int | None:
    if _is_mysql(url):
        # The statement on the held row (values are inlined on MySQL), which cannot end while
        # the row is held. Not innodb_trx: a cache that polling faster than 100 ms keeps stale.
        statement = (
            "SELECT id FROM information_schema.processlist WHERE db = :database "
            "AND command = 'Query' AND info LIKE '%held%' AND id <> CONNECTION_ID()"
        )
    else:
        statement = (
            "SELECT pid FROM pg_stat_activity WHERE datname = :database "
            "AND wait_event_type = 'Lock'"
        )
    rows = await admin_rows(url, statement, database=make_url(url).database)
    return int(rows[0][0]) if rows else None


async def _gone(url: str, session: int) -> bool | None:
    """True once `session` has ended on the server, else None."""
    if _is_mysql(url):
        statement = "SELECT id FROM information_schema.processlist WHERE id = :session"
    else:
        statement = "SELECT pid FROM pg_stat_activity WHERE pid = :session"
    return None if await admin_rows(url, statement, session=session) else True


async def _kill_while_waiting(url: str, call: Awaitable[Any]) -> None:
    """Run `call` until it waits on the held row, kill its session: ConnectionLostError."""
    running = asyncio.ensure_future(call)

    async def waiting_or_done() -> int | None:
        if running.done():
            pytest.fail(f"the call ended before it waited on the lock: {running.result()!r}")
        return await _session_waiting_on_a_lock(url)

    waiting = await _seen(waiting_or_done, "the call waiting on the lock")
    if _is_mysql(url):
        await admin_rows(url, f"KILL {waiting}")  # KILL takes no bound parameter
    else:
        await admin_rows(url, "SELECT pg_terminate_backend(:pid)", pid=waiting)
    with pytest.raises(ConnectionLostError):
        await running
    await _seen(lambda: _gone(url, waiting), "the killed session ending")


async def test_a_session_killed_by_the_server_is_a_connection_lost_error(
    server_url: str, provider_options: dict[str, Any]
) -> None:
    async with _opened(server_url, provider_options) as storage:
        _message_id, before = await _setup(storage)
        async with _row_held(server_url):
            await _kill_while_waiting(server_url, storage.set("ns", "held", {"v": 2}))
            await _kill_while_waiting(server_url, storage.db.steps([_fresh(), _update_held()]))
        await _nothing_written_and_next_calls_work(storage, before)


# --- a conflict that persists past the retries -----------------------------------------------


@asynccontextmanager
async def _every_insert_conflicts(url: str, table: str) -> AsyncIterator[None]:
    """Every INSERT into `table` rolled back as a deadlock (MySQL) or a serialization
    failure (PostgreSQL) by a trigger, until the block ends."""
    if _is_mysql(url):
        install = [
            f"CREATE TRIGGER sa_parity BEFORE INSERT ON {table} FOR EACH ROW "
            "SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'forced deadlock'"
        ]
        remove = ["DROP TRIGGER IF EXISTS sa_parity"]
    else:
        install = [
            "CREATE FUNCTION sa_parity() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'forced serialization failure' USING ERRCODE = '40001'; END $$",
            f"CREATE TRIGGER sa_parity BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION sa_parity()",
        ]
        remove = [
            f"DROP TRIGGER IF EXISTS sa_parity ON {table}",
            "DROP FUNCTION IF EXISTS sa_parity()",
        ]
    try:
        for statement in install:
            await admin_rows(url, statement)
        yield
    finally:
        for statement in remove:
            await admin_rows(url, statement)


async def test_a_conflict_past_the_retries_is_a_transaction_conflict_error(
    server_url: str, provider_options: dict[str, Any]
) -> None:
    async with _opened(server_url, provider_options) as storage:
        _message_id, before = await _setup(storage)
        async with _every_insert_conflicts(server_url, "agents_list_items"):
            attempts = f"on each of {RETRY_ATTEMPTS} attempts"
            with pytest.raises(TransactionConflictError, match=attempts):
                await storage.append("ns", "list", {"n": 1})
            with pytest.raises(TransactionConflictError, match=attempts):
                await storage.db.steps([_fresh(), Step(insert(_items), ITEM)])
        await _nothing_written_and_next_calls_work(storage, before)


# --- the timeouts do not stop migrations ---------------------------------------------------


async def test_a_provider_with_both_timeouts_migrates_a_brand_new_database(empty_url: str) -> None:
    async with _opened(empty_url, {}, statement_timeout=5.0, lock_timeout=5.0) as storage:
        await storage.set("ns", "k", {"v": 1})
        assert await storage.get("ns", "k") == {"v": 1}
