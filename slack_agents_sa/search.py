"""Search over history: an agent's past conversations found by the words in them.

The text people and the agent wrote (an uploaded document's extracted text included) is
indexed by the database's own full-text search (migration 0007); tool calls, files and
usage are not. Hits come newest first. `user_id` applies the access rule a tool needs:
only conversations that person wrote in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, not_, or_, select

from slack_agents_sa.database import UsesDatabase
from slack_agents_sa.models import NAME_LENGTH, Block, Conversation, Message, table_of
from slack_agents_sa.search_text import rank, snippet, words_of
from slack_agents_sa.validation import check_aware_datetime, check_optional_text, check_text

#: Most hits one search returns.
MAX_LIMIT = 200

#: Another reading of the messages, for "wrote in this conversation" (Core: no mappers set
#: up when this module loads).
_author = table_of(Message).alias("author")


@dataclass(frozen=True, slots=True)
class HistoryHit:
    """One text block that holds every word of a search, and where it was written."""

    conversation_id: int
    channel_id: str
    channel_name: str | None
    thread_id: str
    message_id: int
    #: Who wrote the block: the person of its message, or the agent (then `from_agent`,
    #: and `author_name` is the agent's name).
    author_user_id: str
    author_name: str
    from_agent: bool
    created_at: datetime
    #: Up to 200 characters of the text around the first search word.
    snippet: str
    #: The share of the block's words that are search words (0 to 1).
    rank: float


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, got {type(limit).__name__}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def _visible_to(user_id: str, also_in_channel: str | None) -> ColumnElement[bool]:
    """Conversations `user_id` wrote in (and, if given, every one of that channel)."""
    wrote = exists().where(
        _author.c.conversation_id == Conversation.id, _author.c.user_id == user_id
    )
    if also_in_channel is None:
        return wrote
    return or_(wrote, Conversation.channel_id == also_in_channel)


class SearchMethods(UsesDatabase):
    """`search_history`: full-text search over one agent's conversations."""

    async def search_history(
        self,
        agent_name: str,
        text: str,
        *,
        user_id: str | None = None,
        channel_id: str | None = None,
        since: datetime | None = None,
        limit: int = 20,
        also_in_channel: str | None = None,
        exclude_thread: tuple[str, str] | None = None,
    ) -> list[HistoryHit]:
        """Text blocks of `agent_name`'s conversations holding every word of `text`,
        newest first (at most `limit`).

        `text` is plain words, never query syntax. `user_id`: only conversations that
        person wrote a message in; `also_in_channel` (with `user_id`): every conversation
        of that channel too. `channel_id`: only that channel's. `since`: blocks written
        then or later. `exclude_thread` = (channel_id, thread_id) leaves one thread out.
        """
        check_text("agent_name", agent_name, NAME_LENGTH)
        check_text("text", text)
        for name, value in (
            ("user_id", user_id),
            ("channel_id", channel_id),
            ("also_in_channel", also_in_channel),
        ):
            check_optional_text(name, value, NAME_LENGTH)
        if also_in_channel is not None and user_id is None:
            raise ValueError("also_in_channel widens user_id's rule: give user_id too")
        _check_limit(limit)
        if since is not None:
            check_aware_datetime("since", since)
        search = self.db.backend.text_search
        words = search.usable_words(words_of(text))
        if not words:
            return []
        hits = search.matches(words, self.db.settings.search_language, since)
        conditions: list[ColumnElement[bool]] = [Conversation.agent_name == agent_name]
        if user_id is not None:
            conditions.append(_visible_to(user_id, also_in_channel))
        if channel_id is not None:
            conditions.append(Conversation.channel_id == channel_id)
        if exclude_thread is not None:
            left_out_channel, left_out_thread = exclude_thread
            conditions.append(
                not_(
                    and_(
                        Conversation.channel_id == left_out_channel,
                        Conversation.thread_id == left_out_thread,
                    )
                )
            )
        # The newest hits that pass the filters first, then only their rows and text.
        newest = search.newest(hits, conditions, limit)
        stmt = (
            select(
                Block.id,
                Block.block_type,
                Block.search_text,
                Block.content,
                Block.created_at,
                Message.id.label("message_id"),
                Message.user_id,
                Message.user_name,
                Conversation.id.label("conversation_id"),
                Conversation.channel_id,
                Conversation.channel_name,
                Conversation.thread_id,
            )
            .select_from(newest)
            .join(Block, Block.id == newest.c.id)
            .join(Message, Block.message_id == Message.id)
            .join(Conversation, Message.conversation_id == Conversation.id)
            .order_by(Block.id.desc())
        )
        rows = await self.db.fetch(stmt)
        return [_hit(row, agent_name, words) for row in rows]


def _hit(row: Any, agent_name: str, words: list[str]) -> HistoryHit:
    from_agent = row.block_type == "text"
    content = row.content if isinstance(row.content, dict) else {}
    written = content.get("text")
    text = written if isinstance(written, str) else row.search_text or ""
    return HistoryHit(
        conversation_id=row.conversation_id,
        channel_id=row.channel_id,
        channel_name=row.channel_name,
        thread_id=row.thread_id,
        message_id=row.message_id,
        author_user_id="" if from_agent else row.user_id,
        author_name=agent_name if from_agent else row.user_name,
        from_agent=from_agent,
        created_at=row.created_at,
        snippet=snippet(text, words),
        rank=rank(row.search_text or "", words),
    )
