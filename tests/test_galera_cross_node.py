"""Two providers on two nodes of one Galera cluster, working on the same rows at once.

Every node takes writes, and Galera settles conflicting ones at commit: the loser's
transaction fails certification (error 1213, at COMMIT or at its next statement) and is
rolled back whole. The provider runs such a call again, so agents never see it; retention,
key rotation and the importer do the same per batch. What must hold across nodes:

- agents on two nodes share threads: one conversation per thread, every acknowledged turn
  read back once, from any node;
- `prune` on one node while agents write on another deletes only conversations that stay
  idle: a conversation that got a write is kept whole, and a write that comes too late is
  refused with `MissingRowError` before anything of it is written;
- key rotation on one node while agents put new tokens on another leaves every token as
  last put, under the first key after a second pass, never half rotated;
- a transaction that loses certification at COMMIT is retried, on both executors.

Migrations racing on two nodes: tests/test_mysql_lease.py; a node killed mid-workload:
tests/test_mysql_hosts.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from slack_agents_sa import Provider
from slack_agents_sa.errors import MissingRowError
from slack_agents_sa.keys import rotate_keys
from slack_agents_sa.models import KeyValueEntry, table_of
from slack_agents_sa.secretbox import PREFIX
from tests import samples
from tests.conversation_rows import (
    BLOCKS_PER_TURN,
    NO_ORPHANS,
    conversation,
    orphans,
    rows_per_conversation,
    turn,
)
from tests.databases import opened_provider

#: Writers on three nodes race as fast as they go: how often one loses 6 times in a row
#: depends on how busy the machine is, and the retry policy is tuned for an idle one.
pytestmark = pytest.mark.alone

EXECUTORS = ["native", "sqlalchemy"]
#: The provider's log line for a call it runs again after a conflict.
RETRIED = "retrying a call the database rolled back"
#: A test body not done after this many seconds is hung.
HANG_S = 120


def _retries(caplog: pytest.LogCaptureFixture) -> int:
    return sum(RETRIED in record.getMessage() for record in caplog.records)


@pytest.fixture
def log_retries(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="slack_agents_sa.database")
    return caplog


async def _bounded(work: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(work, HANG_S)


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_agents_on_two_nodes_share_threads_and_read_each_others_turns(
    galera_database: list[str], executor: str, log_retries: pytest.LogCaptureFixture
) -> None:
    threads = [f"t{n}" for n in range(3)]
    workers_per_node, turns = 2, 8
    acknowledged: dict[str, list[str]] = {thread: [] for thread in threads}
    async with (
        opened_provider(galera_database[0], executor=executor) as node1,
        opened_provider(galera_database[1], executor=executor) as node2,
        opened_provider(galera_database[2], executor=executor) as node3,
    ):
        nodes = {"n1": node1, "n2": node2}

        async def agent(name: str, storage: Provider, other: Provider) -> None:
            for number in range(turns):
                thread = threads[number % len(threads)]
                # A channel rename now and then: two nodes updating one row.
                channel_name = f"ops-{name}" if number % 3 == 0 else None
                conversation_id = await storage.get_or_create_conversation(
                    "helper", "C1", thread, channel_name
                )
                message = await storage.create_message(conversation_id, "U1", "Ann", "ann")
                said = f"{name}-{number}"
                await storage.append_text_block(message, said, is_user=True)
                acknowledged[thread].append(said)
                # The other node sees the turn at once (read_your_writes).
                history = await other.get_message_blocks(conversation_id)
                assert said in [
                    block["content"]["text"] for _, blocks in history for block in blocks
                ]

        await _bounded(
            asyncio.gather(
                *(
                    agent(f"{label}w{worker}", storage, node2 if storage is node1 else node1)
                    for label, storage in nodes.items()
                    for worker in range(workers_per_node)
                )
            )
        )
        # Read from the third node: one conversation per thread, each turn there once.
        for thread in threads:
            assert await node3.has_conversation("helper", "C1", thread)
            conversation_id = await node3.get_or_create_conversation("helper", "C1", thread)
            said = [
                block["content"]["text"]
                for _, blocks in await node3.get_message_blocks(conversation_id)
                for block in blocks
            ]
            assert sorted(said) == sorted(acknowledged[thread])
        assert len(await rows_per_conversation(node3)) == len(threads)
    print(f"\n{executor}: {_retries(log_retries)} calls retried after a conflict")


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_prune_on_one_node_while_agents_write_on_another(
    galera_database: list[str], executor: str, log_retries: pytest.LogCaptureFixture
) -> None:
    """Half the old conversations get turns on node 2 while node 1 prunes, one conversation
    per batch. Each one ends either kept whole, with every acknowledged turn, or deleted,
    with the late turn refused at its first write and nothing of it left."""
    async with (
        opened_provider(galera_database[0], executor=executor) as pruner,
        opened_provider(galera_database[1], executor=executor) as agent,
    ):
        old = [await conversation(pruner, f"old-{n}", 1, age_days=100) for n in range(16)]
        revived = old[::2]
        acknowledged: dict[int, int] = dict.fromkeys(revived, 0)
        refused: set[int] = set()

        async def keep_talking(conversation_id: int) -> None:
            for number in range(3):
                try:
                    await turn(agent, conversation_id, f"{conversation_id}-{number}")
                except MissingRowError:
                    # Refused at the turn's first write (create_message): nothing written.
                    refused.add(conversation_id)
                    return
                acknowledged[conversation_id] += 1

        async def talk() -> None:
            await asyncio.gather(*(keep_talking(c) for c in revived))

        pruned, _ = await _bounded(
            asyncio.gather(pruner.prune(timedelta(days=90), batch_size=1), talk())
        )
        after = await rows_per_conversation(pruner)
        for conversation_id in old:
            if conversation_id not in revived or conversation_id in refused:
                assert conversation_id not in after
                continue
            turns = 1 + acknowledged[conversation_id]
            assert acknowledged[conversation_id] == 3
            assert after[conversation_id] == (turns, turns * BLOCKS_PER_TURN, turns)
        assert pruned.counts["conversations"] == len(old) - len(after)
        assert await orphans(pruner) == NO_ORPHANS
        assert await orphans(agent) == NO_ORPHANS
    print(
        f"\n{executor}: {len(after)} kept, {len(refused)} late turns refused, "
        f"{_retries(log_retries)} calls retried after a conflict"
    )


NEW = Fernet.generate_key().decode()
OLD = Fernet.generate_key().decode()


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_key_rotation_on_one_node_while_agents_put_tokens_on_another(
    galera_database: list[str], executor: str
) -> None:
    users = [f"U{n}" for n in range(40)]
    async with opened_provider(galera_database[0], encryption_keys=[OLD]) as before:
        for user in users:
            await before.put_oauth_token(user, "mcp", samples.TOKEN)
    last_put = dict.fromkeys(users, samples.TOKEN.access_token)
    async with (
        opened_provider(galera_database[0], executor=executor, encryption_keys=[NEW, OLD]) as n1,
        opened_provider(galera_database[1], executor=executor, encryption_keys=[NEW, OLD]) as n2,
    ):

        async def agent() -> None:
            for round_ in range(3):
                for user in users[::3]:
                    token = f"fresh-{round_}-{user}"
                    await n2.put_oauth_token(
                        user, "mcp", replace(samples.TOKEN, access_token=token)
                    )
                    last_put[user] = token

        first, _ = await _bounded(asyncio.gather(rotate_keys(n1.db, batch_size=4), agent()))
        second = await rotate_keys(n1.db, batch_size=4)
        tokens = second.counts["agents_oauth_tokens"]
        assert (tokens.seen, tokens.resealed, tokens.failed) == (len(users), 0, 0)
        rotated = first.counts["agents_oauth_tokens"]
        assert (rotated.seen, rotated.failed) == (len(users), 0)  # a retried batch counts once
        for user in users:
            got = await n1.get_oauth_token(user, "mcp")
            assert got is not None and got.access_token == last_put[user]
        stored = await n1.db.execute(
            select(text("access_token")).select_from(text("agents_oauth_tokens"))
        )
        for (value,) in stored:
            assert value.startswith(PREFIX)
            Fernet(NEW).decrypt(value.removeprefix(PREFIX))  # under the first key alone


def _commit_losing_to_another_node(
    winner_url: str, attempts: list[int]
) -> Callable[[AsyncConnection], Awaitable[None]]:
    """Work for `run_transaction` whose first attempt updates a row, lets a provider on
    another node update and commit the same row, and only then commits itself: Galera
    refuses that COMMIT (1213)."""
    entries = table_of(KeyValueEntry)

    async def work(conn: AsyncConnection) -> None:
        attempts.append(len(attempts) + 1)
        await conn.execute(
            update(entries)
            .where(entries.c.namespace == "race", entries.c.key == "k")
            .values(value={"by": "loser", "attempt": len(attempts)})
        )
        if len(attempts) == 1:
            async with opened_provider(winner_url) as winner:
                await winner.set("race", "k", {"by": "winner"})

    return work


async def test_a_transaction_refused_at_commit_by_certification_is_run_again(
    galera_database: list[str],
) -> None:
    attempts: list[int] = []
    async with opened_provider(galera_database[0]) as storage:
        await storage.set("race", "k", {"by": "nobody"})
        work = _commit_losing_to_another_node(galera_database[1], attempts)
        await _bounded(storage.db.run_transaction(work))
        assert attempts == [1, 2]
        assert await storage.get("race", "k") == {"by": "loser", "attempt": 2}


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_one_row_written_from_three_nodes_at_once_never_surfaces_a_conflict(
    galera_database: list[str], executor: str, log_retries: pytest.LogCaptureFixture
) -> None:
    """Two writers per node put one key-value row and one OAuth row as fast as they go:
    the conflicts are retried away, and every node ends with the same value."""
    async with (
        opened_provider(galera_database[0], executor=executor) as node1,
        opened_provider(galera_database[1], executor=executor) as node2,
        opened_provider(galera_database[2], executor=executor) as node3,
    ):

        async def writer(storage: Provider, name: str) -> None:
            for number in range(25):
                await storage.set("hot", "row", {"by": name, "n": number})
                await storage.put_oauth_token("U-hot", "mcp", samples.TOKEN)

        await _bounded(
            asyncio.gather(
                *(
                    writer(storage, f"{index}-{task}")
                    for index, storage in enumerate((node1, node2, node3))
                    for task in range(2)
                )
            )
        )
        final = [await storage.get("hot", "row") for storage in (node1, node2, node3)]
        assert final[0] == final[1] == final[2] is not None
    print(f"\n{executor}: {_retries(log_retries)} calls retried after a conflict")
