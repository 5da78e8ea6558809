"""The provider's options: one pydantic model, URL normalisation to async drivers, safe_url."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import quote_plus

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from slack_agents_sa.backends import SessionOptions, async_drivername, backend_for
from slack_agents_sa.backends.connect import DEFAULT_CONNECT_TIMEOUT_S, connect_timeout_in_url
from slack_agents_sa.errors import ConfigError
from slack_agents_sa.secretbox import SecretBox, split_keys

#: Where the embedded default keeps its data: a SQLite file in the working directory.
DEFAULT_URL = "sqlite+aiosqlite:///slack_agents_sa.db"

#: A PostgreSQL schema name we accept: lower case, so it never needs quoting, and not `pg_...`
#: (PostgreSQL reserves those). `\Z`, not `$`:
#: `$` also matches before a trailing newline, which would let "tenant\n" through.
SCHEMA_NAME = re.compile(r"\A(?!pg_)[a-z_][a-z0-9_]{0,62}\Z")

#: Environment variable the CLI tools (alembic, the demo) read the URL from.
URL_ENV_VAR = "SLACK_AGENTS_SA_URL"

# The pip extra of ours that brings an optional driver module.
_DRIVER_EXTRAS = {"asyncmy": "mysql", "aiomysql": "aiomysql", "pymysql": "aiomysql"}

# Query parameters whose values are credentials (password=, sslpassword=, token=, api_key=, ...).
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|api_?key|credential", re.IGNORECASE)

# Characters of a query value shown as they are (host lists, file paths).
_SHOWN_AS_IS = ":/[],"

# `user:password@rest` as SQLAlchemy splits a URL: the password ends at the first '@', so
# an '@' in `rest` means a password with an unescaped '@', whose tail SQLAlchemy would read
# as the host (or port, or database) and show.
_PASSWORD_AND_REST = re.compile(r"(?P<user>[^:/]*):[^@]*@(?P<rest>.*)", re.DOTALL)


def _stray_at(text: str) -> re.Match[str] | None:
    """`_PASSWORD_AND_REST` of a URL whose password is followed by another '@', else None."""
    found = _PASSWORD_AND_REST.match(text.partition("://")[2])
    return found if found is not None and "@" in found["rest"] else None


def safe_url(url: URL | str) -> str:
    """`url` as text fit for a log or an error: password and credential parameters as `***`.

    Past a password with an unescaped '@' (which `normalize_url` refuses) only the scheme and
    user name are shown: where the password ends cannot be told.
    """
    if isinstance(url, str):
        scheme, has_scheme, _ = url.partition("://")
        if stray := _stray_at(url):
            return f"{scheme}://{stray['user']}:***@***"
        try:
            url = make_url(_as_sqlalchemy_parses(url))
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            return f"{scheme}://***" if has_scheme else "***"
    elif url.password is not None and "@" in f"{url.host or ''}{url.database or ''}":
        # make_url() of such text: the password's tail is now in the host or the database.
        return f"{url.drivername}://{url.username}:***@***"
    # Rendered by hand: SQLAlchemy would percent-encode the `***` of a masked value.
    shown = url.set(query={}).render_as_string(hide_password=True)
    parameters = [
        f"{quote_plus(name)}="
        f"{'***' if _SECRET_PARAMETER.search(name) else quote_plus(value, safe=_SHOWN_AS_IS)}"
        for name, values in url.query.items()
        for value in ((values,) if isinstance(values, str) else values)
    ]
    return f"{shown}?{'&'.join(parameters)}" if parameters else shown


def normalize_url(raw: str) -> URL:
    """Parse a database URL and give plain `postgresql://`-style schemes their async driver.

    Raises ValueError naming what is wrong (never echoing a password).
    """
    if _stray_at(raw):
        raise ValueError(
            "the database URL has an '@' after the one that ends its password: "
            "percent-encode an '@' in the password (or anywhere after it) as %40"
        )
    raw = _as_sqlalchemy_parses(raw)
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError(
            "not a database URL; expected e.g. 'sqlite:///agents.db' or 'postgresql://user@host/db'"
        ) from None
    except ValueError:  # SQLAlchemy's int() of the port, whose message would echo it
        raise ValueError("the port in the database URL is not a number") from None
    url = url.set(drivername=async_drivername(url.drivername))
    shown = safe_url(url)
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
    try:
        connect_timeout_in_url(url)
        return backend_for(url).checked_url(url)
    except ValueError as error:
        raise ValueError(f"{error} (in {shown})") from None


def _as_sqlalchemy_parses(raw: str) -> str:
    """`raw` in a form `make_url` reads (libpq's `h1,h2` host list on PostgreSQL)."""
    scheme, has_scheme, _ = raw.partition("://")
    if not has_scheme:
        return raw
    return backend_for(async_drivername(scheme).partition("+")[0]).url_text(raw)


def check_schema(url: URL, schema: str) -> None:
    """ValueError (to follow the option's name) unless `schema` suits the `schema` option."""
    if not SCHEMA_NAME.match(schema):
        raise ValueError(
            "must be a lower-case PostgreSQL schema name: a-z, 0-9 and _, "
            "at most 63 characters, not starting with a digit or pg_"
        )
    if not backend_for(url).supports_schema:
        raise ValueError(f"is supported on PostgreSQL only (this URL is {url.get_backend_name()})")


class ProviderSettings(BaseModel):
    """Options accepted under `storage:` in an agent's config.yaml (besides `type`)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        arbitrary_types_allowed=True,
        populate_by_name=True,
        # pydantic's own error text would quote the input: the URL, password and all.
        hide_input_in_errors=True,
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
    #: How calls reach the database: "native" (compiled statements run on the driver: asyncpg
    #: or asyncmy lanes, a SQLite worker thread) or "sqlalchemy" (SQLAlchemy's execution
    #: path). None: native wherever this database has a native executor.
    executor: Literal["native", "sqlalchemy"] | None = None
    #: PostgreSQL only: keep our tables (and our version table) in this schema, created if
    #: missing. Lets several agents, or a host app, share one database without sharing tables.
    db_schema: str | None = Field(default=None, alias="schema", pattern=SCHEMA_NAME)
    #: PostgreSQL (asyncpg) behind PgBouncer in transaction pooling: keep no state on a
    #: connection that must outlive a transaction. Adds `statement_cache_size=0` and
    #: `prepared_statement_cache_size=0` to the URL (unnamed statements only), and `schema`
    #: then qualifies names (`schema_translate_map`) instead of setting a search_path when
    #: connecting. Not detected: say it (docs/configuration.md, "PgBouncer").
    pgbouncer: bool = False
    #: PostgreSQL only: the text search configuration `search_history` searches with. The
    #: index migration 0007 builds is for 'simple'; another needs that index rebuilt for it
    #: (docs/search.md). A name, spelled into the SQL: the planner matches it to the index.
    search_language: str = Field(default="simple", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    #: Seconds one statement may run before the database stops it with
    #: `StatementTimeoutError` (PostgreSQL `statement_timeout`, MariaDB `max_statement_time`,
    #: MySQL `MAX_EXECUTION_TIME` for SELECTs, SQLite's progress handler). None: no limit.
    #: Migrations are exempt.
    statement_timeout: float | None = Field(default=None, gt=0)
    #: Seconds one statement may wait for a lock another session holds before
    #: `LockTimeoutError` (PostgreSQL `lock_timeout`, InnoDB `innodb_lock_wait_timeout` in
    #: whole seconds, SQLite's busy timeout). None: the database's default (SQLite: 30 s).
    lock_timeout: float | None = Field(default=None, gt=0)
    #: Seconds opening a connection may take (TCP, TLS, authentication, every host of a
    #: multi-host URL together) before `ConnectionLostError` names the server. 0: no limit.
    #: The URL's `connect_timeout` says the same; set it in one place.
    connect_timeout: float = Field(default=DEFAULT_CONNECT_TIMEOUT_S, ge=0)
    #: MySQL/MariaDB on a multi-primary Galera cluster: every read sees every write the
    #: cluster committed before it (`wsrep_sync_wait = 1`), so a replica behind a load
    #: balancer never reads a thread without its last turn. None: on wherever the server
    #: reports `wsrep_on`; false: off (reads may lag other nodes). Elsewhere: no effect.
    read_your_writes: bool | None = None
    #: Fernet keys (a list, or one comma-separated string) that encrypt the OAuth secrets we
    #: store: the first encrypts, all decrypt (see `secretbox.py`). None: stored as given.
    encryption_keys: tuple[SecretStr, ...] | None = None
    _secrets: SecretBox | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _schema_needs_postgresql(self) -> ProviderSettings:
        if self.db_schema is not None:
            try:
                check_schema(self.url, self.db_schema)
            except ValueError as error:
                raise ValueError(f"option 'schema' {error}") from None
        return self

    @model_validator(mode="after")
    def _no_session_state_behind_pgbouncer(self) -> ProviderSettings:
        if self.pgbouncer:
            try:
                url = backend_for(self.url).pgbouncer_url(self.url)
            except ValueError as error:
                raise ValueError(f"option 'pgbouncer' {error}") from None
            # Frozen model: the URL every engine of this provider is made from, set once here.
            object.__setattr__(self, "url", url)
        return self

    @model_validator(mode="after")
    def _one_connect_timeout(self) -> ProviderSettings:
        in_url = connect_timeout_in_url(self.url)
        if in_url is None:
            return self
        if "connect_timeout" in self.model_fields_set and in_url != self.connect_timeout:
            raise ValueError(
                f"option 'connect_timeout' ({self.connect_timeout:g}) and the URL's "
                f"connect_timeout ({in_url:g}) disagree: set it in one place"
            )
        object.__setattr__(self, "connect_timeout", in_url)
        return self

    @model_validator(mode="after")
    def _session_options_supported(self) -> ProviderSettings:
        try:
            backend_for(self.url).check_session_options(self.url, self.session_options())
        except ValueError as error:
            raise ValueError(str(error)) from None
        return self

    @model_validator(mode="after")
    def _native_executor_exists(self) -> ProviderSettings:
        if self.executor == "native" and not backend_for(self.url).has_native_executor(self.url):
            raise ValueError(
                f"option 'executor': no native executor for {self.url.drivername}"
                + (" in memory" if self.is_memory_sqlite else "")
                + " (native: postgresql+asyncpg, a SQLite file, mysql/mariadb+asyncmy); "
                "leave it unset or say 'sqlalchemy'"
            )
        return self

    @field_validator("encryption_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        return split_keys(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _open_keys(self) -> ProviderSettings:
        if self.encryption_keys is not None:
            try:
                keys = [key.get_secret_value() for key in self.encryption_keys]
                self._secrets = SecretBox(keys)
            except ValueError as error:
                raise ValueError(f"option 'encryption_keys': {error}") from None
        return self

    @property
    def secrets(self) -> SecretBox | None:
        """What seals and opens the OAuth secrets; None without `encryption_keys`."""
        return self._secrets

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # repr() and str() of the settings show the URL as `safe_url` does.
        for name, value in super().__repr_args__():
            yield name, safe_url(value) if name == "url" else value

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
                    known = ", ".join(
                        field.alias or name for name, field in cls.model_fields.items()
                    )
                    problems.append(f"unknown option {name!r} (known options: {known})")
                else:
                    message = str(error["msg"]).removeprefix("Value error, ")
                    problems.append(f"option {name!r}: {message}" if error["loc"] else message)
            raise ConfigError("slack_agents_sa storage: " + "; ".join(problems)) from None

    @property
    def is_memory_sqlite(self) -> bool:
        """True for an in-memory SQLite database, which disappears with the process."""
        return backend_for(self.url).is_memory(self.url)

    def session_options(self) -> SessionOptions:
        """What shapes every connection's session (schema, PgBouncer, timeouts)."""
        return SessionOptions(
            schema=self.db_schema,
            pgbouncer=self.pgbouncer,
            statement_timeout=self.statement_timeout,
            lock_timeout=self.lock_timeout,
            connect_timeout=self.connect_timeout,
            read_your_writes=self.read_your_writes,
        )

    def pool_options(self) -> dict[str, Any]:
        """The pool keyword arguments the user set, for `create_async_engine`."""
        names = ("pool_size", "max_overflow", "pool_timeout", "pool_recycle")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def url_from_environment(explicit: str | None = None) -> str:
    """The URL a command-line tool should use: explicit, else the env variable, else default."""
    return explicit or os.environ.get(URL_ENV_VAR) or DEFAULT_URL
