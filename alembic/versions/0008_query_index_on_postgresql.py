"""PostgreSQL: an index for `query` on each key-value table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08

`query(namespace, filters)` read every row of the namespace and decided in Python: 57-77 ms
for 100,000 entries. Each key-value table gets a GIN index (`jsonb_path_ops`) over
`{namespace: [the document's top-level string values]}` for the documents jsonb reads: none
with a `\\u` escape other than `\\u0001`-`\\u007f` (jsonb refuses `\\u0000` and lone
surrogates, which our values may hold, and past 007F unless the database is UTF8, and fails
the whole statement on them) and none over 128 KiB (a number there could overflow jsonb's
numeric). Any other document is held as `{namespace: null}`, and every query reads those of
its namespace too.

`slack_agents_sa.backends.postgresql` spells the same expression in its queries: the planner
uses an expression index only for the very expression it was built on. Plain CREATE INDEX
in the migration's transaction: it holds off writes to the table (not reads) while it runs
(docs/schema.md). `fastupdate` off: with it, every search would also scan the index's list
of pending entries, up to 4 MB (docs/dev/query-index.md). Other databases: nothing to do.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Additive: code at 0003 to 0007 never reads the indexes, and any value it writes fits them.
compatible_with: str = "0003"

#: Table -> its index.
INDEXES = {
    "agents_kv_entries": "ix_agents_kv_entries_query",
    "agents_list_items": "ix_agents_list_items_query",
}
# As `slack_agents_sa.backends.postgresql` queries it (written out here, not imported, so
# history never changes).
HELD = (
    "jsonb_set('{}'::jsonb, ARRAY[namespace::text], "
    "CASE WHEN (strpos(value::text, '\\u') = 0 "
    "OR value::text !~ '\\\\u(0000|00[89a-fA-F]|0[1-9a-fA-F]|[1-9a-fA-F])') "
    "AND octet_length(value::text) <= 131072 "
    "THEN jsonb_path_query_array(value::jsonb, 'strict $.* ? (@.type() == \"string\")', "
    "'{}'::jsonb, true) "
    "ELSE 'null'::jsonb END)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, index in INDEXES.items():
        op.execute(
            f"CREATE INDEX {index} ON {table} USING gin (({HELD}) jsonb_path_ops) "
            "WITH (fastupdate = off)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for index in INDEXES.values():
        op.execute(f"DROP INDEX {index}")
