"""Statements a test runs as another client of the database, beside the provider."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa.settings import normalize_url


def admin_url(url: URL | str) -> URL:
    """`url` with the driver the tests use as another client of its database."""
    # One admin driver per server: the same database, reached independently of the provider.
    parsed = normalize_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        return parsed.set(drivername="mysql+asyncmy")
    return parsed


async def admin_rows(url: URL | str, statement: str, **params: Any) -> list[Any]:
    """`statement` (with bound `params`) on a connection of its own, in autocommit; its rows."""
    engine = create_async_engine(admin_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()
