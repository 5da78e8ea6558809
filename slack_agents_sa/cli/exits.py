"""The command line's exit codes, and the errors that choose one (docs/cli.md)."""

from __future__ import annotations

from slack_agents_sa.errors import SlackAgentsSAError

EXIT_OK = 0
#: The command ran and failed (a migration error, an import error).
EXIT_FAILED = 1
#: Bad arguments or configuration (unknown URL scheme, unreadable config.yaml).
EXIT_USAGE = 2
#: The database could not be reached.
EXIT_UNREACHABLE = 3
#: `check`, `stats`: connected, but the schema is not at the migrations' head.
EXIT_NOT_AT_HEAD = 4
#: Interrupted (Ctrl-C): the shell's convention, 128 + SIGINT.
EXIT_INTERRUPTED = 130


class UsageError(SlackAgentsSAError):
    """Arguments or configuration the command cannot work with."""


class Unreachable(SlackAgentsSAError):
    """The database did not answer the command's first connection."""


class NotAtHead(SlackAgentsSAError):
    """Connected, but the schema is not one this release works on (exit 4)."""
