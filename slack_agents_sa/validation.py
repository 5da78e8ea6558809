"""Argument checks run before anything is written, so bad input fails with a clear message."""

from __future__ import annotations

from typing import Any

from slack_agents_sa.types import SURROGATES


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
    """A row id given as int or decimal str (the host passes both), else an error naming `name`."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a str of digits, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, str):
        raise ValueError(f"{name} must be an integer id, got {value!r}")
    raise TypeError(f"{name} must be an int or a str of digits, got {type(value).__name__}")


def to_optional_id(name: str, value: Any) -> int | None:
    """Like `to_id`, but None (and the host's falsy "no link" values) mean no id."""
    if value is None or value == "" or value == 0:
        return None
    return to_id(name, value)
