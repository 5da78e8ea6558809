"""A plain in-Python model of the host contract, to compare the provider against.

The six primitives live in dicts; the domain methods are the host base class's own defaults
built on them, except where the contract chose differently from those defaults (history
leaves out usage blocks and non-image uploads; an existing conversation gets a new channel
name). Values are copied through JSON, as a database would.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from slack_agents.storage.base import BaseStorageProvider, OAuthClientRow, OAuthTokenRow


def _through_json(value: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(value, allow_nan=False))
    return copied


def matches(value: dict[str, Any], filters: dict[str, Any]) -> bool:
    """The contract's `query` equality: Python `==`, a missing field equal only to None."""
    return all(value.get(name) == wanted for name, wanted in filters.items())


class ReferenceStore(BaseStorageProvider):
    """The contract, in memory, with no SQL anywhere."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], dict[str, Any]] = {}
        self.lists: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        self._appended: list[tuple[int, str, dict[str, Any]]] = []
        self._next_id = 1
        self._channel_names: dict[str, str | None] = {}
        self.tokens: dict[tuple[str, str], OAuthTokenRow] = {}
        self.clients: dict[tuple[str, str], OAuthClientRow] = {}

    async def initialize(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        value = self.values.get((namespace, key))
        return None if value is None else _through_json(value)

    async def set(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        self.values[(namespace, key)] = _through_json(value)

    async def delete(self, namespace: str, key: str) -> None:
        self.values.pop((namespace, key), None)

    async def append(self, namespace: str, key: str, item: dict[str, Any]) -> str:
        item_id = self._next_id
        self._next_id += 1
        stored = _through_json(item)
        self.lists[(namespace, key)].append((item_id, stored))
        self._appended.append((item_id, namespace, stored))
        return str(item_id)

    async def get_list(self, namespace: str, key: str) -> list[dict[str, Any]]:
        return [
            {**_through_json(value), "id": str(item_id)}
            for item_id, value in self.lists.get((namespace, key), [])
        ]

    async def query(self, namespace: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
        """Appended items in insertion order with their ids, then `set` values by key."""
        appended = [
            {**_through_json(value), "id": str(item_id)}
            for item_id, item_namespace, value in self._appended
            if item_namespace == namespace
        ]
        stored = [
            _through_json(value)
            for (value_namespace, _), value in sorted(self.values.items())
            if value_namespace == namespace
        ]
        return [value for value in appended + stored if matches(value, filters)]

    async def get_oauth_token(self, user_id: str, server_id: str) -> OAuthTokenRow | None:
        return self.tokens.get((user_id, server_id))

    async def put_oauth_token(self, user_id: str, server_id: str, row: OAuthTokenRow) -> None:
        self.tokens[(user_id, server_id)] = row

    async def delete_oauth_token(self, user_id: str, server_id: str) -> None:
        self.tokens.pop((user_id, server_id), None)

    async def get_oauth_client(self, server_id: str, redirect_uri: str) -> OAuthClientRow | None:
        return self.clients.get((server_id, redirect_uri))

    async def put_oauth_client(
        self, server_id: str, redirect_uri: str, row: OAuthClientRow
    ) -> None:
        self.clients[(server_id, redirect_uri)] = row

    async def delete_oauth_client(self, server_id: str, redirect_uri: str) -> None:
        self.clients.pop((server_id, redirect_uri), None)

    # --- where the contract departs from the base class defaults ---

    async def get_or_create_conversation(
        self,
        agent_name: str,
        channel_id: str,
        thread_id: str,
        channel_name: str | None = None,
    ) -> int | str:
        conversation_id = await super().get_or_create_conversation(
            agent_name, channel_id, thread_id, channel_name
        )
        key = str(conversation_id)
        if channel_name is not None or key not in self._channel_names:
            self._channel_names[key] = channel_name
        return conversation_id

    async def get_conversations_for_export(
        self,
        agent_name: str,
        *,
        handle: str | None = None,
        date_from: Any = None,
        date_to: Any = None,
    ) -> list[dict[str, Any]]:
        found = await super().get_conversations_for_export(
            agent_name, handle=handle, date_from=date_from, date_to=date_to
        )
        return [{**row, "channel_name": self._channel_names[row["id"]]} for row in found]

    async def get_message_blocks(
        self, conversation_id: int | str
    ) -> list[tuple[int | str, list[dict[str, Any]]]]:
        history = await super().get_message_blocks(conversation_id)
        return [
            (
                message_id,
                [
                    {"block_type": block["block_type"], "content": block["content"]}
                    for block in blocks
                    if _in_history(block)
                ],
            )
            for message_id, blocks in history
        ]


def _in_history(block: dict[str, Any]) -> bool:
    if block["block_type"] == "usage":
        return False
    return not (block["block_type"] == "user_file" and block["content"].get("type") != "image")
