"""Erasure by user: delete what a person wrote, and what was written only for them.

Every message is one exchange a person started: their text and files, and the agent's
reply to them. Erasing a person deletes:

- each conversation in which they are the only person who wrote (the agent's replies in
  it answer only them), whole;
- in conversations shared with others, their own messages (with the blocks and tool calls
  of those exchanges); with `whole_threads`, those conversations whole as well;
- their OAuth tokens, unless the erasure is limited to one agent (tokens are per person
  and MCP server, shared by every agent).

Conversations go in batches, one transaction each, as `prune` does: each batch locks its
conversations and asks again who wrote in them, so a message another person adds meanwhile
keeps a conversation (or, arriving after the batch, is refused with `MissingRowError`).
An interrupted erasure leaves whole batches; run again, it finds what is left.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from sqlalchemy import ColumnElement, Select, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from slack_agents_sa.database import Database, UsesDatabase
from slack_agents_sa.models import (
    NAME_LENGTH,
    Conversation,
    Message,
    OAuthToken,
    table_of,
)
from slack_agents_sa.progress import OnProgress
from slack_agents_sa.retention import count_message_rows, give_way, lock_conversations
from slack_agents_sa.types import utcnow
from slack_agents_sa.validation import check_batch_size, check_text

#: Conversations per transaction, as `prune`'s default.
DEFAULT_BATCH_SIZE = 10

#: What a receipt counts, in the order it is reported.
ERASED_TABLES = ("conversations", "messages", "blocks", "tool_calls", "oauth_tokens")

_conversations = table_of(Conversation)
_messages = table_of(Message)
_tokens = table_of(OAuthToken)


@dataclass
class ErasureReceipt:
    """What an erasure deleted (with `dry_run`: would delete): rows per table and the
    conversations it touched. Never any of the erased content, nor the person's id."""

    agent_name: str | None
    whole_threads: bool
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERASED_TABLES, 0))
    #: Conversations deleted whole.
    deleted_conversations: list[int] = field(default_factory=list)
    #: Conversations shared with others, from which only the person's messages went.
    trimmed_conversations: list[int] = field(default_factory=list)
    #: Transactions that ran (or, in a dry run, batches counted).
    batches: int = 0
    #: The longest of them, in milliseconds: the longest a live agent may have waited.
    longest_batch_ms: float = 0.0

    def _add(self, batch: _Batch, started: float) -> None:
        for table, rows in batch.counts.items():
            self.counts[table] += rows
        self.deleted_conversations += batch.whole
        self.trimmed_conversations += batch.trimmed
        self.batches += 1
        self.longest_batch_ms = max(self.longest_batch_ms, (time.perf_counter() - started) * 1e3)


@dataclass
class _Batch:
    whole: list[int]
    trimmed: list[int]
    counts: dict[str, int]


def _authored(user_id: str, agent_name: str | None) -> ColumnElement[bool]:
    """Messages of the person (in the agent's conversations, if one is given)."""
    condition = _messages.c.user_id == user_id
    if agent_name is None:
        return condition
    of_agent = select(_conversations.c.id).where(_conversations.c.agent_name == agent_name)
    return and_(condition, _messages.c.conversation_id.in_(of_agent))


def _candidates(user_id: str, agent_name: str | None, after: int, limit: int) -> Select[tuple[int]]:
    """The next conversations the person wrote in, by id: a range of
    ix_agents_messages_user_id_conversation_id (keyset, so the run reads it once)."""
    return (
        select(_messages.c.conversation_id)
        .where(_authored(user_id, agent_name), _messages.c.conversation_id > after)
        .group_by(_messages.c.conversation_id)
        .order_by(_messages.c.conversation_id)
        .limit(limit)
    )


async def _wrote_in(conn: AsyncConnection, written: ColumnElement[bool]) -> set[int]:
    """The conversations with a message matching `written`."""
    stmt = select(_messages.c.conversation_id).where(written).distinct()
    return {int(found) for found in (await conn.execute(stmt)).scalars()}


async def _erase_batch(
    conn: AsyncConnection,
    ids: Sequence[int],
    user_id: str,
    whole_threads: bool,
    dry_run: bool,
) -> _Batch:
    """One batch in one transaction: lock, ask again who wrote, count, delete."""
    if not dry_run:
        await lock_conversations(conn, ids)  # first: a message being added commits, or waits
    in_batch = _messages.c.conversation_id.in_(ids)
    mine = sorted(await _wrote_in(conn, and_(in_batch, _messages.c.user_id == user_id)))
    others = await _wrote_in(conn, and_(in_batch, _messages.c.user_id != user_id))
    whole = mine if whole_threads else [id_ for id_ in mine if id_ not in others]
    trimmed = [id_ for id_ in mine if id_ not in whole]
    erased = or_(
        _messages.c.conversation_id.in_(whole),
        and_(_messages.c.conversation_id.in_(trimmed), _messages.c.user_id == user_id),
    )
    counts = {
        "conversations": len(whole),
        **(await count_message_rows(conn, erased) if mine else {}),
    }
    if not dry_run:
        if whole:
            await conn.execute(delete(_conversations).where(_conversations.c.id.in_(whole)))
        if trimmed:
            await conn.execute(
                delete(_messages).where(
                    _messages.c.conversation_id.in_(trimmed), _messages.c.user_id == user_id
                )
            )
    return _Batch(whole, trimmed, counts)


async def _erase_tokens(db: Database, user_id: str, dry_run: bool) -> int:
    """The person's OAuth tokens, counted, then (unless `dry_run`) deleted."""
    theirs = _tokens.c.user_id == user_id

    async def count_and_delete(conn: AsyncConnection) -> int:
        stmt = select(func.count()).select_from(_tokens).where(theirs)
        count = int((await conn.execute(stmt)).scalar_one())
        if count and not dry_run:
            await conn.execute(delete(_tokens).where(theirs))
        return count

    return await db.run_transaction(count_and_delete)


async def erase_user_data(
    db: Database,
    user_id: str,
    agent_name: str | None = None,
    whole_threads: bool = False,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: OnProgress | None = None,
) -> ErasureReceipt:
    """`ErasureMethods.erase_user` with its arguments checked (the command line's entry)."""
    receipt = ErasureReceipt(agent_name, whole_threads, dry_run, utcnow())
    after = 0
    while True:
        candidates = _candidates(user_id, agent_name, after, batch_size)
        ids = [int(found) for found in (await db.execute(candidates)).scalars()]
        if not ids:
            break
        after = ids[-1]
        started = time.perf_counter()
        erase = partial(
            _erase_batch, ids=ids, user_id=user_id, whole_threads=whole_threads, dry_run=dry_run
        )
        batch = await db.run_transaction(erase)
        receipt._add(batch, started)
        if on_batch is not None:
            on_batch(len(ids))
        if len(ids) < batch_size:
            break
        if not dry_run:
            await give_way(started)
    if agent_name is None:
        receipt.counts["oauth_tokens"] = await _erase_tokens(db, user_id, dry_run)
    receipt.finished_at = utcnow()
    return receipt


async def count_user_conversations(db: Database, user_id: str, agent_name: str | None) -> int:
    """How many conversations an erasure goes through (a progress bar's total)."""
    stmt = select(func.count(_messages.c.conversation_id.distinct())).where(
        _authored(user_id, agent_name)
    )
    return int((await db.execute(stmt)).scalar_one())


class ErasureMethods(UsesDatabase):
    """`erase_user`: delete what a person wrote in conversations, and their OAuth tokens."""

    async def erase_user(
        self,
        user_id: str,
        *,
        agent_name: str | None = None,
        whole_threads: bool = False,
        dry_run: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_batch: OnProgress | None = None,
    ) -> ErasureReceipt:
        """Delete the person's messages, the conversations only they wrote in (all they
        wrote in, with `whole_threads`) and, unless limited to `agent_name`'s
        conversations, their OAuth tokens; `batch_size` conversations per transaction.

        `dry_run` deletes nothing and counts what would go. A second erasure of the same
        person finds nothing. Cancelled, it stops after the batch in progress (which
        commits whole); run again, it carries on.
        """
        check_text("user_id", user_id, NAME_LENGTH)
        if agent_name is not None:
            check_text("agent_name", agent_name, NAME_LENGTH)
        return await erase_user_data(
            self.db,
            user_id,
            agent_name,
            whole_threads,
            dry_run,
            check_batch_size(batch_size),
            on_batch,
        )
