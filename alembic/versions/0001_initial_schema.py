"""Initial schema: conversations, messages, blocks, tool calls, heartbeats, key-value, OAuth.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Self-contained on purpose: the column types are spelled out here rather than imported
from slack_agents_sa.types, so later changes there never rewrite history.

MySQL/MariaDB columns and table options were settled here before any MySQL release, which is
why this first revision carries them rather than a later one.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Exact comparison on MySQL/MariaDB: UTF-8 bytes, 4 bytes a character at most.
NAME = sa.String(length=255).with_variant(mysql.VARBINARY(1020), "mysql", "mariadb")
KEY = sa.String(length=500).with_variant(mysql.VARBINARY(2000), "mysql", "mariadb")
# jsonb on PostgreSQL (0002 makes it json); JSON text in LONGTEXT on MySQL/MariaDB.
JSON = (
    sa.JSON(none_as_null=True)
    .with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    .with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
)
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# utf8mb4 whatever the server's default, binary collation for exact comparison.
MYSQL_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "agents_conversations",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("agent_name", NAME, nullable=False),
        sa.Column("channel_id", NAME, nullable=False),
        sa.Column("thread_id", NAME, nullable=False),
        sa.Column("channel_name", NAME, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents_conversations")),
        sa.UniqueConstraint(
            "agent_name",
            "channel_id",
            "thread_id",
            name=op.f("uq_agents_conversations_agent_name_channel_id_thread_id"),
        ),
        **MYSQL_OPTIONS,
    )
    op.create_table(
        "agents_messages",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("conversation_id", ID, nullable=False),
        sa.Column("user_id", NAME, nullable=False),
        sa.Column("user_name", NAME, nullable=False),
        sa.Column("user_handle", NAME, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["agents_conversations.id"],
            name=op.f("fk_agents_messages_conversation_id_agents_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents_messages")),
        **MYSQL_OPTIONS,
    )
    op.create_index(
        "ix_agents_messages_conversation_id_id", "agents_messages", ["conversation_id", "id"]
    )
    op.create_table(
        "agents_blocks",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("message_id", ID, nullable=False),
        sa.Column("block_type", sa.String(length=16), nullable=False),
        sa.Column("in_history", sa.Boolean(), nullable=False),
        sa.Column("content", JSON, nullable=True),
        sa.Column("source_file_id", ID, nullable=True),
        sa.Column("tool_block_id", ID, nullable=True),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("mimetype", NAME, nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["agents_messages.id"],
            name=op.f("fk_agents_blocks_message_id_agents_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_file_id"],
            ["agents_blocks.id"],
            name=op.f("fk_agents_blocks_source_file_id_agents_blocks"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tool_block_id"],
            ["agents_blocks.id"],
            name=op.f("fk_agents_blocks_tool_block_id_agents_blocks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents_blocks")),
        **MYSQL_OPTIONS,
    )
    op.create_index("ix_agents_blocks_message_id_id", "agents_blocks", ["message_id", "id"])
    op.create_table(
        "agents_tool_calls",
        sa.Column("block_id", ID, nullable=False),
        sa.Column("tool_call_id", NAME, nullable=False),
        sa.Column("tool_name", NAME, nullable=False),
        sa.Column("tool_input", JSON, nullable=False),
        sa.Column("tool_output", LONG_TEXT, nullable=False),
        sa.Column("is_error", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["block_id"],
            ["agents_blocks.id"],
            name=op.f("fk_agents_tool_calls_block_id_agents_blocks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("block_id", name=op.f("pk_agents_tool_calls")),
        **MYSQL_OPTIONS,
    )
    op.create_index(
        op.f("ix_agents_tool_calls_tool_call_id"), "agents_tool_calls", ["tool_call_id"]
    )
    op.create_table(
        "agents_heartbeats",
        sa.Column("agent_name", NAME, nullable=False),
        sa.Column("last_ping_pong_time", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("agent_name", name=op.f("pk_agents_heartbeats")),
        **MYSQL_OPTIONS,
    )
    op.create_table(
        "agents_kv_entries",
        sa.Column("namespace", NAME, nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "key", name=op.f("pk_agents_kv_entries")),
        **MYSQL_OPTIONS,
    )
    op.create_table(
        "agents_list_items",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("namespace", NAME, nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents_list_items")),
        **MYSQL_OPTIONS,
    )
    op.create_index(
        "ix_agents_list_items_namespace_key_id", "agents_list_items", ["namespace", "key", "id"]
    )
    op.create_table(
        "agents_oauth_tokens",
        sa.Column("user_id", NAME, nullable=False),
        sa.Column("server_id", NAME, nullable=False),
        sa.Column("access_token", LONG_TEXT, nullable=False),
        sa.Column("refresh_token_enc", LONG_TEXT, nullable=True),
        sa.Column("token_type", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "server_id", name=op.f("pk_agents_oauth_tokens")),
        **MYSQL_OPTIONS,
    )
    op.create_table(
        "agents_oauth_clients",
        sa.Column("server_id", NAME, nullable=False),
        sa.Column("redirect_uri", KEY, nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("client_secret", LONG_TEXT, nullable=True),
        sa.Column("metadata_json", LONG_TEXT, nullable=False),
        sa.Column("authorization_server", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("server_id", "redirect_uri", name=op.f("pk_agents_oauth_clients")),
        **MYSQL_OPTIONS,
    )


def downgrade() -> None:
    # Indexes go with their tables (MySQL refuses to drop one a foreign key still uses).
    op.drop_table("agents_oauth_clients")
    op.drop_table("agents_oauth_tokens")
    op.drop_table("agents_list_items")
    op.drop_table("agents_kv_entries")
    op.drop_table("agents_heartbeats")
    op.drop_table("agents_tool_calls")
    op.drop_table("agents_blocks")
    op.drop_table("agents_messages")
    op.drop_table("agents_conversations")
