"""SQLAlchemy 2.x async storage for python-slack-agents: `storage: {type: slack_agents_sa}`."""

from slack_agents_sa.errors import (
    ConfigError,
    ConnectionLostError,
    DecryptionError,
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
from slack_agents_sa.stats import Stats, collect_stats

__all__ = [
    "Base",
    "Block",
    "ConfigError",
    "ConnectionLostError",
    "Conversation",
    "DecryptionError",
    "Heartbeat",
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
