"""Options: validated once, with one clear error naming the option, before any connection."""

from __future__ import annotations

import pytest

from slack_agents_sa import ConfigError, Provider
from slack_agents_sa.settings import DEFAULT_URL, ProviderSettings


def test_default_is_a_sqlite_file_in_the_working_directory() -> None:
    settings = ProviderSettings.from_options({})
    assert settings.url.render_as_string() == DEFAULT_URL
    assert settings.migrate is True
    assert not settings.is_memory_sqlite


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/agents", "postgresql+asyncpg://u:***@db:5432/agents"),
        ("postgres://u@db/agents", "postgresql+asyncpg://u@db/agents"),
        ("sqlite:///agents.db", "sqlite+aiosqlite:///agents.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql+asyncpg://u@db/agents", "postgresql+asyncpg://u@db/agents"),
    ],
)
def test_plain_urls_get_their_async_driver(given: str, expected: str) -> None:
    url = ProviderSettings.from_options({"url": given}).url
    assert url.render_as_string(hide_password=True) == expected


@pytest.mark.parametrize("scheme", ["mysql", "mariadb", "mysql+asyncmy"])
def test_mysql_connections_are_utf8mb4_and_no_other_charset_is_taken(scheme: str) -> None:
    url = ProviderSettings.from_options({"url": f"{scheme}://u:secret@db/agents"}).url
    assert url.query["charset"] == "utf8mb4"
    with pytest.raises(ConfigError, match="charset='latin1' cannot hold all Unicode") as caught:
        ProviderSettings.from_options({"url": f"{scheme}://u:secret@db/agents?charset=latin1"})
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"])
def test_in_memory_sqlite_is_recognised(url: str) -> None:
    assert ProviderSettings.from_options({"url": url}).is_memory_sqlite


def test_unknown_option_is_named() -> None:
    known = r"unknown option 'pool_szie'.*known options: url,"
    with pytest.raises(ConfigError, match=known) as caught:
        Provider(url="sqlite://", pool_szie=5)
    # Each option as config.yaml spells it: `schema`, not the attribute's name.
    listed = str(caught.value).split("known options: ")[1].rstrip(")").split(", ")
    assert "schema" in listed and "db_schema" not in listed


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "option 'url': not a database URL"),
        ("", "option 'url': must be a non-empty database URL"),
        ("nosuchdb://x/y", "unknown database or driver 'nosuchdb'"),
        ("postgresql+psycopg2://u@h/d", "driver 'psycopg2' .* is synchronous"),
        (
            "postgresql+psycopg_async://u@h/d",
            "driver 'psycopg_async' .* not installed: pip install psycopg$",
        ),
        ("postgresql://u:p@ss@h/d", "percent-encode an '@' in the password .* as %40$"),
        ("postgresql://u@h:54x/d", "the port in the database URL is not a number"),
    ],
)
def test_bad_urls_give_one_clear_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Provider(url=url)


def test_password_never_appears_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        Provider(url="postgresql+psycopg2://user:hunter2@host/db")
    assert "hunter2" not in str(caught.value)


def test_option_values_are_validated_and_strings_coerced() -> None:
    # The host fills {ENV} placeholders in as strings.
    settings = ProviderSettings.from_options(
        {"url": "sqlite://", "migrate": "false", "pool_size": "3"}
    )
    assert settings.migrate is False and settings.pool_size == 3
    with pytest.raises(ConfigError, match="option 'pool_size'"):
        Provider(url="sqlite://", pool_size=0)
    with pytest.raises(ConfigError, match="option 'echo'"):
        Provider(url="sqlite://", echo="loud")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    "schema", ["tenant\n", "Tenant", "1tenant", "ten-ant", "", "a" * 64, "tenant; DROP"]
)
def test_schema_option_takes_lower_case_names_only(schema: str) -> None:
    with pytest.raises(ConfigError, match="option 'schema'"):
        Provider(url="postgresql://u@h/db", schema=schema)
    assert Provider(url="postgresql://u@h/db", schema="a" * 63).settings.db_schema == "a" * 63
