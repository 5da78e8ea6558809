"""Key rotation: re-encrypt the stored OAuth secrets under the first of `encryption_keys`.

The sealing itself is `secretbox.py`'s; this walks the sealed columns in short transactions,
re-sealing what is not under the first key and sealing what is still plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, Select, Table, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from slack_agents_sa.errors import ConfigError, DecryptionError
from slack_agents_sa.models import OAuthClient, OAuthToken, table_of
from slack_agents_sa.progress import OnProgress, no_progress
from slack_agents_sa.secretbox import SecretBox
from slack_agents_sa.validation import check_batch_size

if TYPE_CHECKING:
    from slack_agents_sa.database import Database

#: The secret columns we seal: (table, its primary key, the column). The host seals
#: `refresh_token_enc` itself, so that one is stored as given.
SEALED_COLUMNS = (
    (table_of(OAuthToken), ("user_id", "server_id"), "access_token"),
    (table_of(OAuthClient), ("server_id", "redirect_uri"), "client_secret"),
)


@dataclass
class Tally:
    """What `rotate_keys` did with one table's rows."""

    seen: int = 0
    resealed: int = 0
    current: int = 0
    #: Rows the agent rewrote between our read and our write: theirs is kept.
    changed: int = 0
    #: Rows that no key opens.
    failed: int = 0

    def add(self, other: Tally) -> None:
        """Count `other`'s rows too."""
        for counter in fields(self):
            setattr(self, counter.name, getattr(self, counter.name) + getattr(other, counter.name))


@dataclass
class RotationSummary:
    """Rows per table: seen, re-encrypted under the first key, already under it, ..."""

    counts: dict[str, Tally] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(tally.failed for tally in self.counts.values())


async def _rotate_table(
    db: Database,
    box: SecretBox,
    table: Table,
    keys: tuple[str, ...],
    column: str,
    batch_size: int,
    advance: OnProgress,
) -> Tally:
    tally = Tally()
    key_columns = [table.c[name] for name in keys]
    after: tuple[Any, ...] | None = None
    while True:
        # Keyset pagination on the primary key; one short transaction per batch.
        stmt = select(*key_columns, table.c[column]).order_by(*key_columns).limit(batch_size)
        if after is not None:
            stmt = stmt.where(tuple_(*key_columns) > tuple_(*after))

        async def batch(conn: AsyncConnection, stmt: Select[Any] = stmt) -> _Batch:
            return await _reseal(conn, box, table, key_columns, column, stmt)

        # Shielded like every provider call: Ctrl-C mid-batch lets the batch end whole. A
        # batch the database rolled back as a conflict (another Galera node wrote the same
        # row) runs again whole, so it is counted once, from the run that committed.
        rows, counted = await db.run_transaction(batch)
        if not rows:
            return tally
        tally.add(counted)
        advance(len(rows))
        after = tuple(rows[-1][: len(keys)])


type _Batch = tuple[Sequence[Row[Any]], Tally]


async def _reseal(
    conn: AsyncConnection,
    box: SecretBox,
    table: Table,
    key_columns: list[Any],
    column: str,
    stmt: Select[Any],
) -> _Batch:
    """One batch: read the rows, write each secret not under the first key; what it did."""
    tally = Tally()
    secret = table.c[column]
    shown = f"{table.name}.{column}"
    rows: Sequence[Row[Any]] = (await conn.execute(stmt)).all()
    for row in rows:
        *row_key, stored = tuple(row)
        tally.seen += 1
        try:
            new = None if stored is None else box.resealed(shown, stored)
        except DecryptionError:
            tally.failed += 1
            continue
        if new is None:
            tally.current += 1
            continue
        # Only if the row still holds what we read: an agent running meanwhile may have put
        # a newer secret, which must not be replaced by the old one.
        matches = [c == v for c, v in zip(key_columns, row_key, strict=True)]
        written = await conn.execute(
            update(table).where(*matches, secret == stored).values({column: new})
        )
        if written.rowcount == 1:
            tally.resealed += 1
        else:
            tally.changed += 1
    return rows, tally


async def count_sealed_rows(db: Database) -> int:
    """Rows `rotate_keys` goes through (a progress bar's total)."""
    total = 0
    for table, _, _ in SEALED_COLUMNS:
        total += int((await db.execute(select(func.count()).select_from(table))).scalar_one())
    return total


async def rotate_keys(
    db: Database, *, batch_size: int = 500, on_batch: OnProgress | None = None
) -> RotationSummary:
    """Re-encrypt every sealed column under the first of `encryption_keys`; seal plaintext.

    Idempotent: a value already under the first key is not written, so a second run (or a
    run after a crash) changes nothing it has done. `on_batch` is called with each batch's
    row count.
    """
    check_batch_size(batch_size)
    box = db.settings.secrets
    if box is None:
        raise ConfigError("rotating keys needs option `encryption_keys`")
    summary = RotationSummary()
    for table, keys, column in SEALED_COLUMNS:
        summary.counts[table.name] = await _rotate_table(
            db, box, table, keys, column, batch_size, on_batch or no_progress
        )
    return summary
