"""Loading through the host, initialize/close, and calls outside that window."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from slack_agents.config import load_plugin

from slack_agents_sa import Provider, ProviderClosedError


async def test_host_load_plugin_returns_a_working_provider(
    fresh_url: str, provider_options: dict[str, Any]
) -> None:
    storage = load_plugin("slack_agents_sa", url=fresh_url, **provider_options)
    assert isinstance(storage, Provider)
    await storage.initialize()
    try:
        await storage.set("ns", "k", {"v": 1})
        assert await storage.get("ns", "k") == {"v": 1}
    finally:
        await storage.close()


async def test_default_url_creates_a_sqlite_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = Provider()
    await storage.initialize()
    try:
        await storage.set("ns", "k", {"v": 1})
    finally:
        await storage.close()
    assert (tmp_path / "slack_agents_sa.db").is_file()
    assert storage.supports_export


async def test_initialize_twice_is_harmless(provider: Provider) -> None:
    await provider.set("ns", "k", {"v": 1})
    await provider.initialize()
    assert await provider.get("ns", "k") == {"v": 1}


async def test_calls_before_initialize_and_after_close_raise_a_clear_error(
    fresh_url: str, provider_options: dict[str, Any]
) -> None:
    storage = Provider(url=fresh_url, **provider_options)
    with pytest.raises(ProviderClosedError, match=re.escape("call `await provider.initialize()`")):
        await storage.get("ns", "k")
    await storage.initialize()
    await storage.close()
    await storage.close()  # closing twice is harmless too
    with pytest.raises(ProviderClosedError):
        await storage.get_message_blocks(1)


async def test_data_survives_a_restart_of_a_file_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'agents.db'}"
    first = Provider(url=url)
    await first.initialize()
    conversation_id = await first.get_or_create_conversation("bot", "C1", "1.1")
    await first.close()
    second = Provider(url=url)
    await second.initialize()
    try:
        assert await second.has_conversation("bot", "C1", "1.1")
        assert await second.get_or_create_conversation("bot", "C1", "1.1") == conversation_id
    finally:
        await second.close()
