"""Two providers on two nodes of a Galera cluster: each reads what the other just wrote.

A Galera node answers a read from what it has applied so far, which can lag a commit made
on another node (measured: a third of reads right after a write were stale with
`wsrep_sync_wait = 0`). With `read_your_writes` (on by default where the server reports
`wsrep_on`) every read waits for the cluster's commits first, on both executors.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.databases import (
    MYSQL,
    opened_provider,
    scratch_database,
)
from tests.galera_cluster import GaleraCluster, GaleraUnavailable

EXECUTORS = ["native", "sqlalchemy"]
#: Write on node 1, read at once on node 2, this many times.
ROUNDS = 150


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_a_write_on_one_node_is_read_at_once_on_another(
    galera_database: list[str], executor: str
) -> None:
    async with (
        opened_provider(galera_database[0], executor=executor) as writer,
        opened_provider(galera_database[1], executor=executor) as reader,
    ):
        stale = 0
        for round_ in range(ROUNDS):
            await writer.set("galera", "turn", {"n": round_})
            if await reader.get("galera", "turn") != {"n": round_}:
                stale += 1
        assert stale == 0


@pytest.mark.parametrize(("option", "expected"), [(None, 1), (True, 1), (False, 0)])
async def test_read_your_writes_sets_wsrep_sync_wait_on_every_connection(
    galera_database: list[str], option: bool | None, expected: int
) -> None:
    async with (
        opened_provider(galera_database[1], read_your_writes=option) as storage,
        storage.db.engine.connect() as conn,
    ):
        assert await conn.scalar(text("SELECT @@wsrep_sync_wait")) == expected


async def test_the_option_changes_nothing_on_a_server_without_galera() -> None:
    async with (
        scratch_database(MYSQL) as url,
        opened_provider(url, read_your_writes=True) as storage,
        storage.db.engine.connect() as conn,
    ):
        assert await conn.scalar(text("SELECT @@wsrep_sync_wait")) == 0


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_a_cluster_requiring_primary_keys_takes_every_table_of_ours(
    galera: GaleraCluster, galera_database: list[str], executor: str
) -> None:
    """`wsrep_mode = REQUIRED_PRIMARY_KEY` refuses a table without one: the migrations,
    the lease table and the provider's calls all pass under it."""
    node = galera.nodes[0]
    before = galera.sql(node, "SELECT @@GLOBAL.wsrep_mode").strip()
    galera.sql(node, "SET GLOBAL wsrep_mode = 'REQUIRED_PRIMARY_KEY'")
    try:
        database = make_url(galera_database[0]).database
        with pytest.raises(GaleraUnavailable, match="ERROR 4165"):  # the mode is in force
            galera.sql(node, f"CREATE TABLE `{database}`.no_key (a INT) ENGINE=InnoDB")
        async with opened_provider(galera_database[0], executor=executor) as storage:
            conversation = await storage.get_or_create_conversation("bot", "C1", "1.1")
            assert await storage.has_conversation("bot", "C1", "1.1")
            await storage.set("pk", "k", {"v": conversation})
            assert await storage.get("pk", "k") == {"v": conversation}
    finally:
        galera.sql(node, f"SET GLOBAL wsrep_mode = '{before}'")
