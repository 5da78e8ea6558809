"""The host's OAuth rows: per-user MCP tokens and per-server client registrations.

The secret columns (`access_token`, `refresh_token_enc`, `client_secret`) are bound
parameters only; they never appear in our messages or logs. With option `encryption_keys`,
`access_token` and `client_secret` are stored encrypted (see `secretbox.py`); `refresh_token_enc`
comes encrypted by the host and is stored as given.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from slack_agents.storage.base import OAuthClientRow, OAuthTokenRow
from sqlalchemy import bindparam, delete, select

from slack_agents_sa.database import UsesDatabase
from slack_agents_sa.models import KEY_LENGTH, NAME_LENGTH, OAuthClient, OAuthToken, table_of
from slack_agents_sa.secretbox import open_secret, seal_secret
from slack_agents_sa.validation import check_text

_TOKEN_FIELDS = tuple(OAuthTokenRow.__dataclass_fields__)
_CLIENT_FIELDS = tuple(OAuthClientRow.__dataclass_fields__)


def _check_row(
    name: str, row: Any, row_type: type[OAuthTokenRow] | type[OAuthClientRow]
) -> dict[str, Any]:
    if not isinstance(row, row_type):
        raise TypeError(f"{name} must be an {row_type.__name__}, got {type(row).__name__}")
    values = asdict(row)
    for field, value in values.items():
        if isinstance(value, str):
            # The message names the field, never its value (some are secrets).
            check_text(f"{name}.{field}", value)
    return values


_ACCESS_TOKEN = f"{OAuthToken.__tablename__}.access_token"
_CLIENT_SECRET = f"{OAuthClient.__tablename__}.client_secret"


_tokens = table_of(OAuthToken)
_clients = table_of(OAuthClient)
_TOKEN = (_tokens.c.user_id == bindparam("user_id")) & (
    _tokens.c.server_id == bindparam("server_id")
)
_CLIENT = (_clients.c.server_id == bindparam("server_id")) & (
    _clients.c.redirect_uri == bindparam("redirect_uri")
)
# Built once: on hot paths, building a statement costs more than running it.
_GET_TOKEN = select(*(_tokens.c[name] for name in _TOKEN_FIELDS)).where(_TOKEN)
_DELETE_TOKEN = delete(_tokens).where(_TOKEN)
_GET_CLIENT = select(*(_clients.c[name] for name in _CLIENT_FIELDS)).where(_CLIENT)
_DELETE_CLIENT = delete(_clients).where(_CLIENT)

# What a repeated `put` overwrites: everything but the first created_at.
_TOKEN_UPDATE = tuple(name for name in _TOKEN_FIELDS if name != "created_at")
_CLIENT_UPDATE = tuple(name for name in _CLIENT_FIELDS if name != "created_at")


class OAuthMethods(UsesDatabase):
    """get / put / delete of OAuthTokenRow and OAuthClientRow; `put` keeps the first created_at."""

    async def get_oauth_token(self, user_id: str, server_id: str) -> OAuthTokenRow | None:
        check_text("user_id", user_id, NAME_LENGTH)
        check_text("server_id", server_id, NAME_LENGTH)
        rows = await self.db.fetch(_GET_TOKEN, {"user_id": user_id, "server_id": server_id})
        if not rows:
            return None
        row = rows[0]._asdict()
        access_token = open_secret(self.db.settings.secrets, _ACCESS_TOKEN, row["access_token"])
        return OAuthTokenRow(**{**row, "access_token": access_token})

    async def put_oauth_token(self, user_id: str, server_id: str, row: OAuthTokenRow) -> None:
        check_text("user_id", user_id, NAME_LENGTH)
        check_text("server_id", server_id, NAME_LENGTH)
        values = _check_row("row", row, OAuthTokenRow)
        box = self.db.settings.secrets
        values["access_token"] = seal_secret(box, "row.access_token", values["access_token"])
        values = {"user_id": user_id, "server_id": server_id, **values}
        keys = ("user_id", "server_id")
        stmt = self.db.backend.upsert(OAuthToken, tuple(values), keys, _TOKEN_UPDATE)
        await self.db.write(stmt, values)

    async def delete_oauth_token(self, user_id: str, server_id: str) -> None:
        check_text("user_id", user_id, NAME_LENGTH)
        check_text("server_id", server_id, NAME_LENGTH)
        await self.db.write(_DELETE_TOKEN, {"user_id": user_id, "server_id": server_id})

    async def get_oauth_client(self, server_id: str, redirect_uri: str) -> OAuthClientRow | None:
        check_text("server_id", server_id, NAME_LENGTH)
        check_text("redirect_uri", redirect_uri, KEY_LENGTH)
        client = {"server_id": server_id, "redirect_uri": redirect_uri}
        rows = await self.db.fetch(_GET_CLIENT, client)
        if not rows:
            return None
        row = rows[0]._asdict()
        secret = row["client_secret"]
        if secret is not None:
            secret = open_secret(self.db.settings.secrets, _CLIENT_SECRET, secret)
        return OAuthClientRow(**{**row, "client_secret": secret})

    async def put_oauth_client(
        self, server_id: str, redirect_uri: str, row: OAuthClientRow
    ) -> None:
        check_text("server_id", server_id, NAME_LENGTH)
        check_text("redirect_uri", redirect_uri, KEY_LENGTH)
        values = _check_row("row", row, OAuthClientRow)
        if values["client_secret"] is not None:
            box = self.db.settings.secrets
            values["client_secret"] = seal_secret(box, "row.client_secret", values["client_secret"])
        values = {"server_id": server_id, "redirect_uri": redirect_uri, **values}
        keys = ("server_id", "redirect_uri")
        stmt = self.db.backend.upsert(OAuthClient, tuple(values), keys, _CLIENT_UPDATE)
        await self.db.write(stmt, values)

    async def delete_oauth_client(self, server_id: str, redirect_uri: str) -> None:
        check_text("server_id", server_id, NAME_LENGTH)
        check_text("redirect_uri", redirect_uri, KEY_LENGTH)
        client = {"server_id": server_id, "redirect_uri": redirect_uri}
        await self.db.write(_DELETE_CLIENT, client)
