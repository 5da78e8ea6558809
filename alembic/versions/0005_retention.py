"""Retention: when a `set` value was last written, and the indexes `prune` reads.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

`agents_kv_entries.updated_at` is the last write of a `set` value (an upsert keeps
`created_at`); `prune --namespace` goes by it. Existing rows get the time of this
migration: their last write is unknown, and `created_at` may be long before it (a value
created a year ago and rewritten yesterday would go at the first prune), so they are
kept for a full retention period from now. It stays nullable so that a release older than
this one, still running during a rolling deploy, can insert rows without naming it.

Indexes, each for one query of `slack_agents_sa.retention` (docs/schema.md):
- messages (conversation_id, created_at): does an old conversation have a message since
  the cut-off? One probe instead of reading each of its messages;
- kv_entries (namespace, updated_at) and list_items (namespace, created_at): a namespace's
  entries and items older than the cut-off.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Additive, as 0004 was: code at 0003 and 0004 never reads the new column (nullable, so
#: its inserts need not name it) or the indexes. Its `set` leaves `updated_at` as it was.
compatible_with: str = "0003"

# As 0001 wrote it (not imported from slack_agents_sa.types, so history never changes).
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.add_column("agents_kv_entries", sa.Column("updated_at", TIMESTAMP, nullable=True))
    now = datetime.now(UTC)
    if op.get_bind().dialect.name != "postgresql":
        now = now.replace(tzinfo=None)  # stored as UTC without a zone, as types.UTCDateTime does
    op.execute(
        sa.text("UPDATE agents_kv_entries SET updated_at = :now").bindparams(
            sa.bindparam("now", now, type_=TIMESTAMP)
        )
    )
    op.create_index(
        "ix_agents_kv_entries_namespace_updated_at",
        "agents_kv_entries",
        ["namespace", "updated_at"],
    )
    op.create_index(
        "ix_agents_list_items_namespace_created_at",
        "agents_list_items",
        ["namespace", "created_at"],
    )
    op.create_index(
        "ix_agents_messages_conversation_id_created_at",
        "agents_messages",
        ["conversation_id", "created_at"],
    )


def downgrade() -> None:
    # agents_messages keeps ix_agents_messages_conversation_id_id for its foreign key
    # (MySQL/MariaDB refuse to drop the last index a foreign key can use).
    op.drop_index("ix_agents_messages_conversation_id_created_at", table_name="agents_messages")
    op.drop_index("ix_agents_list_items_namespace_created_at", table_name="agents_list_items")
    op.drop_index("ix_agents_kv_entries_namespace_updated_at", table_name="agents_kv_entries")
    with op.batch_alter_table("agents_kv_entries") as batch:
        batch.drop_column("updated_at")
