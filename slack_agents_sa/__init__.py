"""SQLAlchemy 2.x async storage for python-slack-agents: `storage: {type: slack_agents_sa}`."""

from slack_agents_sa.errors import (
    ConfigError,
    ConnectionLostError,
    ProviderClosedError,
    SchemaOutOfDateError,
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
    "OAuthClient",
    "OAuthToken",
    "Provider",
    "ProviderClosedError",
    "SchemaOutOfDateError",
    "SlackAgentsSAError",
    "ToolCall",
    "metadata",
]
