"""MySQL/MariaDB's `max_allowed_packet`, checked before sending: the server answers an
oversized statement by dropping the connection ("server has gone away"), which names no
cause. Used on both paths (the MySQL backend's hook for SQLAlchemy's, the native executor);
no driver imported here, so aiomysql setups use it too."""

from __future__ import annotations

from typing import Any

from slack_agents_sa.errors import InvalidValueError

#: Room for the protocol's framing and for quotes the driver escapes when it inlines values.
_PACKET_HEADROOM = 64 * 1024


def statement_size(statement: str, parameters: Any) -> int:
    """Bytes a statement with its (dict or sequence of) values takes on the wire, near
    enough to compare with `max_allowed_packet`."""
    return utf8_size(statement) + parameters_size(parameters)


def packet_too_large(size: int, limit: int) -> InvalidValueError | None:
    """The error for a statement of `size` bytes on a server with this packet limit, if any."""
    if size <= limit - _PACKET_HEADROOM:
        return None
    return InvalidValueError(
        f"value too large for this server: the statement takes {size} bytes and "
        f"MySQL/MariaDB's max_allowed_packet is {limit} bytes (raise it on the server)"
    )


def utf8_size(text_value: str, errors: str = "strict") -> int:
    """Bytes of `text_value` in UTF-8. A statement the driver has already rendered inlines
    bytes values as surrogate escapes, sent as the bytes they stand for: measure it with
    `errors="surrogateescape"`; a lone surrogate in a value raises, as the driver would."""
    return len(text_value) if text_value.isascii() else len(text_value.encode("utf-8", errors))


def parameters_size(parameters: Any) -> int:
    values = parameters.values() if isinstance(parameters, dict) else parameters or ()
    size = 0
    for value in values:
        if isinstance(value, str):
            size += utf8_size(value)
        elif isinstance(value, bytes | bytearray):
            size += len(value)
    return size
