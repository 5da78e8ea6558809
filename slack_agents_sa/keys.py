"""OAuth secrets at rest: encryption with the `encryption_keys` option, and `rotate-keys`.

With the option set, `agents_oauth_tokens.access_token` and `agents_oauth_clients.client_secret`
are stored as `sa-enc:v1:` followed by a Fernet token (AES-128-CBC with HMAC-SHA256, from the
`cryptography` package). Our prefix, not Fernet's own "gAAAAA" look, tells a sealed value from a
plaintext one: a plaintext token may begin with "gAAAAA" too. So rows written before the
option was set still read, and `rotate-keys` seals them. The first key seals, every key opens.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, Select, Table, func, select, tuple_, update
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection
from tqdm import tqdm

from slack_agents_sa.errors import ConfigError, DecryptionError
from slack_agents_sa.models import OAuthClient, OAuthToken, table_of
from slack_agents_sa.progress import progress_bar

if TYPE_CHECKING:
    from cryptography.fernet import Fernet, MultiFernet

    from slack_agents_sa.database import Database

#: What every sealed value starts with; `v1` is Fernet. A new scheme would be `v2`.
PREFIX = "sa-enc:v1:"

#: The keys `rotate-keys` uses when set (comma-separated), before `--config`'s option.
KEYS_ENV_VAR = "SLACK_AGENTS_SA_ENCRYPTION_KEYS"

#: The secret columns we seal: (table, its primary key, the column). The host seals
#: `refresh_token_enc` itself, so that one is stored as given.
SEALED_COLUMNS = (
    (table_of(OAuthToken), ("user_id", "server_id"), "access_token"),
    (table_of(OAuthClient), ("server_id", "redirect_uri"), "client_secret"),
)


def split_keys(text: str) -> list[str]:
    """Keys from one comma-separated string (Fernet keys are url-safe base64: no commas)."""
    return [key.strip() for key in text.split(",") if key.strip()]


class SecretBox:
    """The keys of option `encryption_keys`: the first one seals, every one opens.

    Raises ValueError naming a malformed key's position (never the key), or the missing
    `cryptography` package.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError:
            raise ValueError(
                "needs the cryptography package: pip install 'slack_agents_sa[crypto]'"
            ) from None
        if not keys:
            raise ValueError("must list at least one key (leave it out to store secrets as given)")
        fernets = []
        for position, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key))
            except (TypeError, ValueError):  # binascii.Error is a ValueError
                raise ValueError(
                    f"key {position} of {len(keys)} is not a Fernet key (32 url-safe "
                    "base64-encoded bytes, as `Fernet.generate_key()` makes them)"
                ) from None
        self._first: Fernet = fernets[0]
        self._all: MultiFernet = MultiFernet(fernets)

    def seal(self, value: str) -> str:
        """`value` encrypted under the first key, in its stored form."""
        return PREFIX + self._first.encrypt(value.encode()).decode("ascii")

    def open(self, column: str, stored: str) -> str:
        """The plaintext of a sealed value, or DecryptionError naming `column` (never a value)."""
        from cryptography.fernet import InvalidToken

        try:
            return self._all.decrypt(stored.removeprefix(PREFIX).encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise DecryptionError(
                f"{column} is encrypted under a key that option `encryption_keys` does not "
                "list: add the key it was written with (after the first)",
                column=column,
            ) from None

    def resealed(self, column: str, stored: str) -> str | None:
        """`stored` sealed under the first key, or None if it already is.

        Not `MultiFernet.rotate`, which re-encrypts every token: a run over rows that are
        already under the first key must write nothing.
        """
        from cryptography.fernet import InvalidToken

        if not stored.startswith(PREFIX):
            return self.seal(stored)
        try:
            self._first.decrypt(stored.removeprefix(PREFIX).encode("ascii"))
        except (InvalidToken, UnicodeError):
            return self.seal(self.open(column, stored))
        return None


def seal_secret(box: SecretBox | None, name: str, value: str) -> str:
    """What to store for the secret `value` (the argument `name` is for messages)."""
    if box is not None:
        return box.seal(value)
    if value.startswith(PREFIX):
        # Stored as given, it would later be taken for a sealed value and fail to open.
        raise ValueError(
            f"{name} starts with {PREFIX!r}, which marks an encrypted value; "
            "it can be stored only with option `encryption_keys` set"
        )
    return value


def open_secret(box: SecretBox | None, column: str, stored: str) -> str:
    """The plaintext of a stored secret: sealed values opened, plaintext ones as they are."""
    if not stored.startswith(PREFIX):
        return stored
    if box is None:
        raise DecryptionError(
            f"{column} is encrypted, but option `encryption_keys` is not set: "
            "set it to the keys the secrets were written with",
            column=column,
        )
    return box.open(column, stored)


# --- rotate-keys ---


@dataclass
class Tally:
    """What `rotate-keys` did with one table's rows."""

    seen: int = 0
    resealed: int = 0
    current: int = 0
    #: Rows the agent rewrote between our read and our write: theirs is kept.
    changed: int = 0
    #: Rows that no key opens.
    failed: int = 0


@dataclass
class RotationSummary:
    """Rows per table: seen, re-encrypted under the first key, already under it, ..."""

    counts: dict[str, Tally] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(tally.failed for tally in self.counts.values())

    def table(self) -> str:
        lines = [
            f"{'table':<22}{'seen':>8}{'re-encrypted':>14}{'already current':>17}"
            f"{'changed meanwhile':>19}{'undecryptable':>15}"
        ]
        for name, t in self.counts.items():
            lines.append(
                f"{name:<22}{t.seen:>8}{t.resealed:>14}{t.current:>17}{t.changed:>19}{t.failed:>15}"
            )
        return "\n".join(lines)


async def _rotate_table(
    db: Database,
    box: SecretBox,
    table: Table,
    keys: tuple[str, ...],
    column: str,
    batch_size: int,
    bar: tqdm[Any],
) -> Tally:
    tally = Tally()
    key_columns = [table.c[name] for name in keys]
    secret = table.c[column]
    shown = f"{table.name}.{column}"
    after: tuple[Any, ...] | None = None
    while True:
        # Keyset pagination on the primary key; one short transaction per batch.
        stmt = select(*key_columns, secret).order_by(*key_columns).limit(batch_size)
        if after is not None:
            stmt = stmt.where(tuple_(*key_columns) > tuple_(*after))

        async def batch(conn: AsyncConnection, stmt: Select[Any] = stmt) -> Sequence[Row[Any]]:
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
                # Only if the row still holds what we read: an agent running meanwhile may
                # have put a newer secret, which must not be replaced by the old one.
                matches = [c == v for c, v in zip(key_columns, row_key, strict=True)]
                written = await conn.execute(
                    update(table).where(*matches, secret == stored).values({column: new})
                )
                if written.rowcount == 1:
                    tally.resealed += 1
                else:
                    tally.changed += 1
            return rows

        # Shielded like every provider call: Ctrl-C mid-batch lets the batch end whole.
        rows = await db.run_transaction(batch)
        if not rows:
            return tally
        bar.update(len(rows))
        after = tuple(rows[-1][: len(keys)])


async def rotate_keys(
    db: Database, *, batch_size: int = 500, progress: bool = False
) -> RotationSummary:
    """Re-encrypt every sealed column under the first of `encryption_keys`; seal plaintext.

    Idempotent: a value already under the first key is not written, so a second run (or a
    run after a crash) changes nothing it has done.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    box = db.settings.secrets
    if box is None:
        raise ConfigError("rotate-keys needs option `encryption_keys`")
    total = 0
    for table, _, _ in SEALED_COLUMNS:
        total += int((await db.execute(select(func.count()).select_from(table))).scalar_one())
    summary = RotationSummary()
    with progress_bar(total, unit="row", desc="re-encrypting", wanted=progress) as bar:
        for table, keys, column in SEALED_COLUMNS:
            summary.counts[table.name] = await _rotate_table(
                db, box, table, keys, column, batch_size, bar
            )
    return summary


# --- the CLI verb ---


def keys_from_config(path: Path) -> list[str] | None:
    """`storage.encryption_keys` of an agent's config.yaml, placeholders filled as for `url`."""
    from slack_agents_sa.cli import UsageError, storage_options

    value = storage_options(path).get("encryption_keys")
    if value is None:
        return None
    if isinstance(value, str):
        return split_keys(value)
    if isinstance(value, list) and all(isinstance(key, str) for key in value):
        return value
    raise UsageError(f"{path}: storage.encryption_keys must be a list of keys")


def configured_keys(args: argparse.Namespace) -> list[str]:
    """The keys for `rotate-keys`: $SLACK_AGENTS_SA_ENCRYPTION_KEYS, else `--config`'s."""
    from slack_agents_sa.cli import UsageError

    if os.environ.get(KEYS_ENV_VAR):
        return split_keys(os.environ[KEYS_ENV_VAR])
    if args.config and (found := keys_from_config(Path(args.config))) is not None:
        return found
    raise UsageError(
        f"no keys: set {KEYS_ENV_VAR} (comma-separated, the new key first), or pass "
        "--config with an agent's config.yaml whose storage has `encryption_keys`"
    )


async def cmd_rotate_keys(url: URL, args: argparse.Namespace) -> int:
    from slack_agents_sa.cli import EXIT_FAILED, EXIT_OK, UsageError, _connected
    from slack_agents_sa.provider import Provider

    keys = configured_keys(args)
    # The CLI's reachability probe, for its exit code (the provider's start-up would raise
    # each driver's own error).
    engine, conn = await _connected(url, args.schema)
    await conn.close()
    await engine.dispose()
    try:
        storage = Provider(
            url=url.render_as_string(hide_password=False),
            migrate=False,
            schema=args.schema,
            encryption_keys=keys,
        )
    except ConfigError as error:
        raise UsageError(str(error)) from None
    await storage.initialize()
    try:
        summary = await rotate_keys(
            storage.db, batch_size=args.batch_size, progress=not args.no_progress
        )
    finally:
        await storage.close()
    print(summary.table())
    if summary.failed:
        print(
            f"{summary.failed} row(s) are encrypted under no key of encryption_keys: "
            "add the key they were written with (after the first) and run again",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def add_command(commands: Any) -> None:
    """Register the `rotate-keys` verb on the CLI's subparsers."""
    verb = commands.add_parser(
        "rotate-keys",
        help="re-encrypt OAuth secrets under the first of encryption_keys",
        description=f"Keys from ${KEYS_ENV_VAR} (comma-separated, new key first), else "
        "--config's storage.encryption_keys. Rows already under the first key are not written.",
    )
    verb.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    verb.add_argument("--no-progress", action="store_true", help="no progress bar")
    verb.set_defaults(run=cmd_rotate_keys)
