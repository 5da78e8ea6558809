"""Search over history: the text blocks' text in a column of its own, and its index.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

`agents_blocks.search_text` holds a `text` or `user_text` block's words, folded (NULL for
every other block), filled here in batches from the blocks already stored. Each database
indexes it natively:

- PostgreSQL: a GIN index over `to_tsvector('simple', search_text)`;
- MySQL/MariaDB: an InnoDB FULLTEXT index;
- SQLite: an FTS5 table with external content (`agents_blocks_search`), kept in step by
  triggers on every insert, update and delete of a block;
- any other dialect: no index (searches scan the text blocks).
"""

import json
import re
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Code at 0003 to 0006 never names the new column in its inserts (nullable): its text
#: blocks are simply not found by a search until the next backfill.
compatible_with: str = "0003"

INDEX = "ix_agents_blocks_search"
FTS_TABLE = "agents_blocks_search"
#: Blocks read and written per statement of the backfill.
BATCH = 2_000
# As the model spells it (not imported, so history never changes).
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

_TRIGGERS = {
    f"{FTS_TABLE}_insert": (
        "AFTER INSERT ON agents_blocks WHEN new.search_text IS NOT NULL BEGIN "
        "INSERT INTO agents_blocks_search (rowid, search_text) VALUES (new.id, new.search_text); END"
    ),
    f"{FTS_TABLE}_delete": (
        "AFTER DELETE ON agents_blocks WHEN old.search_text IS NOT NULL BEGIN "
        "INSERT INTO agents_blocks_search (agents_blocks_search, rowid, search_text) "
        "VALUES ('delete', old.id, old.search_text); END"
    ),
    f"{FTS_TABLE}_update": (
        "AFTER UPDATE OF search_text ON agents_blocks BEGIN "
        "INSERT INTO agents_blocks_search (agents_blocks_search, rowid, search_text) "
        "SELECT 'delete', old.id, old.search_text WHERE old.search_text IS NOT NULL; "
        "INSERT INTO agents_blocks_search (rowid, search_text) "
        "SELECT new.id, new.search_text WHERE new.search_text IS NOT NULL; END"
    ),
}


# As `slack_agents_sa.search_text.indexed_words` folds a text block (copied, not imported,
# so history never changes): its words, lower-cased, without accents, one space apart.
_WORD = re.compile(r"[^\W_]+")
_ACCENTS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
MAX_INDEXED_CHARS = 200_000


def _indexed_words(text: str) -> str:
    folded = (
        text.lower()
        if text.isascii()
        else _ACCENTS.sub("", unicodedata.normalize("NFKD", text)).lower()
    )
    words = " ".join(_WORD.findall(folded))
    if len(words) > MAX_INDEXED_CHARS:
        words = words[: words.rfind(" ", 0, MAX_INDEXED_CHARS + 1)]
    return words


def _text_of(content: str | None) -> str | None:
    """What the index holds of a text block, from its stored JSON."""
    value = json.loads(content) if content else None
    text = value.get("text") if isinstance(value, dict) else None
    return _indexed_words(text) if isinstance(text, str) else None


def _backfill() -> None:
    """Fill `search_text` of the text blocks already stored, `BATCH` blocks at a time."""
    blocks = sa.table(
        "agents_blocks",
        sa.column("id", sa.BigInteger),
        sa.column("block_type", sa.String),
        sa.column("content", sa.Text),
        sa.column("search_text", sa.Text),
    )
    read = (
        sa.select(blocks.c.id, sa.cast(blocks.c.content, sa.Text).label("content"))
        .where(blocks.c.block_type.in_(["text", "user_text"]), blocks.c.id > sa.bindparam("after"))
        .order_by(blocks.c.id)
        .limit(BATCH)
    )
    write = (
        sa.update(blocks)
        .where(blocks.c.id == sa.bindparam("block_id"))
        .values(search_text=sa.bindparam("text"))
    )
    bind = op.get_bind()
    after = 0
    while rows := bind.execute(read, {"after": after}).all():
        texts = [{"block_id": row.id, "text": _text_of(row.content)} for row in rows]
        if found := [each for each in texts if each["text"] is not None]:
            bind.execute(write, found)
        after = rows[-1].id


def upgrade() -> None:
    op.add_column("agents_blocks", sa.Column("search_text", LONG_TEXT, nullable=True))
    _backfill()
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            f"CREATE INDEX {INDEX} ON agents_blocks "
            "USING gin (to_tsvector('simple'::regconfig, search_text))"
        )
    elif dialect in ("mysql", "mariadb"):
        op.execute(f"CREATE FULLTEXT INDEX {INDEX} ON agents_blocks (search_text)")
    elif dialect == "sqlite":
        op.execute(
            f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
            "search_text, content='agents_blocks', content_rowid='id')"
        )
        op.execute(
            "INSERT INTO agents_blocks_search (rowid, search_text) "
            "SELECT id, search_text FROM agents_blocks WHERE search_text IS NOT NULL"
        )
        for name, body in _TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(f"DROP INDEX {INDEX}")
    elif dialect in ("mysql", "mariadb"):
        op.execute(f"DROP INDEX {INDEX} ON agents_blocks")
    elif dialect == "sqlite":
        for name in _TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
        op.execute(f"DROP TABLE {FTS_TABLE}")
    with op.batch_alter_table("agents_blocks") as batch:
        batch.drop_column("search_text")
