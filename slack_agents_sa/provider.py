"""`Provider`: the storage backend the host loads for `storage: {type: slack_agents_sa}`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_agents.storage.base import BaseStorageProvider

from slack_agents_sa import tracing
from slack_agents_sa.conversations import ConversationMethods
from slack_agents_sa.database import Database
from slack_agents_sa.erasure import ErasureMethods
from slack_agents_sa.export import ExportMethods
from slack_agents_sa.keyvalue import KeyValueMethods
from slack_agents_sa.oauth import OAuthMethods
from slack_agents_sa.retention import RetentionMethods
from slack_agents_sa.search import SearchMethods
from slack_agents_sa.settings import ProviderSettings, safe_url
from slack_agents_sa.startup import open_database

logger = logging.getLogger(__name__)


class Provider(
    KeyValueMethods,
    ConversationMethods,
    ExportMethods,
    OAuthMethods,
    RetentionMethods,
    ErasureMethods,
    SearchMethods,
    BaseStorageProvider,
):
    """SQLAlchemy async storage for python-slack-agents, on SQLite, PostgreSQL or MySQL.

    Options are those of `ProviderSettings` (`url`, `migrate`, `echo`, pool options);
    an unknown or malformed one raises `ConfigError` here, before any connection.
    """

    def __init__(self, url: str | None = None, **options: Any) -> None:
        if url is not None:
            options["url"] = url
        self.settings = ProviderSettings.from_options(options)
        self._database: Database | None = None
        # The start-up in progress: it runs to its end even if its caller is cancelled.
        self._starting: asyncio.Task[None] | None = None

    @property
    def supports_export(self) -> bool:
        """True unless the database is in-memory SQLite, which the host's exports refuse."""
        return not self.settings.is_memory_sqlite

    async def initialize(self) -> None:
        """Open the engine and bring the schema to head (or check it is, with `migrate: false`).

        Calling it again on an open provider does nothing. Start-up is shielded from the
        caller's cancellation, so a migration is never cut short: a cancelled `initialize()`
        still leaves the provider open once start-up ends (or closed if it failed), and a
        second `initialize()` meanwhile waits for the same start-up.
        """
        if self._database is not None:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        try:
            self._database = await open_database(self.settings)
        finally:
            self._starting = None
        logger.info(
            "slack_agents_sa storage ready (%s)",
            safe_url(self.settings.url),
        )

    async def close(self) -> None:
        """Dispose of the engine and its connections; later calls raise ProviderClosedError.

        A start-up still running is waited for first; the disposal itself is shielded, so a
        cancelled `close()` still closes every connection.
        """
        if self._starting is not None:
            await asyncio.wait({self._starting})
        database, self._database = self._database, None
        if database is not None:
            await asyncio.shield(database.dispose())


tracing.instrument(Provider)
