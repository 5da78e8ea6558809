"""Feedback on agent conversations.

Revision ID: h001
Revises:
Create Date: 2026-11-24

Needs slack_agents_sa's tables (foreign keys to them): env.py migrates those first.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "h001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "host_feedback",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("message_id", ID, nullable=True),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["agents_conversations.id"],
            name=op.f("fk_host_feedback_conversation_id_agents_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["agents_messages.id"],
            name=op.f("fk_host_feedback_message_id_agents_messages"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_host_feedback")),
    )
    op.create_index(op.f("ix_host_feedback_conversation_id"), "host_feedback", ["conversation_id"])


def downgrade() -> None:
    op.drop_table("host_feedback")
