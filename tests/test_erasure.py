"""Erasure by user: `erase_user` deletes the conversations a person alone wrote in, whole,
and only their own messages from the ones they shared (all of those too, with
`whole_threads`), and their OAuth tokens unless limited to one agent; a dry run counts
exactly what the erasure then deletes; what is left is well formed; another person's
turns, even ones written while the erasure runs, are all kept; cancelled, it runs again
to the same end; bad arguments delete nothing. Every test runs on each backend and
executor, the command line's (`erase-user`) on each persistent backend.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.cli import EXIT_OK, EXIT_USAGE
from slack_agents_sa.erasure import ERASED_TABLES, ErasureReceipt
from slack_agents_sa.errors import MissingRowError
from slack_agents_sa.models import Message, table_of
from slack_agents_sa.settings import normalize_url
from slack_agents_sa.types import utcnow
from tests.conversation_rows import (
    BLOCKS_PER_TURN,
    NO_ORPHANS,
    orphans,
    reply,
    rows_per_conversation,
)
from tests.databases import PERSISTENT_BACKENDS_BOTH, backend_params, opened_provider
from tests.samples import TOKEN
from tests.test_cli import run_cli

_messages = table_of(Message)

#: The person erased, and another person who shares a conversation with them.
A = "U0ERASED"
B = "U0KEPT"


def _rows(turns: int) -> tuple[int, int, int]:
    """A conversation's (messages, blocks, tool calls) after `turns` turns (`reply`)."""
    return turns, turns * BLOCKS_PER_TURN, turns


def _counts(conversations: int, turns: int, tokens: int = 0) -> dict[str, int]:
    messages, blocks, tool_calls = _rows(turns)
    return dict(
        zip(ERASED_TABLES, (conversations, messages, blocks, tool_calls, tokens), strict=True)
    )


def _handle(user: str) -> str:
    return f"{user.lower()}-handle"


async def started(storage: Provider, conversation_id: int, user: str) -> int:
    """A message of `user`'s, its blocks still to come."""
    return await storage.create_message(conversation_id, user, f"name {user}", _handle(user))


async def thread(
    storage: Provider, name: str, turns_by: Sequence[str], *, agent: str = "helper"
) -> int:
    """A conversation with one turn by each of `turns_by`, in order; tags `agent-name-n`."""
    conversation_id = await storage.get_or_create_conversation(agent, "C1", name, "ops")
    for number, user in enumerate(turns_by):
        message = await started(storage, conversation_id, user)
        await reply(storage, message, f"{agent}-{name}-{number}")
    return conversation_id


async def people(storage: Provider) -> tuple[int, int, int, int]:
    """c1: A alone, 2 turns; c2: A once then B twice; c3: B alone; c4: A alone, another
    agent's. An OAuth token for each person."""
    c1 = await thread(storage, "c1", (A, A))
    c2 = await thread(storage, "c2", (A, B, B))
    c3 = await thread(storage, "c3", (B,))
    c4 = await thread(storage, "c4", (A,), agent="other")
    for user in (A, B):
        await storage.put_oauth_token(user, "mcp", TOKEN)
    return c1, c2, c3, c4


async def turns_by(storage: Provider, user: str) -> dict[int, int]:
    """The person's messages per conversation."""
    stmt = (
        select(_messages.c.conversation_id, func.count())
        .where(_messages.c.user_id == user)
        .group_by(_messages.c.conversation_id)
    )
    return {int(key): int(count) for key, count in map(tuple, await storage.db.fetch(stmt))}


async def tokens(storage: Provider) -> tuple[bool, bool]:
    """Whether A's and B's OAuth tokens are there."""
    return (
        await storage.get_oauth_token(A, "mcp") is not None,
        await storage.get_oauth_token(B, "mcp") is not None,
    )


async def assert_well_formed(storage: Provider) -> None:
    """Nothing orphaned; each history's tool calls all there; nothing of A in the export."""
    assert await orphans(storage) == NO_ORPHANS
    for conversation_id in await rows_per_conversation(storage):
        for _, blocks in await storage.get_message_blocks(conversation_id):
            for block in blocks:
                if block["block_type"] == "tool_use":
                    call_id = block["content"]["tool_call_id"]
                    assert isinstance(call_id, str), block
                    assert await storage.get_tool_call(call_id) is not None, call_id
        exported = await storage.get_messages_with_blocks(conversation_id)
        assert A not in {message["user_id"] for message in exported}
    for agent in ("helper", "other"):
        assert await storage.get_conversations_for_export(agent, handle=_handle(A)) == []
    assert await turns_by(storage, A) == {}


async def test_erase_user_dry_run_counts_what_the_erasure_then_deletes(provider: Provider) -> None:
    c1, c2, c3, c4 = await people(provider)
    before = await rows_per_conversation(provider)
    assert before[c2] == _rows(3)

    would = await provider.erase_user(A, dry_run=True)
    assert isinstance(would, ErasureReceipt) and would.dry_run
    assert would.counts == _counts(2, 4, tokens=1)
    assert would.deleted_conversations == [c1, c4] and would.trimmed_conversations == [c2]
    assert would.agent_name is None and not would.whole_threads and would.batches == 1
    assert would.finished_at is not None and would.started_at <= would.finished_at
    assert await rows_per_conversation(provider) == before  # nothing deleted
    assert await tokens(provider) == (True, True)

    erased = await provider.erase_user(A)
    assert not erased.dry_run and erased.batches == 1
    assert erased.counts == would.counts
    assert erased.deleted_conversations == [c1, c4] and erased.trimmed_conversations == [c2]
    assert await rows_per_conversation(provider) == {c2: _rows(2), c3: before[c3]}
    assert await turns_by(provider, B) == {c2: 2, c3: 1}
    exported = await provider.get_messages_with_blocks(c2)
    assert [message["user_id"] for message in exported] == [B, B]
    assert [len(message["blocks"]) for message in exported] == [BLOCKS_PER_TURN] * 2
    for tag, kept in (("c2-0", False), ("c2-1", True), ("c2-2", True), ("c1-0", False)):
        assert (await provider.get_tool_call(f"call-helper-{tag}") is not None) is kept
    assert await provider.get_tool_call("call-other-c4-0") is None
    assert await tokens(provider) == (False, True)
    await assert_well_formed(provider)

    again = await provider.erase_user(A)
    assert again.counts == _counts(0, 0) and again.batches == 0
    assert again.deleted_conversations == again.trimmed_conversations == []


async def test_erase_user_by_agent_leaves_other_agents_and_oauth_tokens(
    provider: Provider,
) -> None:
    c1, c2, c3, c4 = await people(provider)
    before = await rows_per_conversation(provider)

    would = await provider.erase_user(A, agent_name="helper", dry_run=True)
    erased = await provider.erase_user(A, agent_name="helper")
    for receipt in (would, erased):
        assert receipt.agent_name == "helper"
        assert receipt.counts == _counts(1, 3)  # c1 whole, A's turn in c2; no token
        assert receipt.deleted_conversations == [c1] and receipt.trimmed_conversations == [c2]
    after = await rows_per_conversation(provider)
    assert after == {c2: _rows(2), c3: before[c3], c4: before[c4]}
    assert await turns_by(provider, A) == {c4: 1}
    assert await tokens(provider) == (True, True)
    assert await orphans(provider) == NO_ORPHANS


async def test_erase_user_whole_threads_deletes_shared_conversations_whole(
    provider: Provider,
) -> None:
    c1, c2, c3, c4 = await people(provider)
    before = await rows_per_conversation(provider)

    would = await provider.erase_user(A, whole_threads=True, dry_run=True)
    assert await rows_per_conversation(provider) == before
    erased = await provider.erase_user(A, whole_threads=True)
    for receipt in (would, erased):
        assert receipt.whole_threads
        assert receipt.counts == _counts(3, 6, tokens=1)  # B's two turns in c2 as well
        assert receipt.deleted_conversations == [c1, c2, c4]
        assert receipt.trimmed_conversations == []
    assert await rows_per_conversation(provider) == {c3: before[c3]}
    assert await tokens(provider) == (False, True)
    await assert_well_formed(provider)


async def test_cancelled_erasure_run_again_ends_as_an_uninterrupted_one(
    provider: Provider,
) -> None:
    ids = [await thread(provider, f"t{n}", (A, B) if n % 3 == 1 else (A,)) for n in range(9)]
    alone = [key for n, key in enumerate(ids) if n % 3 != 1]
    shared = [key for n, key in enumerate(ids) if n % 3 == 1]
    own = await thread(provider, "own", (B,))
    await provider.put_oauth_token(A, "mcp", TOKEN)
    before = await rows_per_conversation(provider)
    predicted = await provider.erase_user(A, dry_run=True)
    assert predicted.deleted_conversations == alone
    assert predicted.trimmed_conversations == shared
    assert predicted.counts == _counts(6, 9, tokens=1)
    first_batch = asyncio.Event()

    def on_batch(conversations: int) -> None:
        assert conversations == 1
        first_batch.set()

    task = asyncio.create_task(provider.erase_user(A, batch_size=1, on_batch=on_batch))
    await first_batch.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.db.settle()  # a batch cancelled mid-way still commits whole

    halfway = await rows_per_conversation(provider)
    assert await orphans(provider) == NO_ORPHANS
    # Each conversation is as it was or as the erasure leaves it: none half erased.
    for key, rows in halfway.items():
        assert rows in {before[key], _rows(1) if key in shared else before[key]}, key
    gone = [key for key in alone if key not in halfway]
    trimmed = [key for key in shared if halfway[key] == _rows(1)]
    assert 1 <= len(gone) + len(trimmed) < len(ids) - 2  # stopped early
    assert await tokens(provider) == (True, False)  # tokens go last

    resumed = await provider.erase_user(A, batch_size=2)
    # The remainder, nothing counted twice, nothing left.
    assert resumed.deleted_conversations == [key for key in alone if key not in gone]
    assert resumed.trimmed_conversations == [key for key in shared if key not in trimmed]
    left = len(ids) - len(gone) - len(trimmed)
    assert resumed.counts == _counts(len(alone) - len(gone), left, tokens=1)
    assert len(gone) + resumed.counts["conversations"] == predicted.counts["conversations"]
    # The end state of an uninterrupted erasure (as in the dry run's prediction).
    assert await rows_per_conversation(provider) == {
        **{key: _rows(1) for key in shared},
        own: before[own],
    }
    assert await turns_by(provider, B) == {**dict.fromkeys(shared, 1), own: 1}
    assert await tokens(provider) == (False, False)
    await assert_well_formed(provider)


async def test_other_peoples_turns_during_an_erasure_are_all_kept(provider: Provider) -> None:
    """B writes in the shared conversation, in their own, and in each of A's (from the last,
    as the erasure goes from the first: they meet) while A is erased a conversation a
    batch: every turn acknowledged is kept whole, its conversation trimmed; one refused
    (`MissingRowError`: its conversation went first) wrote nothing."""
    alone = [await thread(provider, f"alone-{n}", (A,)) for n in range(8)]
    shared = await thread(provider, "shared", (A, B))
    own = await thread(provider, "own", (B,))
    acknowledged = {shared: 1, own: 1}

    async def agent() -> None:
        for number, late in enumerate(reversed(alone)):
            for key in (shared, own, late):
                try:
                    message = await started(provider, key, B)
                except MissingRowError:
                    assert key == late
                    continue
                await reply(provider, message, f"live-{number}-{key}")  # never refused
                acknowledged[key] = acknowledged.get(key, 0) + 1

    erased, _ = await asyncio.gather(provider.erase_user(A, batch_size=1), agent())
    assert acknowledged[shared] == acknowledged[own] == 1 + len(alone)
    assert await turns_by(provider, B) == acknowledged
    assert await rows_per_conversation(provider) == {
        key: _rows(turns) for key, turns in acknowledged.items()
    }
    # Those of A's conversations B wrote in before their batch are kept, trimmed.
    kept = [key for key in alone if key in acknowledged]
    assert kept == alone[len(alone) - len(kept) :]  # where B got first: from the end
    assert erased.deleted_conversations == [key for key in alone if key not in kept]
    assert erased.trimmed_conversations == [*kept, shared]
    assert erased.counts == _counts(len(alone) - len(kept), len(alone) + 1)
    await assert_well_formed(provider)


@pytest.mark.parametrize("fresh_url", backend_params(PERSISTENT_BACKENDS_BOTH), indirect=True)
async def test_a_message_being_written_as_its_batch_starts_keeps_the_conversation(
    fresh_url: str, provider: Provider
) -> None:
    """Another process adds B's message to A's conversation, its transaction still open, as
    the erasure begins: the batch waits for it (its lock), then sees B and trims, and never
    deletes the conversation, B's message committed meanwhile with it."""
    alone = await thread(provider, "alone", (A,))
    engine = create_async_engine(normalize_url(fresh_url))
    try:
        async with engine.begin() as conn:
            values = {"user_name": "n", "user_handle": "h", "created_at": utcnow()}
            await conn.execute(
                insert(_messages), {"conversation_id": alone, "user_id": B, **values}
            )
            erasing = asyncio.create_task(provider.erase_user(A))
            await asyncio.sleep(0.5)
            assert not erasing.done()  # waiting for the writer's commit
        erased = await erasing
    finally:
        await engine.dispose()
    assert erased.deleted_conversations == [] and erased.trimmed_conversations == [alone]
    assert erased.counts == _counts(0, 1)
    assert await turns_by(provider, B) == {alone: 1}
    await assert_well_formed(provider)


async def test_erase_user_refuses_bad_arguments_and_matches_only_the_exact_id(
    provider: Provider,
) -> None:
    await people(provider)
    before = await rows_per_conversation(provider)
    with pytest.raises(ValueError, match="user_id is 256 characters long"):
        await provider.erase_user("x" * 256)
    with pytest.raises(ValueError, match="user_id contains a NUL"):
        await provider.erase_user(f"{A}\x00")
    with pytest.raises(ValueError, match="batch_size"):
        await provider.erase_user(A, batch_size=0)
    with pytest.raises(ValueError, match="agent_name"):
        await provider.erase_user(A, agent_name="a" * 256)
    # Another id, however close (MySQL's collations fold case and pad spaces), erases nothing.
    for other in ("x" * 255, A.lower(), f"{A} ", f" {A}", A[:-1]):
        assert (await provider.erase_user(other)).counts == _counts(0, 0), other
    assert await rows_per_conversation(provider) == before
    assert await tokens(provider) == (True, True)


# --- the CLI --------------------------------------------------------------------------------


async def _filled(url: str) -> tuple[int, int, int, int]:
    async with opened_provider(url) as storage:
        return await people(storage)


async def _remaining(url: str) -> tuple[dict[int, tuple[int, int, int]], tuple[bool, bool]]:
    async with opened_provider(url) as storage:
        assert await orphans(storage) == NO_ORPHANS
        return await rows_per_conversation(storage), await tokens(storage)


_RECEIPT_KEYS = """counts deleted_conversations trimmed_conversations dry_run agent_name
    whole_threads started_at finished_at batches"""


def _table_rows(stdout: str) -> dict[str, int]:
    """The rows per table of `erase-user`'s table form."""
    lines = [line.split() for line in stdout.splitlines()]
    return {p[0]: int(p[1]) for p in lines if len(p) == 2 and p[0] in ERASED_TABLES}


async def test_cli_erase_user_dry_run_then_json(empty_url: str) -> None:
    c1, c2, c3, c4 = await _filled(empty_url)
    before = await _remaining(empty_url)
    erase = ("--url", empty_url, "erase-user", A)

    dry = await asyncio.to_thread(run_cli, *erase, "--dry-run", "--no-progress")
    assert dry.returncode == EXIT_OK, dry.stderr
    assert "would delete (dry run)" in dry.stdout
    assert _table_rows(dry.stdout) == _counts(2, 4, tokens=1)
    assert A not in dry.stdout
    assert await _remaining(empty_url) == before

    limited = await asyncio.to_thread(
        run_cli, *erase, "--agent", "helper", "--whole-threads", "--dry-run", "--json"
    )
    assert limited.returncode == EXIT_OK, limited.stderr
    report = json.loads(limited.stdout)
    assert report["counts"] == _counts(2, 5)  # c1 and c2 whole
    assert report["deleted_conversations"] == [c1, c2] and report["trimmed_conversations"] == []
    assert report["agent_name"] == "helper" and report["whole_threads"] is True
    assert report["dry_run"] is True
    assert await _remaining(empty_url) == before

    done = await asyncio.to_thread(run_cli, *erase, "--json", "--no-progress")
    assert done.returncode == EXIT_OK, done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= set(_RECEIPT_KEYS.split())
    assert report["counts"] == _counts(2, 4, tokens=1)
    assert report["deleted_conversations"] == [c1, c4] and report["trimmed_conversations"] == [c2]
    assert report["dry_run"] is False and report["agent_name"] is None
    assert report["whole_threads"] is False and report["batches"] == 1
    started = datetime.fromisoformat(report["started_at"])
    assert started <= datetime.fromisoformat(report["finished_at"])
    for secret in (A, "question", "answer", "chart.png", "helper-c"):
        assert secret not in done.stdout, secret
    conversations, held = await _remaining(empty_url)
    assert conversations == {c2: _rows(2), c3: before[0][c3]}
    assert held == (False, True)

    again = await asyncio.to_thread(run_cli, *erase, "--no-progress")
    assert again.returncode == EXIT_OK, again.stderr
    assert "would delete" not in again.stdout
    assert _table_rows(again.stdout) == _counts(0, 0)


@pytest.mark.parametrize("user_id", ["", "x" * 256])
def test_cli_erase_user_refuses_a_bad_user_id_with_exit_2(tmp_path: Path, user_id: str) -> None:
    done = run_cli("--url", f"sqlite:///{tmp_path / 'x.db'}", "erase-user", user_id)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "user_id" in done.stderr.lower()
