"""Exceptions a user of the provider can act on; driver errors never leak raw."""

from __future__ import annotations


class SlackAgentsSAError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(SlackAgentsSAError, ValueError):
    """A provider option is unknown, malformed or names a driver that is missing."""


class SchemaOutOfDateError(SlackAgentsSAError, RuntimeError):
    """The database schema is not at the migrations' head and `migrate` is off."""

    def __init__(self, message: str, *, database_revision: str, head: str) -> None:
        super().__init__(message)
        #: The database's revision ("base": no schema of ours).
        self.database_revision = database_revision
        self.head = head


class ProviderClosedError(SlackAgentsSAError, RuntimeError):
    """A storage call was made before `initialize()` or after `close()`."""


class ConnectionLostError(SlackAgentsSAError, ConnectionError):
    """The database connection failed before or during a call.

    Each call is one statement or one transaction, so it took effect entirely or not at
    all; later calls reconnect by themselves.
    """


class ImportSourceError(SlackAgentsSAError):
    """The source is not a database of the host's built-in sqlite or postgres provider."""


class MigrationError(SlackAgentsSAError, RuntimeError):
    """A migration was refused, or rolled back, before it could leave the database damaged."""


class MigrationLockError(MigrationError):
    """Another migrator held the migration lock longer than `timeout` seconds (or the server
    refused it), so this one did not run. Retrying later is safe."""

    def __init__(self, message: str, *, lock: str, timeout: float) -> None:
        super().__init__(message)
        self.lock = lock
        self.timeout = timeout


class SchemaTooNewError(SlackAgentsSAError, RuntimeError):
    """A newer slack_agents_sa migrated the database to a revision this release does not know,
    and that schema does not declare itself usable by this release's code."""

    def __init__(self, message: str, *, database_revision: str, head: str) -> None:
        super().__init__(message)
        self.database_revision = database_revision
        self.head = head


class DecryptionError(SlackAgentsSAError, ValueError):
    """A stored secret is encrypted, and no key of option `encryption_keys` opens it (or the
    option is not set). The message names the column, never the secret or its ciphertext."""

    def __init__(self, message: str, *, column: str) -> None:
        super().__init__(message)
        self.column = column


class InvalidValueError(SlackAgentsSAError, ValueError, TypeError):
    """A value cannot be stored as given (not JSON, NaN, a naive datetime, text the database's
    encoding cannot hold): refused before anything was sent, so nothing was written.

    Both a ValueError and a TypeError, so code written for either still catches it.
    """


class MissingRowError(SlackAgentsSAError, ValueError):
    """A write names a conversation, message or block that does not exist: never created,
    or deleted since (by `prune`, perhaps from another process or another cluster node).
    Nothing of the call was written. A ValueError, as a bad argument is."""


class StatementTimeoutError(SlackAgentsSAError, TimeoutError):
    """The database stopped a statement: it ran past option `statement_timeout` (or the
    server's own limit), or an operator cancelled it. Nothing of the call was written; the
    connection stays usable and the next call works."""


class LockTimeoutError(SlackAgentsSAError, TimeoutError):
    """A statement waited longer than option `lock_timeout` (or the database's own limit) for
    a lock another session holds. Nothing of the call was written; retrying later is safe."""


class PoolTimeoutError(SlackAgentsSAError, TimeoutError):
    """No connection of the provider's pool came free within option `pool_timeout`: every
    one is busy with other calls. Nothing was sent; raise `pool_size` or `pool_timeout`."""


class TransactionConflictError(SlackAgentsSAError, RuntimeError):
    """The database rolled the call back as a deadlock or a serialization conflict on every
    attempt it was given. Each attempt was undone whole, so nothing was written."""
