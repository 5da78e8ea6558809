"""An index on the messages' author, for erasure by user.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

`erase_user` (and `slack-agents-sa erase-user`) finds the conversations a person wrote in:
(user_id, conversation_id) makes that one index range per person instead of a scan of
every message.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: Additive, as 0004 and 0005 were: code at 0003 to 0005 never reads the index.
compatible_with: str = "0003"


def upgrade() -> None:
    op.create_index(
        "ix_agents_messages_user_id_conversation_id",
        "agents_messages",
        ["user_id", "conversation_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_agents_messages_user_id_conversation_id", table_name="agents_messages")
