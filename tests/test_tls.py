"""TLS to PostgreSQL, live, on both executors: libpq's URL options as hosted databases use them.

A private server (`tests.pg_tls`) takes TLS connections only, with certificates made by
`openssl` for this run. `sslmode=require` and `verify-full` with `sslrootcert` connect;
`verify-full` with the wrong CA, or `disable`, fails with an error that says why; the
role `certuser` logs in with a client certificate whose key is encrypted (`sslcert`,
`sslkey`, `sslpassword`), and the password shows nowhere.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from slack_agents_sa import Provider
from tests.conftest import STRICT_ENV
from tests.databases import opened_provider
from tests.pg_cluster import find_bindir
from tests.pg_tls import TlsServer, tls_server
from tests.tls_certificates import CERT_USER, CLIENT_KEY_PASSWORD

#: A test body not done after this many seconds is hung.
HANG_S = 60
EXECUTORS = ["native", "sqlalchemy"]


@pytest.fixture(scope="module")
def server() -> Iterator[TlsServer]:
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server programs (initdb, pg_ctl) not installed"
        if os.environ.get(STRICT_ENV) == "1":
            pytest.fail(f"{message}; {STRICT_ENV}=1 forbids skipping the TLS tests")
        pytest.skip(message)
    with tls_server(bindir) as started:
        yield started


async def _round_trip(url: str, executor: str) -> None:
    async with opened_provider(url, executor=executor) as storage:
        await asyncio.wait_for(storage.set("tls", executor, {"over": "tls"}), HANG_S)
        assert await storage.get("tls", executor) == {"over": "tls"}


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_sslmode_require_connects_without_checking_the_certificate(
    server: TlsServer, executor: str
) -> None:
    await _round_trip(server.url(sslmode="require"), executor)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("executor", EXECUTORS)
async def test_verify_full_with_the_servers_ca_connects(
    server: TlsServer, executor: str, host: str
) -> None:
    url = server.url(host=host, sslmode="verify-full", sslrootcert=str(server.ca))
    await _round_trip(url, executor)


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_verify_full_with_another_ca_is_refused_saying_the_certificate_failed(
    server: TlsServer, executor: str
) -> None:
    url = server.url(sslmode="verify-full", sslrootcert=str(server.wrong_ca))
    storage = Provider(url=url, executor=executor)
    try:
        with pytest.raises(OSError, match="certificate verify failed"):
            await asyncio.wait_for(storage.initialize(), HANG_S)
    finally:
        await storage.close()


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_sslmode_disable_on_a_tls_only_server_is_refused_by_the_server(
    server: TlsServer, executor: str
) -> None:
    storage = Provider(url=server.url(sslmode="disable"), executor=executor)
    try:
        with pytest.raises(Exception, match="no encryption"):
            await asyncio.wait_for(storage.initialize(), HANG_S)
    finally:
        await storage.close()


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_a_client_certificate_with_an_encrypted_key_logs_in(
    server: TlsServer, executor: str
) -> None:
    url = server.url(
        user=CERT_USER,
        sslmode="verify-full",
        sslrootcert=str(server.ca),
        sslcert=str(server.client_cert),
        sslkey=str(server.client_key),
        sslpassword=CLIENT_KEY_PASSWORD,
    )
    await _round_trip(url, executor)
    storage = Provider(url=url, executor=executor)
    shown = f"{storage.settings!r} {storage.settings}"
    assert "sslpassword=***" in shown
    assert CLIENT_KEY_PASSWORD not in shown and "key+secret" not in shown


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_a_client_key_without_its_password_is_refused(
    server: TlsServer, executor: str
) -> None:
    url = server.url(
        user=CERT_USER,
        sslmode="verify-full",
        sslrootcert=str(server.ca),
        sslcert=str(server.client_cert),
        sslkey=str(server.client_key),
        sslpassword="wrong",
    )
    storage = Provider(url=url, executor=executor)
    try:
        with pytest.raises(ConnectionError, match="cannot load the TLS client certificate"):
            await asyncio.wait_for(storage.initialize(), HANG_S)
    finally:
        await storage.close()
