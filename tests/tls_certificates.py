"""Certificates for TLS tests, made by `openssl` at run time (EC keys: quick to make).

A certificate authority (ca) signs the server's certificate (names `127.0.0.1` and
`localhost`) and a client certificate for the user `CERT_USER`, whose key is encrypted
with `CLIENT_KEY_PASSWORD`; a second authority (wrong-ca) signs nothing a server shows.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

#: The password of the client certificate's key (libpq's `sslpassword`).
CLIENT_KEY_PASSWORD = "key secret"
#: The user (role) that logs in with the client certificate.
CERT_USER = "certuser"


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)


def _authority(directory: Path, name: str) -> None:
    _openssl(
        directory,
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2"),
        *("-subj", f"/CN={name}"),
        # Python 3.13's default context refuses a CA certificate without key usage.
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )


def _signed(directory: Path, name: str, subject: str, extensions: str, *key_args: str) -> None:
    """`name`.crt signed by ca.crt for a new key `name`.key (encrypted with `key_args`)."""
    (directory / f"{name}.ext").write_text(extensions + "\n")
    _openssl(
        directory,
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *(key_args or ("-nodes",)),
        *("-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={subject}"),
    )
    _openssl(
        directory,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-out", f"{name}.crt", "-days", "2"),
        *("-extfile", f"{name}.ext"),
    )


def make_certificates(directory: Path) -> None:
    """ca, wrong-ca, server (127.0.0.1 and localhost) and client (certuser) files."""
    _authority(directory, "ca")
    _authority(directory, "wrong-ca")
    _signed(directory, "server", "127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    _signed(
        directory,
        "client",
        CERT_USER,
        "extendedKeyUsage=clientAuth",
        *("-passout", f"pass:{CLIENT_KEY_PASSWORD}"),
    )
