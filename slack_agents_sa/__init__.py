"""SQLAlchemy 2.x async storage for python-slack-agents: `storage: {type: slack_agents_sa}`.

What an agent process needs is imported here; `Stats` and `collect_stats` load on first use.
"""

from typing import TYPE_CHECKING, Any

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
    "collect_stats",
    "metadata",
]
