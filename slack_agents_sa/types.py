"""Portable column types: the only column types that differ per dialect."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic_core import from_json
from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Double, Integer, String, Text
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeDecorator, TypeEngine

# What `json.dumps` with these options runs, built once: dumps builds an encoder per call
# (6.4 -> 2.7 us for a small document).
_dump_unicode = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode
_dump_ascii = json.JSONEncoder(allow_nan=False, ensure_ascii=True, separators=(",", ":")).encode
#: Lone surrogates: valid in a Python str, not encodable as UTF-8.
SURROGATES = re.compile("[\ud800-\udfff]")


def load_json(text: str | bytes) -> Any:
    """The value of a JSON document, as `json.loads` gives it.

    pydantic-core's parser first (a 20-message history decodes in a quarter of the time);
    what it refuses, a lone surrogate escape (`dump_json` writes them) or deep nesting,
    `json.loads` reads, as it reads everything `dump_json` writes.
    """
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)


def load_json_utf8(data: bytes) -> Any:
    """`load_json(data.decode())`, without the str copy on the usual path: pydantic-core
    parses UTF-8 bytes as they are (PostgreSQL's `json` codec hands over bytes)."""
    try:
        return from_json(data)
    except ValueError:
        return json.loads(data.decode())


def dump_json(value: Any) -> str:
    """JSON text for the database; NaN and Infinity raise ValueError instead of being written.

    Unicode is written as itself, except when a string holds a lone surrogate, which no
    database can store as UTF-8: then the document is written with \\u escapes, which
    every dialect keeps and reads back to the same string. NUL is always escaped by json.
    """
    text = _dump_unicode(value)
    if not text.isascii() and SURROGATES.search(text):
        return _dump_ascii(value)
    return text


_MYSQL_NAMES = ("mysql", "mariadb")


class _JSONText(TypeDecorator[Any]):
    """JSON kept as the exact text we wrote, in LONGTEXT (MySQL/MariaDB).

    MySQL's native JSON type reorders object keys and turns integers beyond 64 bits
    into doubles; text keeps every value as written, as SQLite and PostgreSQL's `json` do.
    """

    impl = mysql.LONGTEXT
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else dump_json(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else load_json(value)


#: JSON documents, stored as the text we wrote on every dialect: `json` (not `jsonb`) on
#: PostgreSQL, because jsonb reorders keys and reads 1e16 back as the int 10**16;
#: TEXT-backed JSON on SQLite; LONGTEXT on MySQL/MariaDB (see `_JSONText`).
PortableJSON: TypeEngine[Any] = JSON(none_as_null=True).with_variant(_JSONText(), *_MYSQL_NAMES)

#: Table options on MySQL/MariaDB: utf8mb4 so any Unicode (emoji included) fits, whatever
#: the server's default character set; a binary collation so text compares exactly.
MYSQL_TABLE_OPTIONS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


class _Utf8Bytes(TypeDecorator[str]):
    """str stored as UTF-8 in VARBINARY: MySQL's only portable exact, no-pad comparison.

    MySQL and MariaDB's utf8mb4 collations either fold case or pad with spaces (so 'a',
    'A' and 'a ' can collide in a unique key), and their exact no-pad collations have a
    different name on each server. Bytes compare exactly on both.
    """

    impl = mysql.VARBINARY
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return None if value is None else value.encode("utf-8")

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else bytes(value).decode("utf-8")


def exact_string(length: int) -> TypeEngine[str]:
    """A string of at most `length` characters that compares exactly (case, trailing spaces).

    VARCHAR everywhere; on MySQL/MariaDB VARBINARY of `length` * 4 bytes (utf8mb4's widest).
    """
    return String(length).with_variant(_Utf8Bytes(length * 4), *_MYSQL_NAMES)


#: Long text: TEXT everywhere, LONGTEXT on MySQL so multi-megabyte payloads fit.
LongText: TypeEngine[str] = Text().with_variant(mysql.LONGTEXT(), *_MYSQL_NAMES)

#: A float that round-trips exactly (DOUBLE everywhere; MySQL's FLOAT would be single precision).
ExactFloat: TypeEngine[float] = Double()

#: Surrogate keys: BIGINT, but INTEGER on SQLite where only INTEGER PRIMARY KEY autoincrements.
BigID: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the default of every `created_at`)."""
    return datetime.now(UTC)


@functools.cache
def _sqlite_datetime() -> type[TypeEngine[datetime]]:
    """SQLite's DATETIME in SQLAlchemy's default text, written by `datetime.isoformat`:
    the same text at half the cost of SQLAlchemy's format string (a write binds one or two
    timestamps). Anything but a plain datetime takes SQLAlchemy's own processor. Made on
    first use, so that an agent on another database never imports SQLite's dialect."""
    from sqlalchemy.dialects import sqlite

    default_format = sqlite.DATETIME._storage_format

    class SQLiteDateTime(sqlite.DATETIME):
        cache_ok = True

        def bind_processor(self, dialect: Dialect) -> Callable[[Any], str | None] | None:
            theirs = super().bind_processor(dialect)
            if theirs is None or self._storage_format != default_format:
                return theirs  # pragma: no cover - we never set another format

            def process(value: Any) -> str | None:
                if type(value) is datetime:
                    return value.isoformat(" ", "microseconds")
                return theirs(value)  # type: ignore[no-any-return]

            return process

    return SQLiteDateTime


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC that comes back aware on every dialect.

    SQLite and MySQL have no time zone in their column types, so values are
    normalised to UTC on the way in and marked UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in _MYSQL_NAMES:
            # Microsecond precision; MySQL's DATETIME keeps whole seconds by default.
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_sqlite_datetime()(timezone=True))  # type: ignore[call-arg]
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        if dialect.name == "postgresql":
            return value
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
