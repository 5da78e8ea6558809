"""Sample rows shared by several tests."""

from __future__ import annotations

from slack_agents.storage.base import OAuthClientRow, OAuthTokenRow

TOKEN = OAuthTokenRow(
    access_token="at",
    refresh_token_enc="rt",
    token_type="Bearer",
    scopes="a b",
    expires_at=1_900_000_000,
    created_at=1_700_000_000,
    updated_at=1_700_000_100,
)
CLIENT = OAuthClientRow(
    client_id="cid",
    client_secret="cs",
    metadata_json='{"m": 1}',
    authorization_server="https://auth.example",
    created_at=1_700_000_000,
    updated_at=1_700_000_000,
)
