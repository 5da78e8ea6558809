"""A MySQL/MariaDB URL naming several hosts (`mysql://u@h1:3306,h2:3306/db`), tried in order.

The way libpq's host list works for PostgreSQL: the first host that takes the connection
serves it, on both executors and aiomysql, for start-up and for every lane or pooled
connection opened later. Against the configured server with a closed port listed first,
and against a Galera cluster whose first node is killed mid-workload.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy.engine import make_url

from slack_agents_sa import Provider
from slack_agents_sa.errors import ConnectionLostError
from slack_agents_sa.settings import normalize_url, safe_url
from tests.databases import (
    MYSQL,
    MYSQL_AIOMYSQL,
    MYSQL_SQLALCHEMY,
    Backend,
    backend_params,
    opened_provider,
    scratch_database,
)
from tests.galera_cluster import GaleraCluster
from tests.pg_cluster import free_port
from tests.tcp_proxy import silent_server

#: A test body not done after this many seconds is hung.
HANG_S = 120


def _listed(url: str, *ports: int) -> str:
    """`url` with its host replaced by 127.0.0.1 at each of `ports`, as a comma list."""
    parsed = make_url(url)
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    user = parsed.username or "root"
    password = f":{parsed.password}" if parsed.password else ""
    return f"{parsed.drivername}://{user}{password}@{hosts}/{parsed.database}"


def test_a_host_list_becomes_the_query_form_with_the_default_port() -> None:
    url = normalize_url("mysql://u:secret@db-1:3307,db-2/agents")
    assert url.query["host"] == ("db-1:3307", "db-2:3306")
    assert safe_url(url) == (
        "mysql+asyncmy://u:***@/agents?host=db-1:3307&host=db-2:3306&charset=utf8mb4"
    )


@pytest.mark.parametrize("backend", backend_params([MYSQL, MYSQL_SQLALCHEMY, MYSQL_AIOMYSQL]))
async def test_the_first_host_that_answers_serves(backend: Backend) -> None:
    async with scratch_database(backend) as database:
        real = make_url(database)
        assert real.port is not None
        url = _listed(database, free_port(), real.port)
        async with opened_provider(url, **backend.options) as storage:
            await asyncio.wait_for(storage.set("hosts", "k", {"v": 1}), HANG_S)
            assert await storage.get("hosts", "k") == {"v": 1}


async def test_a_connect_timeout_names_every_host_tried() -> None:
    async with silent_server() as silent:
        url = _listed(MYSQL.server_url.render_as_string(hide_password=False), silent, silent)
        storage = Provider(url=url, connect_timeout=0.5)
        try:
            where = re.escape(f"127.0.0.1:{silent}, 127.0.0.1:{silent}")
            with pytest.raises(TimeoutError, match=f"connecting to {where}"):
                await asyncio.wait_for(storage.initialize(), HANG_S)
        finally:
            await storage.close()


@pytest.mark.parametrize("executor", ["native", "sqlalchemy"])
async def test_a_killed_first_node_hands_over_to_the_next_without_a_restart(
    galera: GaleraCluster, galera_database: list[str], executor: str
) -> None:
    ports = [make_url(url).port for url in galera_database]
    assert all(port is not None for port in ports)
    url = _listed(galera_database[0], *(port for port in ports if port is not None))
    acknowledged: list[int] = []
    failed = 0
    try:
        async with opened_provider(url, executor=executor, connect_timeout=5) as storage:
            for turn in range(20):
                await storage.append("hosts", "log", {"turn": turn})
                acknowledged.append(turn)
            galera.kill(1)
            turn = 20
            while len(acknowledged) < 40:
                try:
                    await asyncio.wait_for(storage.append("hosts", "log", {"turn": turn}), HANG_S)
                    acknowledged.append(turn)
                except ConnectionLostError:
                    failed += 1
                    assert failed < 50, "writes never resumed on the next node"
                    await asyncio.sleep(0.1)
                turn += 1
            written = [item["turn"] for item in await storage.get_list("hosts", "log")]
    finally:
        galera.restart(1)
    # Every acknowledged write is there once; a failed one may have landed (or not).
    assert [turn for turn in written if turn in acknowledged] == acknowledged
    assert len(written) == len(set(written))
    print(f"\n{executor}: {failed} calls failed after node 1 was killed")
