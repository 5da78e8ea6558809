"""A throwaway MariaDB that takes TLS connections only, with `tests.tls_certificates`' files.

`mariadb-install-db` makes a data directory in a temporary directory; `mariadbd` serves it
on a free loopback port with `require_secure_transport=ON`, so the server refuses every
TCP connection without TLS. Through its Unix socket, root makes the database `test`, the
user `tlsuser` (no requirement of its own: only the server-wide setting asks for TLS) and
the user `certuser`, who must show a client certificate for `/CN=certuser` issued by the
test CA. The server runs as `mysql` when the tests run as root. It is stopped (SIGTERM,
then SIGKILL) and everything removed at the end, whatever happened.

One adjustment to the certificates `make_certificates` writes:

- asyncmy cannot be given a key's password, so `client-plain.key` is an unencrypted copy
  of the client's key.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from tests.pg_cluster import free_port
from tests.tls_certificates import CERT_USER, CLIENT_KEY_PASSWORD, make_certificates

INSTALL_DB = "/usr/bin/mariadb-install-db"
SERVER = "/usr/sbin/mariadbd"
#: The programs the server needs: (path or name on PATH) for each.
PROGRAMS = (INSTALL_DB, SERVER, "mariadb", "openssl")
#: The database the provider uses.
DATABASE = "test"
#: The user that logs in over TLS without a client certificate.
TLS_USER = "tlsuser"
#: A second loopback address the server also listens on; its certificate does not name it.
OTHER_LOOPBACK = "127.0.0.2"
#: Seconds the server may take to accept connections, or to stop.
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


def missing_programs() -> list[str]:
    """The programs of `PROGRAMS` that are not installed (empty: all are)."""
    return [program for program in PROGRAMS if shutil.which(program) is None]


@dataclass
class MariaDbTlsServer:
    """The server's port and the files a client names in its URL."""

    port: int
    ca: Path
    wrong_ca: Path
    client_cert: Path
    #: The client's key, encrypted with `CLIENT_KEY_PASSWORD`.
    client_key: Path
    #: The same key, unencrypted.
    client_key_plain: Path
    #: `OTHER_LOOPBACK` if the server listens there too (None where it cannot be bound).
    other_host: str | None

    def url(
        self,
        user: str = TLS_USER,
        host: str = "127.0.0.1",
        driver: str = "asyncmy",
        **query: str,
    ) -> str:
        """A provider URL of this server with the MySQL dialects' `ssl_*` options in its query."""
        encoded = urlencode(query)
        return f"mysql+{driver}://{user}@{host}:{self.port}/{DATABASE}" + (
            f"?{encoded}" if encoded else ""
        )


def _run(*command: str, timeout: float = START_TIMEOUT_S) -> str:
    done = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def _bindable(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
        return True


def _log_tail(log: Path) -> str:
    with suppress(OSError):
        lines = log.read_text(errors="replace").splitlines()[-30:]
        return f"\n--- {log.name} (last lines) ---\n" + "\n".join(lines)
    return f"\n(no {log.name})"


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(STOP_TIMEOUT_S)


@contextmanager
def mariadb_tls_server() -> Iterator[MariaDbTlsServer]:
    """A started TLS-only MariaDB on a free loopback port; stopped and removed on exit."""
    as_root = os.geteuid() == 0
    # The mysql user must reach it: a root-only $TMPDIR would not do.
    parent = "/tmp" if as_root and Path("/tmp").is_dir() else None  # noqa: S108
    root = Path(tempfile.mkdtemp(prefix="sa-mariadb-tls-", dir=parent))
    try:
        certs = root / "certs"
        certs.mkdir()
        make_certificates(certs)
        _run(
            *("openssl", "pkey", "-in", str(certs / "client.key")),
            *("-passin", f"pass:{CLIENT_KEY_PASSWORD}", "-out", str(certs / "client-plain.key")),
        )
        data = root / "data"
        socket_path = root / "sock"
        log = root / "error.log"
        user_args = ["--user=mysql"] if as_root else []
        if as_root:
            for path in (root, *root.rglob("*")):
                shutil.chown(path, user="mysql", group="mysql")
        root.chmod(0o700)
        _run(
            INSTALL_DB,
            *("--no-defaults", f"--datadir={data}", *user_args),
            *("--auth-root-authentication-method=normal", "--skip-test-db"),
            "--innodb-log-file-size=8M",
        )
        port = free_port()
        other_host = OTHER_LOOPBACK if _bindable(OTHER_LOOPBACK) else None
        addresses = ",".join(["127.0.0.1", *([other_host] if other_host else [])])
        server = subprocess.Popen(
            [
                SERVER,
                *("--no-defaults", f"--datadir={data}", *user_args),
                *(f"--port={port}", f"--bind-address={addresses}", f"--socket={socket_path}"),
                *(f"--pid-file={root / 'mariadbd.pid'}", f"--log-error={log}"),
                f"--ssl-cert={certs / 'server.crt'}",
                f"--ssl-key={certs / 'server.key'}",
                f"--ssl-ca={certs / 'ca.crt'}",
                "--require-secure-transport=ON",
                *("--skip-log-bin", "--skip-name-resolve", "--max-connections=50"),
                *("--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M"),
                "--character-set-server=utf8mb4",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_until_up(server, socket_path, log)
            _run(
                *("mariadb", "--no-defaults", f"--socket={socket_path}", "-uroot", "-e"),
                f"CREATE DATABASE {DATABASE};"
                f"CREATE USER '{TLS_USER}'@'%';"
                f"GRANT ALL ON *.* TO '{TLS_USER}'@'%';"
                f"CREATE USER '{CERT_USER}'@'%'"
                f" REQUIRE SUBJECT '/CN={CERT_USER}' AND ISSUER '/CN=ca';"
                f"GRANT ALL ON *.* TO '{CERT_USER}'@'%';",
            )
            yield MariaDbTlsServer(
                port,
                ca=certs / "ca.crt",
                wrong_ca=certs / "wrong-ca.crt",
                client_cert=certs / "client.crt",
                client_key=certs / "client.key",
                client_key_plain=certs / "client-plain.key",
                other_host=other_host,
            )
        finally:
            _stop(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_up(server: subprocess.Popen[bytes], socket_path: Path, log: Path) -> None:
    """Return once root can run a statement through the socket; RuntimeError with the
    error log's tail if the server exits or is not up within `START_TIMEOUT_S`."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mariadbd exited with {server.returncode}{_log_tail(log)}")
        if socket_path.exists():
            probe = subprocess.run(
                ["mariadb", "--no-defaults", f"--socket={socket_path}", "-uroot", "-e", "SELECT 1"],
                capture_output=True,
                timeout=10,
                check=False,
            )
            if probe.returncode == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"mariadbd did not accept connections in {START_TIMEOUT_S} s{_log_tail(log)}"
    )
