"""Import map: which row of ours each imported row became.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

Used by `slack-agents-sa import` to be idempotent and to remap links between blocks.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = sa.String(length=500).with_variant(mysql.VARBINARY(2000), "mysql", "mariadb")
MYSQL_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "agents_imported_rows",
        sa.Column("source", KEY, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("target_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "source", "kind", "source_id", name=op.f("pk_agents_imported_rows")
        ),
        **MYSQL_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("agents_imported_rows")
