"""TLS to MySQL/MariaDB, live, on both executors: the MySQL dialects' `ssl_*` URL options.

A private MariaDB (`tests.mariadb_tls`) refuses TCP connections without TLS
(`require_secure_transport`). SQLAlchemy's MySQL dialects read `ssl_ca`, `ssl_cert`,
`ssl_key`, `ssl_check_hostname` (and `ssl_capath`, `ssl_cipher`) from the URL's query into
the driver's `ssl` dict; asyncmy makes an `ssl.create_default_context(cafile=ssl_ca)` of
it, which checks the certificate and the host name. `ssl_ca` connects by IP and by name;
the wrong CA, a name not on the certificate, no TLS at all, or `certuser` without its
client certificate are refused with an error that says so (or, for the server's refusals,
MariaDB's "Access denied"). `certuser` logs in with `ssl_cert` and an unencrypted
`ssl_key`: asyncmy has no option for a key's password. aiomysql takes the same options
(the provider makes the `ssl.SSLContext` aiomysql wants from them).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator

import pytest

from slack_agents_sa import Provider
from tests.conftest import STRICT_ENV
from tests.databases import opened_provider
from tests.mariadb_tls import MariaDbTlsServer, mariadb_tls_server, missing_programs
from tests.tls_certificates import CERT_USER

#: A test body not done after this many seconds is hung.
HANG_S = 60
EXECUTORS = ["native", "sqlalchemy"]


@pytest.fixture(scope="module")
def server() -> Iterator[MariaDbTlsServer]:
    missing = missing_programs()
    if missing:
        message = f"MariaDB server programs or openssl not installed: {', '.join(missing)}"
        if os.environ.get(STRICT_ENV) == "1":
            pytest.fail(f"{message}; {STRICT_ENV}=1 forbids skipping the TLS tests")
        pytest.skip(message)
    with mariadb_tls_server() as started:
        yield started


async def _round_trip(url: str, executor: str) -> None:
    async with opened_provider(url, executor=executor) as storage:
        await asyncio.wait_for(storage.set("tls", executor, {"over": "tls"}), HANG_S)
        assert await asyncio.wait_for(storage.get("tls", executor), HANG_S) == {"over": "tls"}


async def _refused(url: str, executor: str) -> BaseException:
    """The error `initialize` fails with on `url` (the test fails if it connects)."""
    storage = Provider(url=url, executor=executor)
    try:
        with pytest.raises(Exception) as caught:
            await asyncio.wait_for(storage.initialize(), HANG_S)
    finally:
        await storage.close()
    return caught.value


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("executor", EXECUTORS)
async def test_ssl_ca_connects_checking_the_certificate_and_host_name(
    server: MariaDbTlsServer, executor: str, host: str
) -> None:
    await _round_trip(server.url(host=host, ssl_ca=str(server.ca)), executor)


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_another_ca_is_refused_saying_the_certificate_failed(
    server: MariaDbTlsServer, executor: str
) -> None:
    error = await _refused(server.url(ssl_ca=str(server.wrong_ca)), executor)
    assert "certificate verify failed" in str(error)
    assert "127.0.0.1" in str(error)
    assert any(isinstance(cause, ssl.SSLCertVerificationError) for cause in _causes(error))


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_another_ca_is_the_providers_connection_error(
    server: MariaDbTlsServer, executor: str
) -> None:
    storage = Provider(url=server.url(ssl_ca=str(server.wrong_ca)), executor=executor)
    try:
        with pytest.raises(ConnectionError, match="did not verify against the trusted CA"):
            await asyncio.wait_for(storage.initialize(), HANG_S)
    finally:
        await storage.close()


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_a_name_not_on_the_certificate_is_refused_unless_ssl_check_hostname_is_false(
    server: MariaDbTlsServer, executor: str
) -> None:
    if server.other_host is None:
        pytest.skip("127.0.0.2 cannot be bound here")
    error = await _refused(server.url(host=server.other_host, ssl_ca=str(server.ca)), executor)
    assert "certificate verify failed" in str(error)
    assert f"not valid for '{server.other_host}'" in str(error)
    url = server.url(host=server.other_host, ssl_ca=str(server.ca), ssl_check_hostname="false")
    await _round_trip(url, executor)


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_a_connection_without_tls_is_refused_by_the_server(
    server: MariaDbTlsServer, executor: str
) -> None:
    """MariaDB's `require_secure_transport` answers a plain connection with error 1045,
    "Access denied", not a word about TLS (MySQL 8 says 3159, "Connections using insecure
    transport are prohibited"). `tlsuser` needs nothing but TLS: with `ssl_ca` it logs in
    (test_ssl_ca_connects_...)."""
    error = await _refused(server.url(), executor)
    assert "Access denied for user 'tlsuser'" in str(error)


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_a_client_certificate_logs_in(server: MariaDbTlsServer, executor: str) -> None:
    url = server.url(
        user=CERT_USER,
        ssl_ca=str(server.ca),
        ssl_cert=str(server.client_cert),
        ssl_key=str(server.client_key_plain),
    )
    await _round_trip(url, executor)


@pytest.mark.parametrize("executor", EXECUTORS)
async def test_without_its_client_certificate_the_user_is_refused(
    server: MariaDbTlsServer, executor: str
) -> None:
    error = await _refused(server.url(user=CERT_USER, ssl_ca=str(server.ca)), executor)
    assert f"Access denied for user '{CERT_USER}'" in str(error)


#: Run in a child process: OpenSSL asks for an encrypted key's password on the terminal,
#: and a test must not wait for one. The child has no terminal and no input.
_ENCRYPTED_KEY_CHILD = """
import asyncio, json, sys
from slack_agents_sa import Provider

async def attempt(url, executor):
    storage = Provider(url=url, executor=executor)
    try:
        await asyncio.wait_for(storage.initialize(), 30)
    except Exception as error:
        return {"connected": False, "os_error": isinstance(error, OSError), "error": repr(error)}
    finally:
        await storage.close()
    return {"connected": True}

print(json.dumps({ex: asyncio.run(attempt(sys.argv[1], ex)) for ex in sys.argv[2:]}))
"""


def test_asyncmy_cannot_use_an_encrypted_client_key(server: MariaDbTlsServer) -> None:
    """asyncmy passes no password to `load_cert_chain`, so OpenSSL prompts for one
    ("Enter PEM pass phrase:"); with no terminal and no input the connect fails."""
    url = server.url(
        user=CERT_USER,
        ssl_ca=str(server.ca),
        ssl_cert=str(server.client_cert),
        ssl_key=str(server.client_key),
    )
    done = subprocess.run(
        [sys.executable, "-c", _ENCRYPTED_KEY_CHILD, url, *EXECUTORS],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        start_new_session=True,
        check=True,
    )
    results = json.loads(done.stdout.splitlines()[-1])
    for executor in EXECUTORS:
        assert results[executor]["connected"] is False, results
        assert results[executor]["os_error"] is True, results


async def test_aiomysql_connects_with_ssl_ca(server: MariaDbTlsServer) -> None:
    await _round_trip(server.url(driver="aiomysql", ssl_ca=str(server.ca)), "sqlalchemy")
