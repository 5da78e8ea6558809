"""Which lane serves a call: of the free lanes, the one opened first. Calls one after
another, as after a burst of concurrent ones, keep to one lane, whose prepared statements
and server-side plans are warm, rather than whichever lane the burst freed last.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import ColumnElement, func, select

from slack_agents_sa import Provider
from tests.databases import MYSQL, POSTGRES, backend_params

#: Concurrent calls of the burst: as many as the lanes (`pool_size`).
LANES = 5
#: Seconds each call of the burst holds its lane on the server, so that all overlap.
HOLD_S = 0.2


def _session_id(provider: Provider) -> ColumnElement[Any]:
    if provider.db.dialect_name in ("mysql", "mariadb"):
        return func.connection_id()
    return func.pg_backend_pid()


def _held(provider: Provider) -> ColumnElement[Any]:
    if provider.db.dialect_name in ("mysql", "mariadb"):
        return func.sleep(HOLD_S)
    return func.pg_sleep(HOLD_S)


async def _sessions_of_a_burst(provider: Provider) -> list[int]:
    stmt = select(_session_id(provider), _held(provider))
    rows = await asyncio.gather(*(provider.db.fetch(stmt) for _ in range(LANES)))
    return [int(found[0][0]) for found in rows]


@pytest.mark.parametrize("fresh_url", backend_params([POSTGRES, MYSQL]), indirect=True)
async def test_calls_after_a_burst_keep_to_the_lane_opened_first(provider: Provider) -> None:
    assert provider.db.executor_kind == "native"
    first = [int(row[0]) for row in await provider.db.fetch(select(_session_id(provider)))]
    for _ in range(3):
        burst = await _sessions_of_a_burst(provider)
        assert len(set(burst)) == LANES, "the burst did not use every lane at once"
        after = [
            int((await provider.db.fetch(select(_session_id(provider))))[0][0]) for _ in range(6)
        ]
        assert set(after) == set(first)
