"""`slack-agents-sa import`: a database written by a built-in provider, copied into ours.

Source databases are written by the host's own `slack_agents.storage.sqlite` and
`slack_agents.storage.postgres` providers. After the import, what the host reads through
ConversationManager and the export methods must equal what our provider returns for the
same conversation written to it directly; a second run adds nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_agents.conversations import ConversationManager
from slack_agents.storage import postgres as builtin_postgres
from slack_agents.storage import sqlite as builtin_sqlite
from slack_agents.storage.base import BaseStorageProvider
from sqlalchemy.engine import URL

from slack_agents_sa import Provider
from slack_agents_sa.errors import ImportSourceError
from slack_agents_sa.importer import import_database
from slack_agents_sa.settings import normalize_url
from tests.agent_turns import drive_conversation
from tests.databases import POSTGRES, create_scratch_database, drop_scratch_database
from tests.samples import CLIENT, TOKEN
from tests.test_cli import run_cli

TOOL_CALL_IDS = ("toolu_weather_1", "toolu_plot_1", "toolu_mail_1")


async def fill(storage: BaseStorageProvider) -> int | str:
    """What an agent leaves behind: a conversation with every block type, plus the rest."""
    conversation_id = await drive_conversation(ConversationManager(storage))
    await storage.set("a2a_tasks", "task-1", {"state": "working", "n": [1, 2.5, None]})
    await storage.set("a2a_tasks", "task-2", {"state": "completed"})
    for n in range(3):
        await storage.append("events", "log", {"n": n, "text": f"event {n} 👋"})
    await storage.upsert_heartbeat("helper", 1_700_000_123.5)
    await storage.put_oauth_token("U1", "srv", TOKEN)
    await storage.put_oauth_client("srv", "https://cb.example", CLIENT)
    return conversation_id


def _shape(messages: list[dict[str, Any]]) -> list[Any]:
    """Export rows without ids and times; links as positions within the conversation."""
    position = {
        block["id"]: index for index, block in enumerate(b for m in messages for b in m["blocks"])
    }
    shaped = []
    for message in messages:
        blocks = []
        for block in message["blocks"]:
            shown = {
                name: value
                for name, value in block.items()
                if name not in ("id", "created_at", "source_file_id", "tool_block_id")
            }
            for link in ("source_file_id", "tool_block_id"):
                if block.get(link):
                    shown[link] = position[int(block[link])]
            blocks.append(shown)
        shaped.append((message["user_id"], message["user_name"], message["user_handle"], blocks))
    return shaped


async def _expected() -> dict[str, Any]:
    """The same agent history written directly to our provider (in-memory SQLite)."""
    ours = Provider(url="sqlite:///:memory:")
    await ours.initialize()
    try:
        return await _observe(ours, await fill(ours))
    finally:
        await ours.close()


async def _observe(storage: Provider, conversation_id: int | str) -> dict[str, Any]:
    cm = ConversationManager(storage)
    [conversation] = await storage.get_conversations_for_export("helper")
    return {
        "history": await cm.get_messages(conversation_id),
        "export": _shape(await storage.get_messages_with_blocks(conversation_id)),
        "conversation": {k: v for k, v in conversation.items() if k != "id"},
        "by_handle": len(await storage.get_conversations_for_export("helper", handle="bo")),
        "tool_calls": [await storage.get_tool_call(call) for call in TOOL_CALL_IDS],
        "kv": await storage.query("a2a_tasks", {}),
        "list": [
            {k: v for k, v in item.items() if k != "id"}
            for item in await storage.get_list("events", "log")
        ],
        "heartbeat": await storage.get_heartbeat("helper"),
        "token": await storage.get_oauth_token("U1", "srv"),
        "client": await storage.get_oauth_client("srv", "https://cb.example"),
    }


#: get_tool_call answers of the source's own provider, before the import.
Source = tuple[URL, list[dict[str, Any] | None]]


@pytest.fixture(params=["sqlite", "postgres"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Source]:
    """A database written by a built-in provider (made outside the event loop)."""
    if request.param == "sqlite":
        path = tmp_path / "builtin.db"
        calls = asyncio.run(written_by(builtin_sqlite.Provider(str(path))))
        yield normalize_url(f"sqlite:///{path}"), calls
        return
    server = POSTGRES.server_url
    url = asyncio.run(create_scratch_database(server))
    try:
        plain = url.render_as_string(hide_password=False).replace("+asyncpg", "")
        yield url, asyncio.run(written_by(builtin_postgres.Provider(plain)))
    finally:
        asyncio.run(drop_scratch_database(server, url))


async def written_by(storage: BaseStorageProvider) -> list[dict[str, Any] | None]:
    await storage.initialize()
    try:
        await fill(storage)
        return [await storage.get_tool_call(call) for call in TOOL_CALL_IDS]
    finally:
        await storage.close()


@pytest.fixture
async def target(empty_url: str) -> AsyncIterator[str]:
    yield empty_url


async def test_import_equals_a_direct_write_and_a_rerun_adds_nothing(
    source: Source, target: str
) -> None:
    source_url, tool_calls_before = source
    summary = await import_database(source_url, normalize_url(target), batch_size=2)
    counts = {name: (c.source, c.added) for name, c in summary.counts.items()}
    assert counts == {
        "conversations": (1, 1),
        "messages": (3, 3),
        "blocks": (17, 17),
        "list items": (3, 3),
        "key-values": (2, 2),
        "heartbeats": (1, 1),
        "oauth tokens": (1, 1),
        "oauth clients": (1, 1),
    }

    storage = Provider(url=target)
    await storage.initialize()
    try:
        [conversation] = await storage.get_conversations_for_export("helper")
        imported = await _observe(storage, conversation["id"])
    finally:
        await storage.close()
    expected = await _expected()
    heartbeat, expected_heartbeat = imported.pop("heartbeat"), expected.pop("heartbeat")
    # Tool inputs read back as the source kept them (the built-in PostgreSQL provider's
    # jsonb reordered their keys before we saw them).
    assert imported.pop("tool_calls") == tool_calls_before
    expected.pop("tool_calls")
    assert imported == expected
    assert heartbeat["last_ping_pong_time"] == pytest.approx(
        expected_heartbeat["last_ping_pong_time"], abs=1e-3
    )

    again = await import_database(source_url, normalize_url(target))
    for name in ("conversations", "messages", "blocks", "list items"):
        assert again.counts[name].added == 0, name


async def test_the_command_prints_the_summary(source: Source, tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'ours.db'}"
    source_url = source[0].render_as_string(hide_password=False)
    result = await asyncio.to_thread(run_cli, "--url", target, "import", "--from", source_url)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^messages\s+3\s+3$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^blocks\s+17\s+17$", result.stdout, re.MULTILINE), result.stdout


@pytest.mark.parametrize("source", ["postgres"], indirect=True)
async def test_a_source_url_with_libpq_options_is_read(source: Source, tmp_path: Path) -> None:
    """The URL a built-in PostgreSQL provider ran with, libpq's options and all."""
    libpq = {"sslmode": "prefer", "application_name": "import", "connect_timeout": "5"}
    source_url = source[0].update_query_dict(libpq).render_as_string(hide_password=False)
    target = f"sqlite:///{tmp_path / 'ours.db'}"
    result = await asyncio.to_thread(run_cli, "--url", target, "import", "--from", source_url)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^messages\s+3\s+3$", result.stdout, re.MULTILINE), result.stdout


async def test_a_database_that_is_not_a_built_in_one_is_refused(tmp_path: Path) -> None:
    ours = f"sqlite:///{tmp_path / 'ours.db'}"
    storage = Provider(url=ours)
    await storage.initialize()
    await storage.close()
    with pytest.raises(ImportSourceError, match="missing tables"):
        await import_database(normalize_url(ours), normalize_url(f"sqlite:///{tmp_path / 't.db'}"))
