"""What the package reads from its drivers beyond their documented API, checked on the
installed versions (`./dev lowest` runs this module on the lowest versions allowed).

The native MySQL executor sends a transaction's steps as one packet of several statements
(`executors/mysql.py`): that needs asyncmy to connect with CLIENT_MULTI_STATEMENTS, which
it does unasked; a release that stopped would refuse those packets, so that fails here.

asyncmy's `Connection._stream_broken` is how a MySQL lane killed while idle is noticed
without a round trip (`backends/mysql.py`, `driver_says_closed`): a release without it
would silently leave killed lanes to fail their next call, so its absence fails here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.engine import URL

from slack_agents_sa.backends import backend_for
from tests.admin import admin_rows
from tests.databases import MYSQL

HANG_S = 120


@pytest.fixture
def mysql_url() -> URL:
    """The MySQL/MariaDB server (asyncmy); skipped locally when its variable is unset."""
    return MYSQL.server_url


async def _connect(url: URL) -> Any:
    import asyncmy

    return await asyncmy.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        db=url.database,
    )


async def test_asyncmy_runs_a_packet_of_several_statements_and_reads_each_result(
    mysql_url: URL,
) -> None:
    conn = await _connect(mysql_url)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT 1; SELECT 2 UNION ALL SELECT 3; DO 4")
            assert await cursor.fetchall() == ((1,),)
            assert await cursor.nextset()
            assert await cursor.fetchall() == ((2,), (3,))
            assert await cursor.nextset()
            assert cursor.description is None
            assert not await cursor.nextset()
            # The connection is in step: the next command gets its own answer.
            await cursor.execute("SELECT 5")
            assert await cursor.fetchall() == ((5,),)
    finally:
        conn.close()


async def test_asyncmy_reports_a_connection_the_server_closed_without_a_round_trip(
    mysql_url: URL,
) -> None:
    url = mysql_url
    conn = await _connect(url)
    mysql = backend_for(url)
    try:
        assert hasattr(conn, "_stream_broken"), "asyncmy no longer has _stream_broken"
        assert not mysql.driver_says_closed(conn)
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT CONNECTION_ID()")
            (session,) = await cursor.fetchone()
        await admin_rows(url, f"KILL {int(session)}")  # KILL takes no bound parameter
        for _ in range(HANG_S * 20):  # no command is sent: the event loop sees the EOF
            if mysql.driver_says_closed(conn):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("asyncmy never noticed the server closed the connection")
    finally:
        conn.close()
