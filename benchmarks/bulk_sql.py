"""Bulk fills for the scale benchmarks: plain SQL, the only dialect-specific code here.

A statement names its dialect-specific parts in braces, filled in per database:
`{series}` (a row source of x from :first to :last), `{now}`, `{old}` (120 days ago),
`{true}` and `{json}` (the cast a JSON literal needs).
"""

from __future__ import annotations

from sqlalchemy import text

from slack_agents_sa import Provider

_PARTS = {
    "postgresql": {
        "series": "generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g(x)",
        "now": "now()",
        "old": "now() - interval '120 days'",
        "true": "true",
        "json": "::json",
    },
    "sqlite": {
        "series": "(WITH RECURSIVE s(x) AS (SELECT :first UNION ALL SELECT x + 1 FROM s "
        "WHERE x < :last) SELECT x FROM s) AS g",
        "now": "strftime('%Y-%m-%d %H:%M:%f', 'now')",
        "old": "strftime('%Y-%m-%d %H:%M:%f', 'now', '-120 days')",
        "true": "1",
        "json": "",
    },
}


async def bulk_sql(storage: Provider, statement: str, **params: int) -> None:
    """Run `statement`, its braces filled for `storage`'s database, in one transaction."""
    statement = statement.format(**_PARTS[storage.db.dialect_name])
    async with storage.db.transaction() as conn:
        await conn.execute(text(statement), params)
