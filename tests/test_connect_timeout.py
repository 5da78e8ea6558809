"""Option `connect_timeout`: a server that accepts TCP and never answers cannot hang a provider.

Start-up and later calls (a lane or a pooled connection opened after the server fell
silent) fail once the time is up, with an error naming the time and the server, on every
server backend and executor; the same provider works again once the server answers. The
URL's `connect_timeout` says the same as the option. Nothing asserts on a duration: the
hang guard only stops a test that would otherwise wait forever.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from sqlalchemy.engine import URL, make_url

from slack_agents_sa import Provider
from slack_agents_sa.backends.connect import DEFAULT_CONNECT_TIMEOUT_S
from slack_agents_sa.errors import ConfigError, ConnectionLostError
from slack_agents_sa.settings import ProviderSettings
from tests.databases import (
    MYSQL,
    POSTGRES,
    SERVER_BACKENDS,
    Backend,
    backend_params,
    scratch_database,
)
from tests.tcp_proxy import silent_server, tcp_proxy

#: A test body not done after this many seconds is hung.
HANG_S = 60
#: The bound the tests set (short: the tests wait it out).
TIMEOUT_S = 0.5


def _at(url: URL | str, port: int) -> str:
    """`url` pointed at a loopback port."""
    return (
        make_url(str(url) if isinstance(url, URL) else url)
        .set(host="127.0.0.1", port=port)
        .render_as_string(hide_password=False)
    )


def _names_the_wait(port: int) -> str:
    return re.escape(
        f"timed out after {TIMEOUT_S:g} s connecting to 127.0.0.1:{port} (option `connect_timeout`)"
    )


@pytest.mark.parametrize("backend", backend_params(SERVER_BACKENDS))
async def test_a_server_that_never_answers_fails_start_up_naming_time_and_server(
    backend: Backend,
) -> None:
    server = backend.server_url.render_as_string(hide_password=False)
    async with silent_server() as port:
        storage = Provider(url=_at(server, port), connect_timeout=TIMEOUT_S, **backend.options)
        try:
            with pytest.raises(TimeoutError, match=_names_the_wait(port)):
                await asyncio.wait_for(storage.initialize(), HANG_S)
        finally:
            await storage.close()


@pytest.mark.parametrize("backend", backend_params([POSTGRES, MYSQL]))
async def test_the_urls_connect_timeout_bounds_the_connect_as_the_option_does(
    backend: Backend,
) -> None:
    server = backend.server_url.render_as_string(hide_password=False)
    async with silent_server() as port:
        url = make_url(_at(server, port)).update_query_dict({"connect_timeout": str(TIMEOUT_S)})
        storage = Provider(url=url.render_as_string(hide_password=False), **backend.options)
        try:
            with pytest.raises(TimeoutError, match=_names_the_wait(port)):
                await asyncio.wait_for(storage.initialize(), HANG_S)
        finally:
            await storage.close()


@pytest.mark.parametrize("backend", backend_params(SERVER_BACKENDS))
async def test_a_connection_opened_after_the_server_fell_silent_fails_then_recovers(
    backend: Backend,
) -> None:
    async with scratch_database(backend) as database:
        real = make_url(database)
        assert real.host is not None and real.port is not None
        async with tcp_proxy(real.host, real.port) as proxy:
            storage = Provider(
                url=_at(database, proxy.port), connect_timeout=TIMEOUT_S, **backend.options
            )
            await asyncio.wait_for(storage.initialize(), HANG_S)
            try:
                await storage.set("ns", "before", {"n": 1})
                proxy.silence()
                errors: list[BaseException] = []
                for attempt in range(3):  # the first may meet the connection just cut
                    try:
                        await asyncio.wait_for(storage.set("ns", f"k{attempt}", {"n": 1}), HANG_S)
                    except ConnectionLostError as error:
                        errors.append(error)
                        if re.search(_names_the_wait(proxy.port), str(error)):
                            break
                assert errors and re.search(_names_the_wait(proxy.port), str(errors[-1])), errors
                proxy.resume()
                await asyncio.wait_for(storage.set("ns", "after", {"n": 2}), HANG_S)
                assert await storage.get("ns", "after") == {"n": 2}
            finally:
                await storage.close()


def test_the_default_is_ten_seconds_and_zero_means_no_limit() -> None:
    settings = ProviderSettings.from_options({"url": "postgresql://u@db/agents"})
    assert settings.session_options().connect_timeout == DEFAULT_CONNECT_TIMEOUT_S == 10
    none = ProviderSettings.from_options({"url": "postgresql://u@db/agents?connect_timeout=0"})
    assert none.session_options().connect_timeout == 0


def test_the_url_sets_it_and_a_disagreeing_option_is_refused() -> None:
    url = "mysql://u@db/agents?connect_timeout=3"
    assert ProviderSettings.from_options({"url": url}).connect_timeout == 3
    assert ProviderSettings.from_options({"url": url, "connect_timeout": 3}).connect_timeout == 3
    with pytest.raises(ConfigError, match=r"option 'connect_timeout' \(4\) and the URL's"):
        ProviderSettings.from_options({"url": url, "connect_timeout": 4})


@pytest.mark.parametrize("value", ["x", "nan", "inf", "-inf"])
def test_a_url_connect_timeout_that_is_no_number_of_seconds_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="is not a number of seconds"):
        ProviderSettings.from_options({"url": f"postgresql://u@db/a?connect_timeout={value}"})


def test_sqlite_takes_the_option_though_opening_a_file_has_nothing_to_wait_for() -> None:
    settings = ProviderSettings.from_options({"url": "sqlite:///agents.db", "connect_timeout": 2})
    assert settings.session_options().connect_timeout == 2
