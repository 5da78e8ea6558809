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
