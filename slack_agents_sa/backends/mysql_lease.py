"""The MySQL/MariaDB migration lock that holds across a Galera cluster: a lease row.

`GET_LOCK` belongs to one server: two nodes of a Galera cluster grant the same name at
once, so two replicas migrating through different nodes would both migrate. A row is
replicated to every node, so the lock is a row of `LEASE_TABLE` too: taken (or taken over
once expired) by an upsert committed on a connection of its own before the migration's
transaction begins (DDL commits implicitly), renewed while the migration runs, deleted
after its COMMIT. A migrator that crashed leaves a lease that expires after `LEASE_S`.
Galera orders conflicting takers: the loser's upsert fails certification (1213) or finds
the other's owner, and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateTable

from slack_agents_sa.models import MIGRATION_LEASE_TABLE

#: The lease's table: not one of our models (it must exist before any migration runs).
LEASE_TABLE = MIGRATION_LEASE_TABLE
#: Seconds a lease lasts unless renewed (every third of it, while its migration runs).
LEASE_S = 30
#: Seconds between tries while another holds the lease.
_RETRY_S = 0.2

_LEASE = Table(
    LEASE_TABLE,
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("owner", String(64), nullable=False),
    Column("expires_at", mysql.DATETIME(fsp=6), nullable=False),
    mysql_engine="InnoDB",
)
_CREATE = CreateTable(_LEASE, if_not_exists=True)
#: Asked first: CREATE TABLE IF NOT EXISTS on an existing table leaves a note that the
#: drivers log as a WARNING on every migration.
_LEASE_TABLE_EXISTS = text(
    "SELECT COUNT(*) FROM information_schema.tables "
    "WHERE table_schema = DATABASE() AND table_name = :name"
).bindparams(name=LEASE_TABLE)
_NOW = func.now(6)
_UNTIL = func.timestampadd(text("SECOND"), bindparam("lease"), _NOW)
_offer = mysql.insert(_LEASE).values(id=1, owner=bindparam("owner"), expires_at=_UNTIL)
# Assignments run left to right: the second reads the owner the first may have set.
_TAKE = _offer.on_duplicate_key_update(
    [
        ("owner", func.if_(_LEASE.c.expires_at < _NOW, _offer.inserted.owner, _LEASE.c.owner)),
        (
            "expires_at",
            func.if_(
                _LEASE.c.owner == _offer.inserted.owner,
                _offer.inserted.expires_at,
                _LEASE.c.expires_at,
            ),
        ),
    ]
)
_HOLDER = select(_LEASE.c.owner).where(_LEASE.c.id == 1)
_OURS = (_LEASE.c.id == 1) & (_LEASE.c.owner == bindparam("owner"))
_RENEW = update(_LEASE).where(_OURS).values(expires_at=_UNTIL)
_DROP = delete(_LEASE).where(_OURS)

logger = logging.getLogger(__name__)


@dataclass
class Lease:
    """A lease this process holds: its owner id, its connection and the renewing task."""

    owner: str
    conn: AsyncConnection
    renewing: asyncio.Task[None]


async def take_lease(
    engine: AsyncEngine, lock_timeout: float, try_again: Callable[[BaseException], bool]
) -> Lease | None:
    """The lease, once free or expired; None if `lock_timeout` passed first (the caller
    raises `MigrationLockError`). `try_again(driver_error)`: the backend's word on whether
    an error taking it (a Galera certification conflict, a lock wait) just means retry."""
    owner = uuid.uuid4().hex
    # A pool of its own (the same connect arguments and hooks): the lease's connection must
    # not wait for the migration's in a pool of one.
    lease_engine = create_async_engine(engine.url, pool=engine.sync_engine.pool.recreate())
    try:
        conn = await lease_engine.connect()
    except BaseException:
        await lease_engine.dispose()
        raise
    try:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if not await conn.scalar(_LEASE_TABLE_EXISTS):
            await conn.execute(_CREATE)  # IF NOT EXISTS still: another may create it first
        deadline = time.monotonic() + lock_timeout
        while True:
            try:
                await conn.execute(_TAKE, {"owner": owner, "lease": LEASE_S})
                if await conn.scalar(_HOLDER) == owner:
                    break
            except DBAPIError as error:
                if not try_again(error.orig or error):
                    raise
            if time.monotonic() >= deadline:
                await conn.close()
                await lease_engine.dispose()
                return None
            await asyncio.sleep(_RETRY_S)
    except BaseException:
        # Cancelled (or failed) after the row may have become ours: others need not wait
        # for it to expire.
        await _let_go(conn, owner)
        raise
    return Lease(owner, conn, asyncio.create_task(_renew(conn, owner)))


async def drop_lease(lease: Lease) -> None:
    """Stop renewing, delete the row (if still ours) and close its connection; carried
    through to the end even if the caller is cancelled meanwhile."""
    lease.renewing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await lease.renewing
    await _let_go(lease.conn, lease.owner)


async def _let_go(conn: AsyncConnection, owner: str) -> None:
    """Delete `owner`'s row and close `conn`, shielded; a failure leaves the row to expire."""

    async def delete_and_close() -> None:
        try:
            await conn.execute(_DROP, {"owner": owner})
        finally:
            await conn.close()
            await conn.engine.dispose()

    cleanup = asyncio.ensure_future(delete_and_close())
    try:
        await asyncio.shield(cleanup)
    except asyncio.CancelledError:
        cleanup.add_done_callback(_retrieve)
        raise
    except Exception as error:  # the connection is gone: the lease expires by itself
        logger.warning("slack_agents_sa: could not release the migration lease: %s", error)
        with contextlib.suppress(Exception):
            await conn.invalidate()
            await conn.engine.dispose()


def _retrieve(task: asyncio.Future[None]) -> None:
    """Consume a shielded clean-up's outcome once it ends (nobody awaits it any more)."""
    if not task.cancelled():
        task.exception()


async def _renew(conn: AsyncConnection, owner: str) -> None:
    while True:
        await asyncio.sleep(LEASE_S / 3)
        try:
            renewed = await conn.execute(_RENEW, {"owner": owner, "lease": LEASE_S})
        except DBAPIError as error:
            logger.warning("slack_agents_sa: could not renew the migration lease: %s", error)
            continue
        if renewed.rowcount == 0:
            logger.error(
                "slack_agents_sa: the migration lease expired while migrating: another "
                "migrator may have taken it"
            )
            return
