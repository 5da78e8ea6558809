"""OAuth secrets at rest: how a value is sealed and opened under option `encryption_keys`.

With the option set, `agents_oauth_tokens.access_token` and `agents_oauth_clients.client_secret`
are stored as `sa-enc:v1:` followed by a Fernet token (AES-128-CBC with HMAC-SHA256, from the
`cryptography` package). Our prefix, not Fernet's own "gAAAAA" look, tells a sealed value from a
plaintext one: a plaintext token may begin with "gAAAAA" too. So rows written before the
option was set still read, and `rotate-keys` seals them. The first key seals, every key opens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from slack_agents_sa.errors import DecryptionError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet, MultiFernet

#: What every sealed value starts with; `v1` is Fernet. A new scheme would be `v2`.
PREFIX = "sa-enc:v1:"


def split_keys(text: str) -> list[str]:
    """Keys from one comma-separated string (Fernet keys are url-safe base64: no commas)."""
    return [key.strip() for key in text.split(",") if key.strip()]


class SecretBox:
    """The keys of option `encryption_keys`: the first one seals, every one opens.

    Raises ValueError naming a malformed key's position (never the key), or the missing
    `cryptography` package.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError:
            raise ValueError(
                "needs the cryptography package: pip install 'slack_agents_sa[crypto]'"
            ) from None
        if not keys:
            raise ValueError("must list at least one key (leave it out to store secrets as given)")
        fernets = []
        for position, key in enumerate(keys, 1):
            try:
                fernets.append(Fernet(key))
            except (TypeError, ValueError):  # binascii.Error is a ValueError
                raise ValueError(
                    f"key {position} of {len(keys)} is not a Fernet key (32 url-safe "
                    "base64-encoded bytes, as `Fernet.generate_key()` makes them)"
                ) from None
        self._first: Fernet = fernets[0]
        self._all: MultiFernet = MultiFernet(fernets)

    def seal(self, value: str) -> str:
        """`value` encrypted under the first key, in its stored form."""
        return PREFIX + self._first.encrypt(value.encode()).decode("ascii")

    def open(self, column: str, stored: str) -> str:
        """The plaintext of a sealed value, or DecryptionError naming `column` (never a value)."""
        from cryptography.fernet import InvalidToken

        try:
            return self._all.decrypt(stored.removeprefix(PREFIX).encode("ascii")).decode()
        except (InvalidToken, UnicodeError):
            raise DecryptionError(
                f"{column} is encrypted under a key that option `encryption_keys` does not "
                "list: add the key it was written with (after the first)",
                column=column,
            ) from None

    def resealed(self, column: str, stored: str) -> str | None:
        """`stored` sealed under the first key, or None if it already is.

        Not `MultiFernet.rotate`, which re-encrypts every token: a run over rows that are
        already under the first key must write nothing.
        """
        from cryptography.fernet import InvalidToken

        if not stored.startswith(PREFIX):
            return self.seal(stored)
        try:
            self._first.decrypt(stored.removeprefix(PREFIX).encode("ascii"))
        except (InvalidToken, UnicodeError):
            return self.seal(self.open(column, stored))
        return None


def seal_secret(box: SecretBox | None, name: str, value: str) -> str:
    """What to store for the secret `value` (the argument `name` is for messages)."""
    if box is not None:
        return box.seal(value)
    if value.startswith(PREFIX):
        # Stored as given, it would later be taken for a sealed value and fail to open.
        raise ValueError(
            f"{name} starts with {PREFIX!r}, which marks an encrypted value; "
            "it can be stored only with option `encryption_keys` set"
        )
    return value


def open_secret(box: SecretBox | None, column: str, stored: str) -> str:
    """The plaintext of a stored secret: sealed values opened, plaintext ones as they are."""
    if not stored.startswith(PREFIX):
        return stored
    if box is None:
        raise DecryptionError(
            f"{column} is encrypted, but option `encryption_keys` is not set: "
            "set it to the keys the secrets were written with",
            column=column,
        )
    return box.open(column, stored)
