"""JSON columns on PostgreSQL become json (text) instead of jsonb.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

jsonb reorders object keys and stores numbers as numeric, so a float such as 3.8e16 came
back as an int: values did not round-trip, and answers differed from SQLite's. `json` keeps
the text as written. Values already stored keep what jsonb made of them. Other dialects
already store JSON as text: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_COLUMNS = [
    ("agents_blocks", "content", True),
    ("agents_tool_calls", "tool_input", False),
    ("agents_kv_entries", "value", False),
    ("agents_list_items", "value", False),
]


def _convert(old: postgresql.JSON, new: postgresql.JSON, cast: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in JSON_COLUMNS:
        op.alter_column(
            table,
            column,
            type_=new,
            existing_type=old,
            existing_nullable=nullable,
            postgresql_using=f"{column}::{cast}",
        )


def upgrade() -> None:
    _convert(postgresql.JSONB(none_as_null=True), postgresql.JSON(none_as_null=True), "json")


def downgrade() -> None:
    _convert(postgresql.JSON(none_as_null=True), postgresql.JSONB(none_as_null=True), "jsonb")
