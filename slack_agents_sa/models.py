"""Declarative models of everything the provider stores, with the indexes its queries use.

Host apps import `Base` (or `metadata`) from here and add their own tables,
foreign keys to `Conversation` and `Message` included.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from slack_agents_sa.types import (
    MYSQL_TABLE_OPTIONS,
    BigID,
    ExactFloat,
    LongText,
    PortableJSON,
    UTCDateTime,
    exact_string,
    utcnow,
)

#: Every data table this package owns starts with this, so it never collides with
#: the host's built-in providers' tables (`conversations`, `kv_store`, ...) in a shared database.
#: The migrations' bookkeeping tables start with `slack_agents_sa_` instead.
TABLE_PREFIX = "agents_"

#: Longest identifier-like strings (Slack ids, names, handles, tool call ids). Keyed columns
#: need a bound: MySQL indexes at most 3072 bytes, 4 bytes a character in utf8mb4.
NAME_LENGTH = 255
#: Longest key-value `key` and OAuth `redirect_uri`: (255 + 500) * 4 bytes still fits one index.
KEY_LENGTH = 500

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Identifier-like strings compare exactly on every dialect (see `exact_string`).
Name = exact_string(NAME_LENGTH)
Key = exact_string(KEY_LENGTH)


class Base(DeclarativeBase):
    """Declarative base of our models; extend it (or share `metadata`) in a host app."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: PortableJSON,
        float: ExactFloat,
    }


metadata = Base.metadata


class Conversation(Base):
    """One Slack thread an agent takes part in."""

    __tablename__ = f"{TABLE_PREFIX}conversations"
    __table_args__ = (
        # get_or_create_conversation / has_conversation look a thread up by these three.
        UniqueConstraint("agent_name", "channel_id", "thread_id"),
        MYSQL_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    agent_name: Mapped[str] = mapped_column(Name)
    channel_id: Mapped[str] = mapped_column(Name)
    thread_id: Mapped[str] = mapped_column(Name)
    channel_name: Mapped[str | None] = mapped_column(Name)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation", order_by="Message.id", passive_deletes=True
    )


class Message(Base):
    """One user-triggered exchange in a conversation: the user's turn and the agent's reply."""

    __tablename__ = f"{TABLE_PREFIX}messages"
    __table_args__ = (
        # History and export read a conversation's messages in order.
        Index("ix_agents_messages_conversation_id_id", "conversation_id", "id"),
        # prune asks of each old conversation whether it has a message since the cut-off:
        # one index probe with this, rather than reading every message's row.
        Index("ix_agents_messages_conversation_id_created_at", "conversation_id", "created_at"),
        # erase_user finds the conversations a person wrote in: one range per person.
        Index("ix_agents_messages_user_id_conversation_id", "user_id", "conversation_id"),
        MYSQL_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(
        BigID, ForeignKey(f"{TABLE_PREFIX}conversations.id", ondelete="CASCADE")
    )
    user_id: Mapped[str] = mapped_column(Name)
    user_name: Mapped[str] = mapped_column(Name)
    user_handle: Mapped[str] = mapped_column(Name)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")
    blocks: Mapped[list[Block]] = relationship(
        back_populates="message", order_by="Block.id", passive_deletes=True
    )


class Block(Base):
    """One piece of a message: text, a file, a tool call or a usage record.

    `content` holds the block's JSON as the host shapes it, except for tool
    calls, whose fields live in `ToolCall`. `in_history` is decided on write:
    usage blocks and uploaded non-image files are never sent back to the LLM.
    """

    __tablename__ = f"{TABLE_PREFIX}blocks"
    __table_args__ = (
        # get_message_blocks / get_messages_with_blocks read a message's blocks in order.
        Index("ix_agents_blocks_message_id_id", "message_id", "id"),
        # Deleting blocks (a conversation's, through ON DELETE CASCADE) sets NULL in every
        # block pointing at them; without these each deleted block scans the table: one
        # 200-block conversation among 40k blocks took 878 ms on PostgreSQL, 2.8 ms with them.
        Index("ix_agents_blocks_source_file_id", "source_file_id"),
        Index("ix_agents_blocks_tool_block_id", "tool_block_id"),
        MYSQL_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(
        BigID, ForeignKey(f"{TABLE_PREFIX}messages.id", ondelete="CASCADE")
    )
    block_type: Mapped[str] = mapped_column(String(16))
    in_history: Mapped[bool] = mapped_column(Boolean)
    content: Mapped[dict[str, Any] | None]
    source_file_id: Mapped[int | None] = mapped_column(
        BigID, ForeignKey(f"{TABLE_PREFIX}blocks.id", ondelete="SET NULL")
    )
    tool_block_id: Mapped[int | None] = mapped_column(
        BigID, ForeignKey(f"{TABLE_PREFIX}blocks.id", ondelete="SET NULL")
    )
    filename: Mapped[str | None] = mapped_column(Text)
    mimetype: Mapped[str | None] = mapped_column(Name)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: A text block's words, folded (`search_text.indexed_words`), for search over history:
    #: the database's full-text index covers it. NULL for every other block.
    search_text: Mapped[str | None] = mapped_column(LongText)

    message: Mapped[Message] = relationship(back_populates="blocks")
    tool_call: Mapped[ToolCall | None] = relationship(back_populates="block", passive_deletes=True)


class ToolCall(Base):
    """The fields of a `tool_use` block, looked up by the LLM's `tool_call_id`."""

    __tablename__ = f"{TABLE_PREFIX}tool_calls"
    __table_args__ = MYSQL_TABLE_OPTIONS

    block_id: Mapped[int] = mapped_column(
        BigID, ForeignKey(f"{TABLE_PREFIX}blocks.id", ondelete="CASCADE"), primary_key=True
    )
    # get_tool_call looks a call up by this id.
    tool_call_id: Mapped[str] = mapped_column(Name, index=True)
    tool_name: Mapped[str] = mapped_column(Name)
    tool_input: Mapped[dict[str, Any]]
    tool_output: Mapped[str] = mapped_column(LongText)
    is_error: Mapped[bool] = mapped_column(Boolean)

    block: Mapped[Block] = relationship(back_populates="tool_call")


class Heartbeat(Base):
    """The last Socket Mode ping/pong time of an agent, for the host's healthcheck."""

    __tablename__ = f"{TABLE_PREFIX}heartbeats"
    __table_args__ = MYSQL_TABLE_OPTIONS

    agent_name: Mapped[str] = mapped_column(Name, primary_key=True)
    last_ping_pong_time: Mapped[float]


class KeyValueEntry(Base):
    """A value written by `set`: one JSON object per (namespace, key)."""

    __tablename__ = f"{TABLE_PREFIX}kv_entries"
    __table_args__ = (
        # prune_namespace finds a namespace's entries last written before a cut-off.
        Index("ix_agents_kv_entries_namespace_updated_at", "namespace", "updated_at"),
        MYSQL_TABLE_OPTIONS,
    )

    namespace: Mapped[str] = mapped_column(Name, primary_key=True)
    key: Mapped[str] = mapped_column(Key, primary_key=True)
    value: Mapped[dict[str, Any]]
    #: The first write; an upsert keeps it.
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The last write (every `set` sets it). NULL only on rows a release older than
    #: migration 0005 inserted during a rolling deploy: prune then goes by `created_at`.
    updated_at: Mapped[datetime | None] = mapped_column(default=utcnow)


class ListItem(Base):
    """An item written by `append`: lists are (namespace, key), ordered by `id`."""

    __tablename__ = f"{TABLE_PREFIX}list_items"
    __table_args__ = (
        # get_list reads one list in order; query scans a namespace in order.
        Index("ix_agents_list_items_namespace_key_id", "namespace", "key", "id"),
        # prune_namespace finds a namespace's items appended before a cut-off.
        Index("ix_agents_list_items_namespace_created_at", "namespace", "created_at"),
        MYSQL_TABLE_OPTIONS,
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(Name)
    key: Mapped[str] = mapped_column(Key)
    value: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OAuthToken(Base):
    """Per-user MCP OAuth token state. `access_token` and `refresh_token_enc` are secrets."""

    __tablename__ = f"{TABLE_PREFIX}oauth_tokens"
    __table_args__ = MYSQL_TABLE_OPTIONS

    user_id: Mapped[str] = mapped_column(Name, primary_key=True)
    server_id: Mapped[str] = mapped_column(Name, primary_key=True)
    access_token: Mapped[str] = mapped_column(LongText)
    refresh_token_enc: Mapped[str | None] = mapped_column(LongText)
    token_type: Mapped[str] = mapped_column(Text)
    scopes: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class OAuthClient(Base):
    """Per-server dynamic client registration. `client_secret` is a secret."""

    __tablename__ = f"{TABLE_PREFIX}oauth_clients"
    __table_args__ = MYSQL_TABLE_OPTIONS

    server_id: Mapped[str] = mapped_column(Name, primary_key=True)
    redirect_uri: Mapped[str] = mapped_column(Key, primary_key=True)
    client_id: Mapped[str] = mapped_column(Text)
    client_secret: Mapped[str | None] = mapped_column(LongText)
    metadata_json: Mapped[str] = mapped_column(LongText)
    authorization_server: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


def table_of(model: type[Base]) -> Table:
    """A model's Core table, for statements on hot paths that skip the ORM layer."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class ImportedRow(Base):
    """Which row of ours a row of an imported database became (`slack-agents-sa import`).

    Lets a re-run skip what is already there and remap links (text → file, file → tool)
    to our ids. `source` names the source database (without its password).
    """

    __tablename__ = f"{TABLE_PREFIX}imported_rows"
    __table_args__ = MYSQL_TABLE_OPTIONS

    source: Mapped[str] = mapped_column(Key, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    source_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    target_id: Mapped[int] = mapped_column(BigInteger)


class SchemaCompatibility(Base):
    """One row: the oldest head (migration revision) whose code can still run on this schema.

    Every migration run of ours rewrites it. A release that finds the database at a
    revision it does not know (a newer release migrated it: a rolling deploy) reads it to
    decide whether it may run anyway. Every release reads it, so its name and shape never
    change. See docs/schema.md, "Rolling deploys".
    """

    __tablename__ = "slack_agents_sa_compat"
    __table_args__ = MYSQL_TABLE_OPTIONS

    # Alembic's revision ids are at most 32 characters (its version_num column).
    oldest_compatible_head: Mapped[str] = mapped_column(String(32), primary_key=True)


#: The names of this package's tables, fixed here, before any host app adds its own
#: tables to `metadata` (which they share).
OUR_TABLES = frozenset(metadata.tables)
#: Search over history: the index over the blocks' `search_text` (PostgreSQL, MySQL), or
#: SQLite's FTS5 table (with its shadow tables `<name>_data`, ..., and `<name>_state`, how
#: far it goes). Built by migrations 0007 and 0009, not by `create_all`: no model describes
#: them.
SEARCH_INDEX = f"ix_{TABLE_PREFIX}blocks_search"
SEARCH_TABLE = f"{TABLE_PREFIX}blocks_search"
#: PostgreSQL: `query`'s GIN index on each key-value table, over expressions no model can
#: describe (built by migration 0008).
QUERY_INDEXES = frozenset(
    {f"ix_{TABLE_PREFIX}kv_entries_query", f"ix_{TABLE_PREFIX}list_items_query"}
)
#: MySQL/MariaDB: the migration lock's row lives here (`backends/mysql_lease.py`); not a
#: model, since it must exist before any migration runs.
MIGRATION_LEASE_TABLE = "slack_agents_sa_migration_lease"
