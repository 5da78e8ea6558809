"""Argument checks run before anything is written, so bad input fails with a clear message."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from slack_agents_sa.types import SURROGATES

# How str() writes an int of at most 19 digits; re's [0-9], unlike \d and str.isdigit,
# is ASCII only.
_ID_TEXT = re.compile(r"0|-?[1-9][0-9]{0,18}")
# Ids are BIGINT columns; a larger int would fail in the driver (OverflowError on SQLite).
_ID_MIN, _ID_MAX = -(2**63), 2**63 - 1


def check_text(
    name: str, value: Any, max_length: int | None = None, *, in_json: bool = False
) -> str:
    """`value` as a str no longer than `max_length`, or TypeError/ValueError naming `name`.

    Strings bound for text columns must also be storable on every dialect: no NUL
    (PostgreSQL's text cannot hold it) and no lone surrogates (not encodable as UTF-8).
    Strings stored inside JSON (`in_json`) keep both, escaped (see `types.dump_json`).
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"{name} is {len(value)} characters long; the limit is {max_length}")
    if not in_json and not storable_text(value):
        if "\x00" in value:
            raise ValueError(
                f"{name} contains a NUL character (\\x00), which PostgreSQL cannot store "
                "in text; it is refused on every database"
            )
        if not value.isascii() and (match := SURROGATES.search(value)):
            raise ValueError(
                f"{name} contains a lone surrogate ({match.group()!a}), which is not "
                "valid Unicode text"
            )
    return value


def storable_text(value: str) -> bool:
    """Whether a str can be bound to a text column on every dialect (no NUL, no surrogate)."""
    return "\x00" not in value and (value.isascii() or not SURROGATES.search(value))


def check_optional_text(name: str, value: Any, max_length: int | None = None) -> str | None:
    return None if value is None else check_text(name, value, max_length)


def check_dict(name: str, value: Any) -> dict[str, Any]:
    """`value` if it is a dict (a JSON object), else TypeError naming `name`."""
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
    return value


def to_id(name: str, value: Any) -> int:
    """A row id given as an int or a decimal str (the host passes both), else an error naming it.

    A str must be written as `str(int)` writes it: an optional "-" and ASCII digits (no "+",
    no spaces, no leading zeros, no other scripts' digits); the id must fit in 64 bits.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a str of digits, got bool")
    if isinstance(value, str):
        # At most 19 digits: int() of 4,301 or more would fail with its own message.
        if not _ID_TEXT.fullmatch(value):
            raise ValueError(f"{name} must be an integer id as str(int) writes it: -?[0-9]+")
        value = int(value)
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int or a str of digits, got {type(value).__name__}")
    if not _ID_MIN <= value <= _ID_MAX:
        raise ValueError(f"{name} is outside the range of a 64-bit id")
    return value


def to_optional_id(name: str, value: Any) -> int | None:
    """Like `to_id`, but None (and the host's falsy "no link" values) mean no id."""
    if value is None or value == "" or value == 0:
        return None
    return to_id(name, value)


def check_batch_size(batch_size: int) -> int:
    """`batch_size` of a long job, or ValueError unless it is an int of at least 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError("batch_size must be an int of at least 1")
    return batch_size


def check_aware_datetime(name: str, value: Any) -> datetime:
    """`value` as a cut-off in time: a datetime that says its zone (the database stores UTC)."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise ValueError(f"{name}: pass a timezone-aware datetime")
    return value
