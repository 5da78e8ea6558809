"""The provider's options: one pydantic model, and URL normalisation to async drivers."""

from __future__ import annotations

import os
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from slack_agents_sa.errors import ConfigError

#: Where the embedded default keeps its data: a SQLite file in the working directory.
DEFAULT_URL = "sqlite+aiosqlite:///slack_agents_sa.db"

#: A PostgreSQL schema name we accept: lower case, so it never needs quoting.
SCHEMA_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"

#: Environment variable the CLI tools (alembic, the demo) read the URL from.
URL_ENV_VAR = "SLACK_AGENTS_SA_URL"

# Plain URL schemes and the async driver each gets.
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+asyncmy",
    "mariadb": "mariadb+asyncmy",
}

# The pip extra of ours that brings an optional driver module.
_DRIVER_EXTRAS = {"asyncmy": "mysql", "aiomysql": "aiomysql", "pymysql": "aiomysql"}


def normalize_url(raw: str) -> URL:
    """Parse a database URL and give plain `postgresql://`-style schemes their async driver.

    Raises ValueError naming what is wrong (never echoing a password).
    """
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError(
            "not a database URL; expected e.g. 'sqlite:///agents.db' or 'postgresql://user@host/db'"
        ) from None
    drivername = _ASYNC_DRIVERS.get(url.drivername, url.drivername)
    url = url.set(drivername=drivername)
    shown = url.render_as_string(hide_password=True)
    try:
        dialect_cls = url.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"unknown database or driver {url.drivername!r} in {shown}") from None
    if not dialect_cls.is_async:
        raise ValueError(
            f"driver {url.get_driver_name()!r} in {shown} is synchronous; use an asyncio "
            "driver (sqlite+aiosqlite, postgresql+asyncpg, mysql+asyncmy)"
        )
    try:
        dialect_cls.import_dbapi()
    except ImportError as error:
        driver = url.get_driver_name()
        # The module that failed to import names the package (psycopg_async needs psycopg).
        module = (error.name or driver).partition(".")[0]
        extra = _DRIVER_EXTRAS.get(module)
        hint = f"pip install 'slack_agents_sa[{extra}]'" if extra else f"pip install {module}"
        raise ValueError(f"driver {driver!r} for {shown} is not installed: {hint}") from None
    if dialect_cls.name in ("mysql", "mariadb"):
        # Connections default to the server's character set, which may not hold emoji.
        charset = url.query.get("charset", "utf8mb4")
        if charset != "utf8mb4":
            raise ValueError(f"charset={charset!r} in {shown} cannot hold all Unicode; use utf8mb4")
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


class ProviderSettings(BaseModel):
    """Options accepted under `storage:` in an agent's config.yaml (besides `type`)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, arbitrary_types_allowed=True, populate_by_name=True
    )

    url: URL = Field(default_factory=lambda: normalize_url(DEFAULT_URL))
    #: Bring the schema to head with the bundled Alembic migrations on initialize().
    migrate: bool = True
    #: Log every SQL statement (SQLAlchemy's `echo`).
    echo: bool = False
    pool_size: int | None = Field(default=None, ge=1)
    max_overflow: int | None = Field(default=None, ge=0)
    pool_timeout: float | None = Field(default=None, gt=0)
    pool_recycle: int | None = Field(default=None, ge=-1)
    #: Test each pooled connection before use (one extra round trip per call).
    pool_pre_ping: bool = False
    #: PostgreSQL only: keep our tables (and our version table) in this schema, created if
    #: missing. Lets several agents, or a host app, share one database without sharing tables.
    db_schema: str | None = Field(default=None, alias="schema", pattern=SCHEMA_NAME_PATTERN)

    @model_validator(mode="after")
    def _schema_needs_postgresql(self) -> ProviderSettings:
        if self.db_schema is not None and self.url.get_backend_name() != "postgresql":
            raise ValueError(
                "option 'schema' is supported on PostgreSQL only "
                f"(this URL is {self.url.get_backend_name()})"
            )
        return self

    @field_validator("url", mode="before")
    @classmethod
    def _parse_url(cls, value: Any) -> URL:
        if isinstance(value, URL):
            return value
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a non-empty database URL string")
        return normalize_url(value.strip())

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ProviderSettings:
        """Validate the options, turning pydantic's report into one `ConfigError`."""
        try:
            return cls.model_validate(options)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                name = ".".join(str(part) for part in error["loc"]) or "options"
                if error["type"] == "extra_forbidden":
                    known = ", ".join(cls.model_fields)
                    problems.append(f"unknown option {name!r} (known options: {known})")
                else:
                    message = str(error["msg"]).removeprefix("Value error, ")
                    problems.append(f"option {name!r}: {message}" if error["loc"] else message)
            raise ConfigError("slack_agents_sa storage: " + "; ".join(problems)) from None

    @property
    def is_memory_sqlite(self) -> bool:
        """True for an in-memory SQLite database, which disappears with the process."""
        if self.url.get_backend_name() != "sqlite":
            return False
        database = self.url.database or ""
        return database in ("", ":memory:") or self.url.query.get("mode") == "memory"

    def pool_options(self) -> dict[str, Any]:
        """The pool keyword arguments the user set, for `create_async_engine`."""
        names = ("pool_size", "max_overflow", "pool_timeout", "pool_recycle")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def url_from_environment(explicit: str | None = None) -> str:
    """The URL a command-line tool should use: explicit, else the env variable, else default."""
    return explicit or os.environ.get(URL_ENV_VAR) or DEFAULT_URL
