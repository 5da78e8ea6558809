"""libpq's URL forms on asyncpg: a comma list of hosts, and `sslmode` and its kin.

Hosted PostgreSQL hands out libpq URLs (`?sslmode=require`, `h1:5432,h2:5432`).
SQLAlchemy's asyncpg dialect passes every query option to `asyncpg.connect()` as a keyword,
and asyncpg takes the TLS options only inside a DSN, where it reads them as libpq does
(`verify-full` checks the host name, `sslrootcert` names the CA file, and so on). So those
options leave the URL the dialect sees and travel in a DSN of their own (`dsn_options`);
host, user and the rest stay keywords, which asyncpg prefers over the DSN's.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
from sqlalchemy.engine import URL

from slack_agents_sa.backends.connect import URL_KEY as CONNECT_TIMEOUT

#: libpq's options asyncpg reads from a DSN only. `application_name` (like any option
#: asyncpg does not know) becomes a server setting.
DSN_OPTIONS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "application_name",
)
#: The values libpq gives `sslmode`.
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: The values asyncpg gives `target_session_attrs` (libpq's, and `prefer-standby`).
SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
#: Files an option names; `sslrootcert=system` is libpq's "the system's CA store".
_FILE_OPTIONS = ("sslrootcert", "sslcert", "sslkey", "sslcrl")
#: Query options SQLAlchemy's asyncpg dialect takes for itself.
_DIALECT_OPTIONS = ("prepared_statement_cache_size", "prepared_statement_name_func")
#: asyncpg's connect arguments a URL's text cannot give (`timeout`: see `connect_timeout`).
_NOT_FROM_A_URL = {"dsn", "connection_class", "loop", "record_class", "server_settings", "timeout"}


def check_options(url: URL) -> None:
    """ValueError naming a query option asyncpg would refuse at connect, or a bad value."""
    known = set(inspect.signature(asyncpg.connect).parameters) - _NOT_FROM_A_URL
    known.update(DSN_OPTIONS, _DIALECT_OPTIONS, ("target_session_attrs", CONNECT_TIMEOUT))
    unknown = sorted(set(url.query) - known)
    if unknown:
        raise ValueError(
            f"unknown URL option(s) {', '.join(unknown)} for asyncpg; of libpq's it takes "
            f"{', '.join(DSN_OPTIONS)}, target_session_attrs and {CONNECT_TIMEOUT}"
        )
    for name, value in url.query.items():
        if not isinstance(value, str) and name != "host" and name != "port":
            raise ValueError(f"URL option {name} is given more than once")
    _check_choice(url, "sslmode", SSL_MODES)
    _check_choice(url, "target_session_attrs", SESSION_ATTRS)
    for name in _FILE_OPTIONS:
        path = url.query.get(name)
        if not isinstance(path, str) or (name == "sslrootcert" and path == "system"):
            continue
        if not Path(path).expanduser().is_file():
            raise ValueError(f"{name}: no file {path!r}")


def _check_choice(url: URL, name: str, choices: tuple[str, ...]) -> None:
    value = url.query.get(name)
    if value is not None and value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}")


def dsn_options(url: URL) -> str | None:
    """A DSN holding only the URL's `DSN_OPTIONS` (for asyncpg's `dsn`), or None."""
    options = [(name, str(url.query[name])) for name in DSN_OPTIONS if name in url.query]
    return f"postgresql://?{urlencode(options)}" if options else None


def without_dsn_options(url: URL) -> URL:
    """`url` less what `dsn_options` carries."""
    return url.difference_update_query(DSN_OPTIONS)
