"""Exceptions a user of the provider can act on; driver errors never leak raw."""

from __future__ import annotations


class SlackAgentsSAError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(SlackAgentsSAError, ValueError):
    """A provider option is unknown, malformed or names a driver that is missing."""


class SchemaOutOfDateError(SlackAgentsSAError, RuntimeError):
    """The database schema is not at the migrations' head and `migrate` is off."""


class ProviderClosedError(SlackAgentsSAError, RuntimeError):
    """A storage call was made before `initialize()` or after `close()`."""


class ConnectionLostError(SlackAgentsSAError, ConnectionError):
    """The database connection failed before or during a call.

    Each call is one statement or one transaction, so it took effect entirely or not at
    all; later calls reconnect by themselves.
    """


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
