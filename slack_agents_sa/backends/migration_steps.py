"""What a migration run asks of a database: its lock, its transaction, the connection's
set-up around it. `Backend` inherits these defaults (any other dialect: no lock, nothing
to set up); each server's backend overrides what it does differently.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateSchema

from slack_agents_sa.errors import MigrationLockError

#: Execution option: SQLite transactions on this connection take the write lock at BEGIN
#: (migrations; a host app's writing session may set it too). Others BEGIN deferred.
WRITE_LOCK_OPTION = "slack_agents_sa_write_lock"
#: How long a migrator waits for another's migration lock before giving up (seconds;
#: PostgreSQL and MySQL/MariaDB. SQLite's lock is its write lock: busy_timeout applies).
MIGRATION_LOCK_TIMEOUT_S = 600.0


class MigrationSteps:
    """A migration run's steps on one database, overridden per backend."""

    @asynccontextmanager
    async def migration_transaction(
        self,
        engine: AsyncEngine,
        schema: str | None = None,
        lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S,
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction for a migration run, holding the migration lock: commits on success.

        The lock is released after COMMIT (MySQL's belongs to the session): a migrator
        taking it before our COMMIT would read the old version table and migrate again.
        """
        async with engine.connect() as conn:
            await conn.execution_options(**{WRITE_LOCK_OPTION: True})
            await self.before_migration(conn)
            try:
                async with conn.begin():
                    await self.take_migration_lock(conn, lock_timeout)
                    if schema is not None:
                        await conn.execute(CreateSchema(schema, if_not_exists=True))
                    yield conn
                    await conn.run_sync(self.check_foreign_keys)
            finally:
                try:
                    await self.release_migration_lock(conn)
                    await self.after_migration(conn)
                except BaseException:
                    # Never pool a connection that may still hold the lock (or, on SQLite,
                    # have foreign keys off).
                    await conn.invalidate()
                    raise

    async def take_migration_lock(
        self, conn: AsyncConnection, lock_timeout: float = MIGRATION_LOCK_TIMEOUT_S
    ) -> None:
        """Serialise concurrent migrators on one database; raise `MigrationLockError` after
        waiting `lock_timeout` seconds for another's lock (rather than migrate unlocked)."""

    async def release_migration_lock(self, conn: AsyncConnection) -> None:
        """Release what `take_migration_lock` took where the transaction's end does not."""

    async def before_migration(self, conn: AsyncConnection) -> None:
        """Connection set-up before a migration's BEGIN."""

    async def after_migration(self, conn: AsyncConnection) -> None:
        """Undo `before_migration` once the migration's transaction has ended."""

    def foreign_keys_enforced(self, conn: Connection) -> bool:
        """Whether foreign keys are enforced in a way a table rebuild would trip (SQLite)."""
        return False

    def check_foreign_keys(self, conn: Connection) -> None:
        """Raise `MigrationError` if a migration run with foreign keys off left a dangling
        row (SQLite); servers check as they go."""


def lock_not_taken(lock: str, lock_timeout: float, timed_out: bool) -> MigrationLockError:
    """`MigrationLockError` naming the lock and why it was not taken; nothing was migrated."""
    why = f"timed out after {lock_timeout:g} s" if timed_out else "was refused by the server"
    return MigrationLockError(
        f"the migration lock ({lock}) {why}: another migrator may still be running. "
        "Nothing was migrated; retry once it has finished",
        lock=lock,
        timeout=lock_timeout,
    )
