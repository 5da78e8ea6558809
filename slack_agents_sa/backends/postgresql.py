"""PostgreSQL: search_path for `schema`, INSERT CTEs, the advisory migration lock, asyncpg lanes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import BindParameter, ColumnElement, Insert, Text, case, cast, func, text, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute

from slack_agents_sa.backends.base import (
    MIGRATION_LOCK_TIMEOUT_S,
    Backend,
    lock_not_taken,
    on_conflict_upsert,
)
from slack_agents_sa.models import Base

if TYPE_CHECKING:
    from slack_agents_sa.executors import Executor

#: Arbitrary, stable key for the advisory lock around migrations.
MIGRATION_LOCK_KEY = 0x51AC_A6E5
#: The start of a JSON `\uXXXX` escape, as it appears in the stored text.
_JSON_ESCAPE = "\\u"


class PostgreSQL(Backend):
    """PostgreSQL through asyncpg (or any async PostgreSQL driver on SQLAlchemy's path)."""

    family = "postgresql"
    insert_ctes = True
    supports_schema = True

    def engine_options(
        self, url: URL, pool_options: dict[str, Any], schema: str | None
    ) -> dict[str, Any]:
        """`schema` becomes every connection's search_path, so unqualified names, ours and
        Alembic's alike, resolve there; `migration_transaction` creates it."""
        options = dict(pool_options)
        if schema is not None:
            options["connect_args"] = {"server_settings": {"search_path": schema}}
        return options

    def is_retryable(self, error: DBAPIError) -> bool:
        # 40001 serialization_failure, 40P01 deadlock_detected: the transaction was aborted.
        if getattr(error.orig, "sqlstate", None) in ("40001", "40P01"):
            return True
        # Another session changed a table under a prepared statement. asyncpg re-prepares
        # by itself outside a transaction; SQLAlchemy's adapter clears its cache and raises
        # once (its docs say to retry). Nothing ran.
        cause = getattr(error.orig, "__cause__", None)
        return isinstance(error.orig, asyncpg.InvalidCachedStatementError) or isinstance(
            cause, asyncpg.InvalidCachedStatementError
        )

    def has_native_executor(self, url: URL) -> bool:
        return url.get_driver_name() == "asyncpg"

    def native_executor(
        self,
        url: URL,
        dialect: Dialect,
        lanes: int,
        lane_engine: Callable[[], AsyncEngine],
        echo: bool,
    ) -> Executor:
        from slack_agents_sa.executors.compiled import StatementCache
        from slack_agents_sa.executors.postgresql import PostgresExecutor

        return PostgresExecutor(lane_engine(), StatementCache(dialect, echo=echo), lanes)

    def _build_upsert(
        self,
        model: type[Base],
        columns: tuple[str, ...],
        keys: tuple[str, ...],
        update: tuple[str, ...],
        returning_id: bool,
    ) -> Insert:
        return on_conflict_upsert(postgresql.insert, model, columns, keys, update, returning_id)

    def json_field_is_text(
        self,
        document: ColumnElement[Any] | InstrumentedAttribute[Any],
        field: BindParameter[str],
        value: BindParameter[str],
    ) -> ColumnElement[bool] | None:
        # PostgreSQL's JSON functions fail the whole statement on a document holding
        # `\u0000` or a lone surrogate escape anywhere (legal data: `dump_json` writes both),
        # so such documents skip the pre-filter; CASE evaluates only the branch it takes.
        # Our JSON text has a `\u` escape only for those, other control characters and
        # documents written in ASCII: a cheap test that lets a few rows through unfiltered.
        may_poison = func.strpos(cast(document, Text), _JSON_ESCAPE) > 0
        return case(
            (may_poison, true()),
            else_=func.json_extract_path_text(document, field) == value,
        )

    async def take_migration_lock(
        self, conn: AsyncConnection, lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S
    ) -> None:
        """A transaction-level advisory lock: it ends with the migration's transaction."""
        lock = f"PostgreSQL pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
        # lock_timeout bounds the wait (advisory locks included; 0 would mean forever) for
        # this one statement.
        await conn.execute(
            text("SELECT set_config('lock_timeout', :ms, true)"),
            {"ms": str(max(1, round(lock_timeout * 1000)))},
        )
        try:
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != "55P03":  # lock_not_available
                raise
            raise lock_not_taken(lock, lock_timeout, timed_out=True) from error
        await conn.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
