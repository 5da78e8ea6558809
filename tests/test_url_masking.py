"""A URL's secrets never leave the process: not in logs, reprs, errors or the CLI's output.

Every URL below carries the secret "Hunter@2Tango" (or "Hunter2Tango") in one of the places a
credential can sit; each test asserts that neither "Hunter" nor "Tango" is shown.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from slack_agents_sa import ConfigError, Provider, cli
from slack_agents_sa.settings import ProviderSettings, normalize_url, safe_url

FRAGMENTS = ("Hunter", "Tango")
UNREACHABLE = "127.0.0.1:9"  # nothing listens on the discard port

#: (id, URL, what safe_url shows): each credential-bearing form, on an unreachable server.
FORMS = [
    (
        "user-password",
        f"postgresql://u:Hunter2Tango@{UNREACHABLE}/x",
        f"postgresql://u:***@{UNREACHABLE}/x",
    ),
    (
        "percent-encoded-at",
        f"postgresql://u:Hunter%402Tango@{UNREACHABLE}/x",
        f"postgresql://u:***@{UNREACHABLE}/x",
    ),
    (
        "query-password",
        f"postgresql://u@{UNREACHABLE}/x?password=Hunter2Tango&application_name=a+b",
        f"postgresql://u@{UNREACHABLE}/x?password=***&application_name=a+b",
    ),
    (
        # MySQL: asyncpg takes no `PASSWORD` (refused when the URL is read, still masked).
        "query-upper-case",
        f"mysql://u@{UNREACHABLE}/x?PASSWORD=Hunter%402Tango",
        f"mysql://u@{UNREACHABLE}/x?PASSWORD=***",
    ),
    (
        "query-sslpassword",
        f"postgresql://u@{UNREACHABLE}/x?sslpassword=Hunter2Tango",
        f"postgresql://u@{UNREACHABLE}/x?sslpassword=***",
    ),
    (
        "query-token",
        f"mysql://u@{UNREACHABLE}/x?token=Hunter2Tango",
        f"mysql://u@{UNREACHABLE}/x?token=***",
    ),
    (
        "unescaped-at",
        f"postgresql://u:Hunter@2Tango@{UNREACHABLE}/x",
        "postgresql://u:***@***",
    ),
    (
        "unescaped-at-and-slash",
        f"postgresql://u:Hunter@2/Tango@{UNREACHABLE}/x",
        "postgresql://u:***@***",
    ),
]
URLS = [pytest.param(url, id=name) for name, url, _ in FORMS]
# The forms normalize_url accepts (it refuses an unescaped '@').
ACCEPTED = [pytest.param(url, id=name) for name, url, _ in FORMS if "unescaped" not in name]
# What the CLI's `check` exits with on each form.
EXIT_CODES = [
    pytest.param(url, cli.EXIT_USAGE if "unescaped" in name else cli.EXIT_UNREACHABLE, id=name)
    for name, url, _ in FORMS
]


def assert_hidden(text: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text, text


@pytest.mark.parametrize(("url", "shown"), [pytest.param(u, s, id=n) for n, u, s in FORMS])
def test_safe_url_masks_every_credential(url: str, shown: str) -> None:
    assert safe_url(url) == shown
    assert_hidden(safe_url(make_url(url)))


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "passwd",
        "pwd",
        "sslpassword",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "ApiKey",
        "credentials",
    ],
)
def test_credential_query_parameters_are_masked_whatever_their_case(name: str) -> None:
    assert safe_url(f"postgresql://h/d?{name}=Hunter2Tango&x=1") == (
        f"postgresql://h/d?{name}=***&x=1"
    )


@pytest.mark.parametrize("url", ACCEPTED)
def test_settings_repr_and_str_show_the_masked_url(url: str) -> None:
    settings = ProviderSettings.from_options({"url": url})
    assert safe_url(settings.url) in repr(settings)
    assert "url='" in str(settings)
    assert_hidden(repr(settings))
    assert_hidden(str(settings))


def test_a_url_object_with_an_unescaped_at_is_masked_in_the_settings_repr() -> None:
    # A URL object is taken as given; SQLAlchemy read "2Tango@127.0.0.1" as its host.
    settings = ProviderSettings(url=make_url(f"postgresql://u:Hunter@2Tango@{UNREACHABLE}/x"))
    assert_hidden(repr(settings))
    assert_hidden(str(settings))


@pytest.mark.parametrize("url", URLS)
def test_config_errors_never_show_the_secret(url: str) -> None:
    with pytest.raises(ConfigError, match="option 'pool_size'") as caught:
        Provider(url=url, pool_size=0)
    assert_hidden(str(caught.value))
    synchronous = url.replace("://", "+pymysql://" if url.startswith("mysql") else "+psycopg2://")
    with pytest.raises(ConfigError) as caught:
        Provider(url=synchronous)
    assert_hidden(str(caught.value))
    with pytest.raises(ConfigError) as caught:
        Provider(url=url.replace(url.partition(":")[0], "nosuchdb", 1))
    assert_hidden(str(caught.value))


def test_pydantic_errors_do_not_quote_the_url() -> None:
    with pytest.raises(ValidationError) as caught:
        ProviderSettings(url="postgresql+psycopg2://u:Hunter2Tango@h/d", pool_size=0)
    assert_hidden(str(caught.value))


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:Hunter@2Tango@{UNREACHABLE}/x",
        f"postgresql://u:Hunter@2:Tango@{UNREACHABLE}/x",  # tail read as a port
        f"postgresql://u:Hunter@2/Tango@{UNREACHABLE}/x",  # tail read as a database
        f"postgresql://u:Hunter@2?Tango@{UNREACHABLE}/x",  # tail read as a query
        f"postgresql://u:Hunter2@{UNREACHABLE}/x?application_name=a@b",
    ],
)
def test_an_unescaped_at_after_the_password_is_refused_with_the_fix(url: str) -> None:
    with pytest.raises(ValueError, match=r"percent-encode an '@' .* as %40") as caught:
        normalize_url(url)
    assert_hidden(str(caught.value))


def test_a_port_that_is_not_a_number_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="port in the database URL is not a number") as caught:
        normalize_url("postgresql://u:Hunter@h:2Tango/x")
    assert_hidden(str(caught.value))


@pytest.mark.parametrize(("url", "code"), EXIT_CODES)
def test_cli_output_never_shows_the_secret(
    url: str, code: int, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert cli.main(["--url", url, "check"]) == code
    out, err = capsys.readouterr()
    if code == cli.EXIT_UNREACHABLE:
        assert f"cannot connect to {safe_url(normalize_url(url))}" in err
    else:
        assert "as %40" in err
    assert_hidden(out + err + caplog.text)


def test_the_console_script_hides_a_query_password() -> None:
    script = Path(sys.executable).with_name("slack-agents-sa")
    url = f"postgresql://u:Hunter%402Tango@{UNREACHABLE}/x?password=Hunter2Tango"
    result = subprocess.run(
        [str(script), "--url", url, "check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == cli.EXIT_UNREACHABLE, result.stderr
    assert "password=***" in result.stderr
    assert_hidden(result.stdout + result.stderr)


def test_alembic_logs_the_masked_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}?password=Hunter2Tango"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("alembic")), "-x", f"url={url}", "upgrade", "head"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Database: sqlite+aiosqlite:///" in result.stderr
    assert "password=***" in result.stderr
    assert_hidden(result.stdout + result.stderr)


# SQLite ignores (with this warning) query parameters it has no use for: fine here.
@pytest.mark.filterwarnings("ignore:Query string argument")
async def test_the_start_up_log_line_hides_a_query_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="slack_agents_sa")
    storage = Provider(url=f"sqlite:///{tmp_path / 'x.db'}?password=Hunter2Tango")
    await storage.initialize()
    await storage.close()
    assert "storage ready (sqlite+aiosqlite:///" in caplog.text
    assert "password=***" in caplog.text
    assert_hidden(caplog.text)
