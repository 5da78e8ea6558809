"""SQLAlchemy 2.x async storage for python-slack-agents: `storage: {type: slack_agents_sa}`.

What an agent process needs is imported here; `Stats` and `collect_stats` load on first use.
"""

from typing import TYPE_CHECKING, Any

#: The release, read by the build (pyproject's `[tool.hatch.version]`) and `--version`: one
#: source, and no `importlib.metadata` at import time.
__version__ = "0.1.0"

from slack_agents_sa.errors import (
    ConfigError,
    ConnectionLostError,
    DecryptionError,
    ImportSourceError,
    MigrationError,
    MigrationLockError,
    ProviderClosedError,
    SchemaOutOfDateError,
    SchemaTooNewError,
    SlackAgentsSAError,
)
from slack_agents_sa.models import (
    Base,
    Block,
    Conversation,
    Heartbeat,
    KeyValueEntry,
    ListItem,
    Message,
    OAuthClient,
    OAuthToken,
    ToolCall,
    metadata,
)
from slack_agents_sa.provider import Provider
from slack_agents_sa.retention import PruneResult
from slack_agents_sa.search import HistoryHit

if TYPE_CHECKING:
    from slack_agents_sa.stats import Stats, collect_stats


def __getattr__(name: str) -> Any:
    """`Stats` and `collect_stats`, imported when first asked for."""
    if name in ("Stats", "collect_stats"):
        from slack_agents_sa import stats

        return getattr(stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Base",
    "Block",
    "ConfigError",
    "ConnectionLostError",
    "Conversation",
    "DecryptionError",
    "Heartbeat",
    "HistoryHit",
    "ImportSourceError",
    "KeyValueEntry",
    "ListItem",
    "Message",
    "MigrationError",
    "MigrationLockError",
    "OAuthClient",
    "OAuthToken",
    "Provider",
    "ProviderClosedError",
    "PruneResult",
    "SchemaOutOfDateError",
    "SchemaTooNewError",
    "SlackAgentsSAError",
    "Stats",
    "ToolCall",
    "__version__",
    "collect_stats",
    "metadata",
]
