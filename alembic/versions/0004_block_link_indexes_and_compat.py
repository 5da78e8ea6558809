"""Indexes on the blocks' links to other blocks; the schema compatibility marker.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Deleting a conversation deletes its blocks, and each deleted block sets NULL in the blocks
whose `source_file_id` or `tool_block_id` point at it. Without an index on those columns
that is a scan of agents_blocks per deleted block: one 200-block conversation among 40k
blocks took 878 ms to delete on PostgreSQL, 2.8 ms with the indexes. (MySQL/MariaDB already
had one on each, made by InnoDB for the foreign key; ours takes its place.)

`slack_agents_sa_compat` holds one row, the oldest head whose code can run on the schema;
every migration run writes it (docs/schema.md, "Rolling deploys").
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Additive: code at 0003 ignores two more indexes and a table it does not know.
compatible_with: str = "0003"

MYSQL_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_index("ix_agents_blocks_source_file_id", "agents_blocks", ["source_file_id"])
    op.create_index("ix_agents_blocks_tool_block_id", "agents_blocks", ["tool_block_id"])
    op.create_table(
        "slack_agents_sa_compat",
        sa.Column("oldest_compatible_head", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("oldest_compatible_head", name=op.f("pk_slack_agents_sa_compat")),
        **MYSQL_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("slack_agents_sa_compat")
    mysql = op.get_bind().dialect.name in ("mysql", "mariadb")
    for column in ("tool_block_id", "source_file_id"):
        foreign_key = f"fk_agents_blocks_{column}_agents_blocks"
        if mysql:
            # InnoDB dropped the index it had made for the foreign key when ours could serve
            # it, and refuses to drop ours while the key needs it (error 1553): drop the key
            # and add it back, which makes InnoDB's index again, as 0003 left it.
            op.drop_constraint(foreign_key, "agents_blocks", type_="foreignkey")
        op.drop_index(f"ix_agents_blocks_{column}", table_name="agents_blocks")
        if mysql:
            op.create_foreign_key(
                foreign_key, "agents_blocks", "agents_blocks", [column], ["id"], ondelete="SET NULL"
            )
