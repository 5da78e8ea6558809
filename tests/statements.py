"""The statements the provider runs, gathered for tests that compile them all."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from sqlalchemy import ClauseElement, Executable

from slack_agents_sa.models import Conversation, Heartbeat, KeyValueEntry, OAuthClient, OAuthToken

type UpsertShape = tuple[Any, tuple[str, ...], tuple[str, ...], tuple[str, ...], bool]


def module_statements(module: ModuleType) -> dict[str, ClauseElement]:
    """A module's statements built once at import (its hot-path constants), by name."""
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, ClauseElement) and isinstance(value, Executable)
    }


def _upsert_shapes() -> list[UpsertShape]:
    thread = ("agent_name", "channel_id", "thread_id")
    token = ("access_token", "refresh_token_enc", "token_type", "scopes", "expires_at")
    client = ("client_id", "client_secret", "metadata_json", "authorization_server")
    stamps = ("created_at", "updated_at")
    return [
        (Conversation, (*thread, "channel_name"), thread, ("channel_name",), True),
        (Conversation, (*thread, "channel_name"), thread, (), True),
        (
            Heartbeat,
            ("agent_name", "last_ping_pong_time"),
            ("agent_name",),
            ("last_ping_pong_time",),
            False,
        ),
        (
            KeyValueEntry,
            ("namespace", "key", "value", *stamps),
            ("namespace", "key"),
            ("value", "updated_at"),
            False,
        ),
        (
            OAuthToken,
            ("user_id", "server_id", *token, *stamps),
            ("user_id", "server_id"),
            (*token, "updated_at"),
            False,
        ),
        (
            OAuthClient,
            ("server_id", "redirect_uri", *client, *stamps),
            ("server_id", "redirect_uri"),
            (*client, "updated_at"),
            False,
        ),
    ]


#: Every upsert shape the provider builds (`Backend.upsert` arguments): a new conversation
#: with and without a channel name, heartbeats, `set`, and both OAuth puts.
UPSERT_SHAPES = _upsert_shapes()
