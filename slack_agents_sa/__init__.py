"""SQLAlchemy 2.x async storage for python-slack-agents: `storage: {type: slack_agents_sa}`."""

from slack_agents_sa.errors import (
    ConfigError,
    ConnectionLostError,
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

__all__ = [
    "Base",
    "Block",
    "ConfigError",
    "ConnectionLostError",
    "Conversation",
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
    "SchemaOutOfDateError",
    "SchemaTooNewError",
    "SlackAgentsSAError",
    "ToolCall",
    "metadata",
]
