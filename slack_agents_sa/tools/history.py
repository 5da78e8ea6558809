"""Tool `search_conversation_history`: the caller's earlier threads with this agent, searched
in the agent's slack_agents_sa storage (`tools: {history: {type: slack_agents_sa.tools.history}}`).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC
from typing import TYPE_CHECKING, Any, Final, TypeGuard

from slack_agents import FrameworkContext, UserConversationContext
from slack_agents.storage.base import BaseStorageProvider
from slack_agents.tools.base import (
    ERROR_INPUT_ERROR,
    ERROR_PERMISSION_DENIED,
    ERROR_SYSTEM_ERROR,
    RECOVERY_ABORT,
    RECOVERY_CONTACT_SUPPORT,
    RECOVERY_RETRY,
    BaseToolProvider,
    ToolResult,
    make_tool_error,
)

from slack_agents_sa import ConfigError, ConnectionLostError
from slack_agents_sa import Provider as SAStorage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from slack_agents_sa import HistoryHit

logger = logging.getLogger(__name__)

TOOL_NAME: Final = "search_conversation_history"
DEFAULT_LIMIT: Final = 10
MAX_LIMIT: Final = 50
#: Option `scope`: besides the caller's own threads (always), which threads they may find.
#: `own_threads`: no others; `channel`: every thread of this agent in the current channel.
SCOPES: Final = ("own_threads", "channel")

_FOUND = (
    "Returns matching messages, newest first, each with its channel, thread id (a Slack "
    "thread timestamp), date (UTC), author and a snippet. The current thread is never searched."
)
_DESCRIPTIONS: Final = {
    "own_threads": (
        "Search the current user's earlier conversations with this agent (threads in which "
        f"they wrote) for words or a phrase. {_FOUND}"
    ),
    "channel": (
        "Search the current user's earlier conversations with this agent (threads in which "
        "they wrote), and this agent's other threads in the current channel, for words or a "
        f"phrase. {_FOUND}"
    ),
}


class _InputError(Exception):
    """An argument the LLM sent is missing or malformed; `argument` names it."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(message)
        self.argument = argument


class Provider(BaseToolProvider):
    """Searches the earlier conversations of this agent that the caller took part in."""

    def __init__(
        self,
        allowed_functions: list[str],
        *,
        framework_ctx: FrameworkContext,
        scope: str = "own_threads",
    ) -> None:
        super().__init__(allowed_functions)
        if scope not in SCOPES:
            raise ConfigError(
                f"slack_agents_sa.tools.history: option `scope` must be one of {', '.join(SCOPES)}"
            )
        self._scope = scope
        self._agent_name = framework_ctx.agent_name
        self._framework_storage = framework_ctx.storage

    async def initialize(self) -> None:
        """Warn at start-up, not first at the first call, when the agent's storage is not ours."""
        if self._framework_storage is not None and not _searchable(self._framework_storage):
            logger.warning(
                "%s needs `storage: {type: slack_agents_sa}`; every call will return an error",
                TOOL_NAME,
            )

    def _get_all_tools(self) -> list[dict[str, Any]]:
        return [
            {
                "name": TOOL_NAME,
                "description": _DESCRIPTIONS[self._scope],
                "input_schema": {
                    "type": "object",
                    "properties": {
                        "query": {
                            "type": "string",
                            "description": "The words or phrase to look for.",
                        },
                        "limit": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIMIT,
                            "default": DEFAULT_LIMIT,
                            "description": f"At most this many results (default {DEFAULT_LIMIT}).",
                        },
                    },
                    "required": ["query"],
                },
            }
        ]

    # The agent loop's `user_conversation_context` and `storage` default to None
    # (slack_agents/agent_loop.py), so both are taken as optional here.
    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        user_conversation_context: UserConversationContext | None,
        storage: BaseStorageProvider | None,
    ) -> ToolResult:
        if name != TOOL_NAME:
            return make_tool_error(
                error=ERROR_INPUT_ERROR,
                code="unknown_tool",
                tool=name,
                recovery=RECOVERY_ABORT,
                message=f"Tool {name!r} is not provided by the conversation-history tool.",
            )
        if not _searchable(storage):
            return make_tool_error(
                error=ERROR_SYSTEM_ERROR,
                code="unsupported_storage",
                tool=TOOL_NAME,
                recovery=RECOVERY_CONTACT_SUPPORT,
                message=(
                    "Conversation history can only be searched when the agent's storage is "
                    "slack_agents_sa (`storage: {type: slack_agents_sa}`); it is not."
                ),
            )
        context = user_conversation_context
        user_id = context.get("user_id") if context else None
        if not isinstance(user_id, str) or not user_id:
            # Without the caller, the access rule has no one to apply to: never search.
            return make_tool_error(
                error=ERROR_PERMISSION_DENIED,
                code="unknown_caller",
                tool=TOOL_NAME,
                recovery=RECOVERY_ABORT,
                message="The user asking is not known, so no conversation history can be shown.",
            )
        try:
            query, limit = _query_and_limit(arguments)
        except _InputError as error:
            return make_tool_error(
                error=ERROR_INPUT_ERROR,
                code="invalid_argument",
                tool=TOOL_NAME,
                recovery=RECOVERY_ABORT,
                message=str(error),
                details={"argument": error.argument},
            )
        channel_id = (context.get("channel_id") if context else None) or None
        thread_id = (context.get("thread_id") if context else None) or None
        try:
            hits = await storage.search_history(
                self._agent_name,
                query,
                user_id=user_id,
                limit=limit,
                also_in_channel=channel_id if self._scope == "channel" else None,
                exclude_thread=(channel_id, thread_id) if channel_id and thread_id else None,
            )
        except ConnectionLostError:
            return make_tool_error(
                error=ERROR_SYSTEM_ERROR,
                code="database_unavailable",
                tool=TOOL_NAME,
                recovery=RECOVERY_RETRY,
                message="The conversation database could not be reached; try again shortly.",
            )
        except Exception as error:
            # The agent loop gathers tool calls: an exception here would end the whole turn.
            logger.exception("%s failed", TOOL_NAME)
            return make_tool_error(
                error=ERROR_SYSTEM_ERROR,
                code="search_failed",
                tool=TOOL_NAME,
                recovery=RECOVERY_CONTACT_SUPPORT,
                message="Searching the conversation history failed.",
                details={"exception": type(error).__name__},
            )
        return {"content": _render(hits), "is_error": False, "files": []}


def _searchable(storage: object) -> TypeGuard[SAStorage]:
    """Whether `storage` is slack_agents_sa's `Provider` and has `search_history`."""
    return isinstance(storage, SAStorage) and hasattr(storage, "search_history")


def _query_and_limit(arguments: dict[str, Any]) -> tuple[str, int]:
    """The tool's arguments, checked: a non-blank `query` and a `limit` from 1 to MAX_LIMIT."""
    query = arguments.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _InputError("query", "`query` must be a non-empty string: the words to look for.")
    # LLMs send an optional argument as null as often as they leave it out.
    limit = arguments.get("limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise _InputError("limit", f"`limit` must be a whole number from 1 to {MAX_LIMIT}.")
    return query.strip(), limit


def _render(hits: Sequence[HistoryHit]) -> str:
    """The hits as the compact JSON the LLM reads, in the order given (newest first)."""
    if not hits:
        return json.dumps({"results": [], "message": "No earlier conversation matched the query."})
    results = [
        {
            "channel": hit.channel_name or hit.channel_id,
            "channel_id": hit.channel_id,
            "thread_id": hit.thread_id,
            "date": hit.created_at.astimezone(UTC).isoformat(timespec="minutes"),
            "author": hit.author_name,
            "from_agent": hit.from_agent,
            "snippet": hit.snippet,
        }
        for hit in hits
    ]
    return json.dumps({"results": results}, ensure_ascii=False)
