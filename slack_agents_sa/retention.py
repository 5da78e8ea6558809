"""Retention: delete old conversations, or a namespace's old key-value data (`prune`).

A conversation's last activity is the newest `created_at` of the conversation and of its
messages (a conversation without messages goes by its own). One whose last activity is
before the cut-off goes with all its messages, blocks and tool calls, through the
foreign keys' ON DELETE CASCADE. Conversations go in batches, one short transaction each:
the longest one is measured and reported, since a live agent's writes may wait for it.
A batch is whole or absent, so an interrupted prune leaves nothing half deleted, and the
same prune run again carries on where it stopped.

Key-value data goes by its stored time: `set` values by their last write (`updated_at`),
`append`ed items by when they were appended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import ColumnElement, Delete, Select, and_, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from slack_agents_sa.database import Database, UsesDatabase
from slack_agents_sa.models import (
    NAME_LENGTH,
    Block,
    Conversation,
    KeyValueEntry,
    ListItem,
    Message,
    ToolCall,
    table_of,
)
from slack_agents_sa.progress import OnProgress
from slack_agents_sa.types import utcnow
from slack_agents_sa.validation import check_aware_datetime, check_batch_size, check_text

#: Conversations per transaction. Pruning 1M blocks, 10 conversations of 100 blocks a batch
#: took at most 109 ms on PostgreSQL and 66-250 ms on SQLite; 100 a batch, 1.3 s and 0.6 s
#: (docs/performance.md). A batch holds SQLite's write lock, PostgreSQL's row locks.
DEFAULT_BATCH_SIZE = 10
#: Rows per statement when pruning a namespace (each DELETE is its own transaction).
DEFAULT_NAMESPACE_BATCH_SIZE = 1000

_conversations = table_of(Conversation)
_messages = table_of(Message)
_blocks = table_of(Block)
_tool_calls = table_of(ToolCall)
_entries = table_of(KeyValueEntry)
_items = table_of(ListItem)

#: What `prune` counts, in the order they are reported.
CONVERSATION_TABLES = ("conversations", "messages", "blocks", "tool_calls")
NAMESPACE_TABLES = ("kv_entries", "list_items")


@dataclass
class PruneResult:
    """What a prune deleted (with `dry_run`: would delete), rows per table."""

    cutoff: datetime
    dry_run: bool
    #: Rows per table: `CONVERSATION_TABLES` for `prune`, `NAMESPACE_TABLES` for
    #: `prune_namespace`.
    counts: dict[str, int]
    #: Transactions (or, pruning a namespace, DELETE statements) that ran.
    batches: int = 0
    #: The longest of them, in milliseconds: the longest a live agent may have waited.
    longest_batch_ms: float = 0.0

    def _add(self, counts: dict[str, int], started: float) -> None:
        for table, rows in counts.items():
            self.counts[table] += rows
        self.batches += 1
        self.longest_batch_ms = max(self.longest_batch_ms, (time.perf_counter() - started) * 1e3)


#: Called after each batch with how many candidates (conversations, or rows of a namespace)
#: it went through.
OnBatch = OnProgress


def cutoff_of(older_than: timedelta | datetime) -> datetime:
    """The cut-off: now minus an age, or an aware datetime as it is."""
    if isinstance(older_than, datetime):
        return check_aware_datetime("older_than", older_than)
    if not isinstance(older_than, timedelta):
        raise TypeError(f"older_than must be a timedelta, got {type(older_than).__name__}")
    if older_than <= timedelta(0):
        raise ValueError("older_than must be a positive duration")
    return utcnow() - older_than


# --- conversations -----------------------------------------------------------------------


def _last_active_before(cutoff: datetime, agent_name: str | None) -> ColumnElement[bool]:
    """Conversations (of `agent_name`, if given) whose last activity is before `cutoff`.

    The probe for a newer message is one seek in ix_agents_messages_conversation_id_created_at.
    """
    newer_message = exists().where(
        _messages.c.conversation_id == _conversations.c.id, _messages.c.created_at >= cutoff
    )
    conditions = [_conversations.c.created_at < cutoff, ~newer_message]
    if agent_name is not None:
        conditions.append(_conversations.c.agent_name == agent_name)
    return and_(*conditions)


def _candidates(old: ColumnElement[bool], after: int, limit: int) -> Select[tuple[int]]:
    """The next batch of old conversations by id (keyset on the primary key: over a whole
    prune the table is walked once, however many batches it takes)."""
    where = and_(_conversations.c.id > after, old)
    return select(_conversations.c.id).where(where).order_by(_conversations.c.id).limit(limit)


async def count_message_rows(
    conn: AsyncConnection, messages: ColumnElement[bool]
) -> dict[str, int]:
    """The messages matching `messages`, their blocks and their tool calls (what deleting
    those messages deletes), in one round trip."""
    blocks = _blocks.join(_messages, _blocks.c.message_id == _messages.c.id)
    tool_calls = _tool_calls.join(blocks, _tool_calls.c.block_id == _blocks.c.id)
    counts = (
        await conn.execute(
            select(
                *(
                    select(func.count()).select_from(source).where(messages).scalar_subquery()
                    for source in (_messages, blocks, tool_calls)
                )
            )
        )
    ).one()
    return dict(zip(CONVERSATION_TABLES[1:], map(int, counts), strict=True))


async def _count_conversation_rows(conn: AsyncConnection, ids: Sequence[int]) -> dict[str, int]:
    """Rows of each table that deleting these conversations deletes, in one round trip."""
    if not ids:
        return dict.fromkeys(CONVERSATION_TABLES, 0)
    in_them = _messages.c.conversation_id.in_(ids)
    return {"conversations": len(ids), **await count_message_rows(conn, in_them)}


async def lock_conversations(conn: AsyncConnection, ids: Sequence[int]) -> None:
    """Lock these conversations' rows for the transaction, in id order.

    An agent adding a message to one of them (its foreign key check takes a share lock on
    the conversation) waits for the transaction, and one already adding it commits before
    the lock is granted. SQLite: BEGIN IMMEDIATE already holds the write lock.
    """
    await conn.execute(
        select(_conversations.c.id)
        .where(_conversations.c.id.in_(ids))
        .order_by(_conversations.c.id)
        .with_for_update()
    )


async def _delete_conversations(
    conn: AsyncConnection, ids: Sequence[int], old: ColumnElement[bool]
) -> dict[str, int]:
    """One batch, in one transaction: lock, ask again, count, delete."""
    await lock_conversations(conn, ids)
    # Asked again in a statement of its own, which sees what committed meanwhile (a new
    # snapshot under READ COMMITTED; under MySQL's REPEATABLE READ, the transaction's first
    # consistent read): a conversation that came back to life since it was chosen stays.
    confirmed = list(
        (await conn.execute(select(_conversations.c.id).where(_conversations.c.id.in_(ids), old)))
        .scalars()
        .all()
    )
    counts = await _count_conversation_rows(conn, confirmed)
    if confirmed:
        await conn.execute(delete(_conversations).where(_conversations.c.id.in_(confirmed)))
    return counts


async def prune_conversations(
    db: Database,
    cutoff: datetime,
    agent_name: str | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: OnBatch | None = None,
) -> PruneResult:
    """`RetentionMethods.prune` with the cut-off already worked out (the command line's entry)."""
    old = _last_active_before(cutoff, agent_name)
    result = PruneResult(cutoff, dry_run, dict.fromkeys(CONVERSATION_TABLES, 0))
    after = 0
    while ids := list((await db.execute(_candidates(old, after, batch_size))).scalars().all()):
        after = ids[-1]
        started = time.perf_counter()
        if dry_run:
            counts = await db.run(lambda conn: _count_conversation_rows(conn, ids))
        else:
            counts = await db.run_transaction(lambda conn: _delete_conversations(conn, ids, old))
        result._add(counts, started)
        if on_batch is not None:
            on_batch(len(ids))
        if len(ids) < batch_size:
            break  # the scan reached the end of the table
        if not dry_run:
            await give_way(started)
    return result


async def give_way(batch_started: float) -> None:
    """Wait as long as the batch took, so the prune holds locks at most half the time.

    SQLite's busy handler, where other processes' writers wait, sleeps up to 100 ms between
    tries: back to back, batches took the write lock again before it woke, and an agent's
    write waited 480 ms at the 99th percentile while 1M blocks were pruned (docs/performance.md).
    """
    await asyncio.sleep(time.perf_counter() - batch_started)


async def count_old_conversations(db: Database, cutoff: datetime, agent_name: str | None) -> int:
    """How many conversations a prune would go through (a progress bar's total)."""
    old = _last_active_before(cutoff, agent_name)
    stmt = select(func.count()).select_from(_conversations).where(old)
    return int((await db.execute(stmt)).scalar_one())


# --- key-value data ------------------------------------------------------------------------


def _old_entries(namespace: str, cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    """A namespace's `set` values last written before `cutoff`, as two conditions that are
    each one range of ix_agents_kv_entries_namespace_updated_at (their OR is not, on SQLite).

    `updated_at` is NULL only on rows a release before migration 0005 inserted (a rolling
    deploy): those go by `created_at`, their only write.
    """
    in_namespace = _entries.c.namespace == namespace
    return (
        and_(in_namespace, _entries.c.updated_at < cutoff),
        and_(in_namespace, _entries.c.updated_at.is_(None), _entries.c.created_at < cutoff),
    )


def _old_items(namespace: str, cutoff: datetime) -> ColumnElement[bool]:
    """A namespace's appended items older than `cutoff` (ix_..._namespace_created_at)."""
    return and_(_items.c.namespace == namespace, _items.c.created_at < cutoff)


async def _count_namespace_rows(db: Database, namespace: str, cutoff: datetime) -> dict[str, int]:
    old_entries = or_(*_old_entries(namespace, cutoff))
    entries = select(func.count()).select_from(_entries).where(old_entries)
    items = select(func.count()).select_from(_items).where(_old_items(namespace, cutoff))
    row = (await db.execute(select(entries.scalar_subquery(), items.scalar_subquery()))).one()
    return dict(zip(NAMESPACE_TABLES, map(int, row), strict=True))


async def _deleted(conn: AsyncConnection, stmt: Delete) -> int:
    """Run one DELETE (its own transaction); how many rows it deleted."""
    return (await conn.execute(stmt)).rowcount


async def prune_key_values(
    db: Database,
    namespace: str,
    cutoff: datetime,
    dry_run: bool = False,
    batch_size: int = DEFAULT_NAMESPACE_BATCH_SIZE,
    on_batch: OnBatch | None = None,
) -> PruneResult:
    """`RetentionMethods.prune_namespace` with the cut-off worked out (the command line's entry)."""
    result = PruneResult(cutoff, dry_run, dict.fromkeys(NAMESPACE_TABLES, 0))
    if dry_run:
        started = time.perf_counter()
        counts = await _count_namespace_rows(db, namespace, cutoff)
        result._add(counts, started)
        if on_batch is not None:
            on_batch(sum(counts.values()))
        return result
    for old_entries in _old_entries(namespace, cutoff):
        while keys := list(
            (await db.execute(select(_entries.c.key).where(old_entries).limit(batch_size)))
            .scalars()
            .all()
        ):
            started = time.perf_counter()
            # Asked again as it deletes: a value `set` since it was chosen stays.
            stmt = delete(_entries).where(old_entries, _entries.c.key.in_(keys))
            deleted = await db.run(partial(_deleted, stmt=stmt))
            result._add({"kv_entries": deleted}, started)
            if on_batch is not None:
                on_batch(len(keys))
            await give_way(started)
    old_items = _old_items(namespace, cutoff)
    while ids := list(
        (await db.execute(select(_items.c.id).where(old_items).limit(batch_size))).scalars().all()
    ):
        started = time.perf_counter()
        stmt = delete(_items).where(_items.c.id.in_(ids))
        deleted = await db.run(partial(_deleted, stmt=stmt))
        result._add({"list_items": deleted}, started)
        if on_batch is not None:
            on_batch(len(ids))
        await give_way(started)
    return result


async def count_old_key_values(db: Database, namespace: str, cutoff: datetime) -> int:
    """How many rows a namespace prune would go through (a progress bar's total)."""
    return sum((await _count_namespace_rows(db, namespace, cutoff)).values())


# --- the provider's methods ----------------------------------------------------------------


class RetentionMethods(UsesDatabase):
    """`prune` and `prune_namespace`: delete what is older than a cut-off, in short batches."""

    async def prune(
        self,
        older_than: timedelta | datetime = timedelta(days=90),
        agent_name: str | None = None,
        dry_run: bool = False,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_batch: OnBatch | None = None,
    ) -> PruneResult:
        """Delete conversations (of `agent_name`, if given) last active before now minus
        `older_than` (or before `older_than`, an aware datetime), with all their messages,
        blocks and tool calls; `batch_size` conversations per transaction.

        `dry_run` deletes nothing and counts what would go. Cancelled, it stops after the
        batch in progress (which commits whole); run again, it carries on.
        """
        cutoff = cutoff_of(older_than)
        if agent_name is not None:
            check_text("agent_name", agent_name, NAME_LENGTH)
        return await prune_conversations(
            self.db, cutoff, agent_name, dry_run, check_batch_size(batch_size), on_batch
        )

    async def prune_namespace(
        self,
        namespace: str,
        older_than: timedelta | datetime,
        dry_run: bool = False,
        *,
        batch_size: int = DEFAULT_NAMESPACE_BATCH_SIZE,
        on_batch: OnBatch | None = None,
    ) -> PruneResult:
        """Delete the `set` values of `namespace` last written before the cut-off, and its
        `append`ed items appended before it; `batch_size` rows per statement."""
        check_text("namespace", namespace, NAME_LENGTH)
        cutoff = cutoff_of(older_than)
        return await prune_key_values(
            self.db, namespace, cutoff, dry_run, check_batch_size(batch_size), on_batch
        )
