"""libpq's URL options on PostgreSQL, as hosted databases hand them out, on both executors.

Live against the configured server: `sslmode=disable`/`prefer`, `application_name` (seen in
`pg_stat_activity`), `target_session_attrs`, and a comma list of hosts whose first refuses
connections. Without a server: the list becomes SQLAlchemy's multi-host form, and options
asyncpg would refuse at connect time are refused when the URL is read, naming the option.
TLS itself is `tests/test_tls.py`.
"""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from slack_agents_sa import Provider
from slack_agents_sa.errors import ConfigError
from slack_agents_sa.settings import normalize_url, safe_url
from tests.databases import POSTGRES, POSTGRES_SQLALCHEMY, Backend, backend_params, opened_provider
from tests.pg_cluster import free_port

#: A test body not done after this many seconds is hung.
HANG_S = 60
BOTH = backend_params([POSTGRES, POSTGRES_SQLALCHEMY])


def _with(url: URL, **options: str) -> str:
    return url.update_query_dict(options).render_as_string(hide_password=False)


async def _round_trip(url: str, backend: Backend) -> None:
    async with opened_provider(url, **backend.options) as storage:
        await asyncio.wait_for(storage.set("libpq", "k", {"v": 1}), HANG_S)
        assert await storage.get("libpq", "k") == {"v": 1}


@pytest.mark.parametrize("sslmode", ["disable", "allow", "prefer"])
@pytest.mark.parametrize("backend", BOTH)
async def test_sslmodes_that_allow_plain_connections_connect(
    backend: Backend, sslmode: str
) -> None:
    await _round_trip(_with(backend.server_url, sslmode=sslmode), backend)


@pytest.mark.parametrize("backend", BOTH)
async def test_application_name_names_every_session_of_the_provider(backend: Backend) -> None:
    name = f"sa-{uuid.uuid4().hex[:12]}"
    server = backend.server_url
    async with opened_provider(_with(server, application_name=name), **backend.options) as storage:
        await storage.set("libpq", "named", {"v": 1})
        engine = create_async_engine(server)
        try:
            async with engine.connect() as conn:
                seen = await conn.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"),
                    {"n": name},
                )
        finally:
            await engine.dispose()
    assert seen is not None and seen >= 1


@pytest.mark.parametrize("backend", BOTH)
async def test_target_session_attrs_reaches_the_driver(backend: Backend) -> None:
    await _round_trip(_with(backend.server_url, target_session_attrs="read-write"), backend)
    storage = Provider(url=_with(backend.server_url, target_session_attrs="standby"))
    try:
        with pytest.raises(Exception, match="target attribute"):
            await asyncio.wait_for(storage.initialize(), HANG_S)
    finally:
        await storage.close()


@pytest.mark.parametrize("backend", BOTH)
async def test_a_comma_list_of_hosts_connects_to_the_first_that_answers(backend: Backend) -> None:
    server = backend.server_url
    closed = free_port()  # nothing listens: refused at once
    user = server.username or "postgres"
    password = f":{server.password}" if server.password else ""
    url = (
        f"postgresql://{user}{password}@127.0.0.1:{closed},{server.host}:{server.port or 5432}"
        f"/{server.database}?target_session_attrs=read-write"
    )
    await _round_trip(url, backend)


def test_a_comma_list_becomes_sqlalchemys_multi_host_form_with_default_ports() -> None:
    url = normalize_url("postgresql://u:p@h1:5433,h2,[::1]:5434/db?sslmode=require")
    assert url.host is None and url.database == "db" and url.password == "p"
    assert url.query["host"] == ("h1:5433", "h2:5432", "[::1]:5434")
    assert url.query["sslmode"] == "require"
    assert safe_url(url) == (
        "postgresql+asyncpg://u:***@/db?sslmode=require&host=h1:5433&host=h2:5432&host=[::1]:5434"
    )
    assert safe_url("postgresql://u:secret@h1,h2/db") == (
        "postgresql://u:***@/db?host=h1:5432&host=h2:5432"
    )


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("sslmode=required", "sslmode='required' is not one of disable, allow, prefer"),
        ("target_session_attrs=master", "target_session_attrs='master' is not one of any"),
        ("sslrootcert=/no/such/ca.pem", "sslrootcert: no file '/no/such/ca.pem'"),
        ("sslkey=/no/such/key.pem", "sslkey: no file"),
        ("sslmod=require", "unknown URL option(s) sslmod for asyncpg"),
        ("timeout=3", "unknown URL option(s) timeout for asyncpg"),
        ("sslmode=require&sslmode=disable", "URL option sslmode is given more than once"),
    ],
)
def test_options_asyncpg_would_refuse_are_refused_when_the_url_is_read(
    query: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=f"option 'url': .*{re.escape(says)}"):
        Provider(url=f"postgresql://u:secret@db/agents?{query}")


def test_sslrootcert_system_names_the_system_store_not_a_file() -> None:
    url = normalize_url("postgresql://u@db/agents?sslmode=verify-full&sslrootcert=system")
    assert url.query["sslrootcert"] == "system"
