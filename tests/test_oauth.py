"""OAuth token and client rows: typed round trips, upserts that keep the first created_at."""

from __future__ import annotations

from dataclasses import replace

from slack_agents.storage.base import OAuthClientRow, OAuthTokenRow

from slack_agents_sa import Provider

TOKEN = OAuthTokenRow(
    access_token="at-" + "x" * 2000,
    refresh_token_enc="gAAAAABenc==",
    token_type="Bearer",
    scopes="read write",
    expires_at=1_900_000_000,
    created_at=1_700_000_000,
    updated_at=1_700_000_000,
)
CLIENT = OAuthClientRow(
    client_id="client-1",
    client_secret=None,
    metadata_json='{"client_id": "client-1", "redirect_uris": ["https://x/cb"]}',
    authorization_server="https://auth.example.com",
    created_at=1_700_000_000,
    updated_at=1_700_000_000,
)


async def test_token_round_trips_equal(provider: Provider) -> None:
    assert await provider.get_oauth_token("U1", "mcp") is None
    await provider.put_oauth_token("U1", "mcp", TOKEN)
    assert await provider.get_oauth_token("U1", "mcp") == TOKEN
    assert await provider.get_oauth_token("U2", "mcp") is None


async def test_token_put_updates_but_keeps_the_first_created_at(provider: Provider) -> None:
    await provider.put_oauth_token("U1", "mcp", TOKEN)
    newer = replace(
        TOKEN,
        access_token="at-2",
        refresh_token_enc=None,
        expires_at=None,
        created_at=1_800_000_000,
        updated_at=1_800_000_000,
    )
    await provider.put_oauth_token("U1", "mcp", newer)
    assert await provider.get_oauth_token("U1", "mcp") == replace(newer, created_at=1_700_000_000)


async def test_token_delete(provider: Provider) -> None:
    await provider.put_oauth_token("U1", "mcp", TOKEN)
    await provider.put_oauth_token("U1", "other", TOKEN)
    await provider.delete_oauth_token("U1", "mcp")
    await provider.delete_oauth_token("U1", "never")
    assert await provider.get_oauth_token("U1", "mcp") is None
    assert await provider.get_oauth_token("U1", "other") == TOKEN


async def test_client_round_trips_and_keeps_the_first_created_at(provider: Provider) -> None:
    assert await provider.get_oauth_client("mcp", "https://x/cb") is None
    await provider.put_oauth_client("mcp", "https://x/cb", CLIENT)
    assert await provider.get_oauth_client("mcp", "https://x/cb") == CLIENT
    newer = replace(
        CLIENT, client_secret="s3cret", created_at=1_800_000_000, updated_at=1_800_000_001
    )
    await provider.put_oauth_client("mcp", "https://x/cb", newer)
    assert await provider.get_oauth_client("mcp", "https://x/cb") == replace(
        newer, created_at=1_700_000_000
    )
    assert await provider.get_oauth_client("mcp", "https://y/cb") is None


async def test_client_delete(provider: Provider) -> None:
    await provider.put_oauth_client("mcp", "https://x/cb", CLIENT)
    await provider.delete_oauth_client("mcp", "https://x/cb")
    assert await provider.get_oauth_client("mcp", "https://x/cb") is None
