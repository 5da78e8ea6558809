"""SQLite: the FTS5 search index takes new blocks in batches, not one segment per append.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

0007's insert trigger put each text block into the FTS5 table as it arrived: a new index
segment per commit, which doubled the cost of an append. Now a one-row table,
`agents_blocks_search_state`, records `done`: every block with an id up to it is in the
index, and no block above it is. Appends of new blocks (ids above `done`) write nothing
more; the append whose id reaches `done + 512` puts the blocks in between into the index
in one go, and moves `done` to just below itself. A search reads the index for the blocks
up to `done` and scans the few text blocks above it (`backends/search.py`).

Deleting or changing a block up to `done` mends the index at once, as before. A block
inserted with an id at or below `done` (SQLite reuses the highest rowid once it is deleted)
goes into the index at once. Other databases: nothing to do.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Code at 0007 and 0008 searches the index only, so it misses the newest blocks (at most
#: 511) until a batch takes them in; it writes as before. Code at 0003 to 0006 never searches.
compatible_with: str = "0003"

STATE_TABLE = "agents_blocks_search_state"

# Written out in full here (no names spliced in), so history never changes. `done` is
# read in each statement: `(SELECT done FROM agents_blocks_search_state)`; 512 is the
# batch, in blocks of every kind.
TRIGGERS = {
    # A block with an id the index has passed (a reused rowid): into the index at once.
    "agents_blocks_search_insert": (
        "AFTER INSERT ON agents_blocks WHEN new.search_text IS NOT NULL "
        "AND new.id <= (SELECT done FROM agents_blocks_search_state) BEGIN "
        "INSERT INTO agents_blocks_search (rowid, search_text) "
        "VALUES (new.id, new.search_text); END"
    ),
    # Every 512 ids: the blocks between `done` and this one into the index. This block
    # stays above `done`, so the trigger above never takes it too, whichever runs first.
    "agents_blocks_search_batch": (
        "AFTER INSERT ON agents_blocks "
        "WHEN new.id >= (SELECT done FROM agents_blocks_search_state) + 512 BEGIN "
        "INSERT INTO agents_blocks_search (rowid, search_text) "
        "SELECT id, search_text FROM agents_blocks "
        "WHERE id > (SELECT done FROM agents_blocks_search_state) AND id < new.id "
        "AND search_text IS NOT NULL; "
        "UPDATE agents_blocks_search_state SET done = new.id - 1; END"
    ),
    "agents_blocks_search_delete": (
        "AFTER DELETE ON agents_blocks WHEN old.search_text IS NOT NULL "
        "AND old.id <= (SELECT done FROM agents_blocks_search_state) BEGIN "
        "INSERT INTO agents_blocks_search (agents_blocks_search, rowid, search_text) "
        "VALUES ('delete', old.id, old.search_text); END"
    ),
    "agents_blocks_search_update": (
        "AFTER UPDATE OF search_text ON agents_blocks "
        "WHEN old.id <= (SELECT done FROM agents_blocks_search_state) BEGIN "
        "INSERT INTO agents_blocks_search (agents_blocks_search, rowid, search_text) "
        "SELECT 'delete', old.id, old.search_text WHERE old.search_text IS NOT NULL; "
        "INSERT INTO agents_blocks_search (rowid, search_text) "
        "SELECT new.id, new.search_text WHERE new.search_text IS NOT NULL; END"
    ),
}

#: 0007's triggers: every change into the index at once.
OLD_TRIGGERS = {
    "agents_blocks_search_insert": (
        "AFTER INSERT ON agents_blocks WHEN new.search_text IS NOT NULL BEGIN "
        "INSERT INTO agents_blocks_search (rowid, search_text) "
        "VALUES (new.id, new.search_text); END"
    ),
    "agents_blocks_search_delete": (
        "AFTER DELETE ON agents_blocks WHEN old.search_text IS NOT NULL BEGIN "
        "INSERT INTO agents_blocks_search (agents_blocks_search, rowid, search_text) "
        "VALUES ('delete', old.id, old.search_text); END"
    ),
    "agents_blocks_search_update": (
        "AFTER UPDATE OF search_text ON agents_blocks BEGIN "
        "INSERT INTO agents_blocks_search (agents_blocks_search, rowid, search_text) "
        "SELECT 'delete', old.id, old.search_text WHERE old.search_text IS NOT NULL; "
        "INSERT INTO agents_blocks_search (rowid, search_text) "
        "SELECT new.id, new.search_text WHERE new.search_text IS NOT NULL; END"
    ),
}


def _replace_triggers(old: dict[str, str], new: dict[str, str]) -> None:
    for name in old:
        op.execute(f"DROP TRIGGER {name}")
    for name, body in new.items():
        op.execute(f"CREATE TRIGGER {name} {body}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # 0007's triggers have indexed every block so far.
    op.execute(f"CREATE TABLE {STATE_TABLE} (done INTEGER NOT NULL)")
    op.execute(
        "INSERT INTO agents_blocks_search_state (done) "
        "SELECT coalesce(max(id), 0) FROM agents_blocks"
    )
    _replace_triggers(OLD_TRIGGERS, TRIGGERS)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "INSERT INTO agents_blocks_search (rowid, search_text) SELECT id, search_text "
        "FROM agents_blocks WHERE search_text IS NOT NULL "
        "AND id > (SELECT done FROM agents_blocks_search_state)"
    )
    _replace_triggers(TRIGGERS, OLD_TRIGGERS)
    op.execute(f"DROP TABLE {STATE_TABLE}")
