"""Serialization failures (SQLSTATE 40001) and MySQL deadlocks (1213) are retried.

A trigger forces the error the first N times a row is written, counting in something the
failed transaction cannot roll back (a PostgreSQL sequence, a MyISAM table), so the
database really rolled back each failed attempt, as it does for a real conflict.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from slack_agents.storage import sqlite as builtin_sqlite

from slack_agents_sa import Provider
from slack_agents_sa.database import RETRY_ATTEMPTS
from slack_agents_sa.errors import TransactionConflictError
from slack_agents_sa.importer import import_database
from slack_agents_sa.keys import rotate_keys
from slack_agents_sa.settings import normalize_url
from tests.admin import admin_rows
from tests.databases import (
    SERVER_BACKENDS,
    Backend,
    backend_params,
    opened_provider,
    scratch_database,
)
from tests.samples import TOKEN
from tests.test_import import written_by


@pytest.fixture(params=backend_params(SERVER_BACKENDS))
async def storage_and_url(
    request: pytest.FixtureRequest, provider_options: dict[str, Any]
) -> AsyncIterator[tuple[Provider, str]]:
    backend: Backend = request.param
    async with scratch_database(backend) as url:
        storage = Provider(url=url, **provider_options)
        await storage.initialize()
        try:
            yield storage, url
        finally:
            await storage.close()


def _is_mysql(url: str) -> bool:
    return normalize_url(url).get_backend_name() in ("mysql", "mariadb")


async def _admin(url: str, *statements: str) -> list[Any]:
    """Run `statements` one by one on connections of their own; the last one's rows."""
    rows: list[Any] = []
    for statement in statements:
        rows = await admin_rows(url, statement)
    return rows


async def _fail_writes(url: str, table: str, times: int, event: str = "INSERT") -> None:
    """Make the next `times` inserts (or `event`s) into `table` fail as a conflict would."""
    if _is_mysql(url):
        await _admin(
            url,
            "CREATE TABLE sa_faults (n INT NOT NULL) ENGINE=MyISAM",
            "INSERT INTO sa_faults VALUES (0)",
            f"CREATE TRIGGER sa_fault BEFORE {event} ON {table} FOR EACH ROW BEGIN "
            "UPDATE sa_faults SET n = n + 1; "
            f"IF (SELECT n FROM sa_faults) <= {times} THEN "
            "SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'forced deadlock'; "
            "END IF; END",
        )
        return
    await _admin(
        url,
        "CREATE SEQUENCE sa_faults START 1",
        "CREATE FUNCTION sa_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF nextval('sa_faults') <= {times} THEN "
        "RAISE EXCEPTION 'forced serialization failure' USING ERRCODE = '40001'; "
        "END IF; RETURN NEW; END $$",
        f"CREATE TRIGGER sa_fault BEFORE {event} ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION sa_fault()",
    )


async def _attempts(url: str) -> int:
    """How many times the trigger ran."""
    if _is_mysql(url):
        return int((await _admin(url, "SELECT n FROM sa_faults"))[0][0])
    return int((await _admin(url, "SELECT last_value FROM sa_faults"))[0][0])


async def _stop_failing(url: str, table: str) -> None:
    if _is_mysql(url):
        await _admin(url, "DROP TRIGGER sa_fault")
    else:
        await _admin(url, f"DROP TRIGGER sa_fault ON {table}")


async def test_a_write_rolled_back_as_a_conflict_is_retried_and_lands_once(
    storage_and_url: tuple[Provider, str],
) -> None:
    storage, url = storage_and_url
    await _fail_writes(url, "agents_list_items", times=RETRY_ATTEMPTS - 1)
    item_id = await storage.append("tasks", "todo", {"n": 1})
    assert await _attempts(url) == RETRY_ATTEMPTS  # every failure retried, then success
    assert await storage.get_list("tasks", "todo") == [{"n": 1, "id": item_id}]


async def test_a_transaction_rolled_back_as_a_conflict_is_retried_whole(
    storage_and_url: tuple[Provider, str],
) -> None:
    storage, url = storage_and_url
    conversation_id = await storage.get_or_create_conversation("bot", "C1", "1.1")
    message_id = await storage.create_message(conversation_id, "U1", "Ann", "ann")
    # The tool call row is the transaction's last statement (or the CTE's outer INSERT):
    # each failed attempt's tool block must be rolled back with it.
    await _fail_writes(url, "agents_tool_calls", times=2)
    block_id = await storage.append_tool_block(
        message_id,
        tool_call_id="toolu_1",
        tool_name="search",
        tool_input={"q": "x"},
        tool_output="found",
        is_error=False,
    )
    assert await _attempts(url) == 3
    history = await storage.get_message_blocks(conversation_id)
    assert history == [
        (
            message_id,
            [
                {
                    "block_type": "tool_use",
                    "content": {
                        "tool_call_id": "toolu_1",
                        "tool_name": "search",
                        "tool_input": {"q": "x"},
                        "tool_output": "found",
                        "is_error": False,
                    },
                }
            ],
        )
    ]
    blocks = await _admin(url, "SELECT id FROM agents_blocks")
    assert [row[0] for row in blocks] == [block_id]  # no block left by a failed attempt


def _causes(error: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None:
        found.append(current)
        current = current.__cause__
    return found


async def test_a_conflict_that_persists_fails_after_the_last_attempt_and_writes_nothing(
    storage_and_url: tuple[Provider, str],
) -> None:
    storage, url = storage_and_url
    await _fail_writes(url, "agents_kv_entries", times=1000)
    with pytest.raises(
        TransactionConflictError, match=f"on each of {RETRY_ATTEMPTS} attempts"
    ) as failed:
        await storage.set("ns", "k", {"v": 1})
    assert "forced" in str(_causes(failed.value))  # the database's own error is kept
    assert await _attempts(url) == RETRY_ATTEMPTS
    await _stop_failing(url, "agents_kv_entries")
    assert await storage.get("ns", "k") is None
    await storage.set("ns", "k", {"v": 2})
    assert await storage.get("ns", "k") == {"v": 2}


async def test_other_errors_are_not_retried(storage_and_url: tuple[Provider, str]) -> None:
    storage, url = storage_and_url
    await _fail_writes(url, "agents_messages", times=0)  # counts attempts, fails none
    with pytest.raises(ValueError, match="conversation_id=999"):
        await storage.create_message(999, "U1", "Ann", "ann")  # a foreign key violation
    assert await _attempts(url) == 1


async def test_an_import_batch_rolled_back_as_a_conflict_runs_again_and_counts_once(
    storage_and_url: tuple[Provider, str], tmp_path: Path
) -> None:
    storage, url = storage_and_url
    builtin = tmp_path / "builtin.db"
    await written_by(builtin_sqlite.Provider(str(builtin)))
    source = normalize_url(f"sqlite:///{builtin}")
    # The first message row of the first batch fails twice: the batch runs a third time.
    await _fail_writes(url, "agents_messages", times=2)
    summary = await import_database(source, normalize_url(url), batch_size=2)
    assert await _attempts(url) > 2
    messages = summary.counts["messages"]
    assert messages.added == messages.source > 0
    stored = await storage.get_messages_with_blocks(
        (await storage.get_conversations_for_export("helper"))[0]["id"]
    )
    assert len(stored) == messages.source
    assert sum(len(message["blocks"]) for message in stored) == summary.counts["blocks"].added
    again = await import_database(source, normalize_url(url))
    assert all(count.added == 0 for name, count in again.counts.items() if name in BATCHED)


#: The importer's tables that a re-run must leave alone (the others are upserted again).
BATCHED = ("conversations", "messages", "blocks", "list items")


async def test_a_rotation_batch_rolled_back_as_a_conflict_runs_again_and_counts_once(
    storage_and_url: tuple[Provider, str],
) -> None:
    _, url = storage_and_url
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    async with opened_provider(url, encryption_keys=[old]) as before:
        for user in ("U1", "U2", "U3"):
            await before.put_oauth_token(user, "srv", TOKEN)
    await _fail_writes(url, "agents_oauth_tokens", times=2, event="UPDATE")
    async with opened_provider(url, encryption_keys=[new, old]) as after:
        summary = await rotate_keys(after.db, batch_size=10)
        tokens = summary.counts["agents_oauth_tokens"]
        assert (tokens.seen, tokens.resealed, tokens.changed, tokens.failed) == (3, 3, 0, 0)
        assert await _attempts(url) == 2 + 3  # two failed attempts, then the three updates
        for user in ("U1", "U2", "U3"):
            assert await after.get_oauth_token(user, "srv") == TOKEN
