"""A throwaway PostgreSQL that speaks TLS only, with `tests.tls_certificates`' files.

pg_hba.conf refuses every connection without TLS, lets `postgres` in over TLS, and lets
`certuser` in only with its client certificate. Stopped and removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from tests.pg_cluster import DATABASE, PgCluster, _append, free_port
from tests.tls_certificates import CERT_USER, make_certificates


@dataclass
class TlsServer:
    """The server's port and the files a client names in its URL."""

    port: int
    ca: Path
    wrong_ca: Path
    client_cert: Path
    client_key: Path

    def url(self, user: str = "postgres", host: str = "127.0.0.1", **options: str) -> str:
        """A provider URL of this server with libpq options in its query."""
        query = urlencode(options)
        return f"postgresql://{user}@{host}:{self.port}/{DATABASE}" + (f"?{query}" if query else "")


@contextmanager
def tls_server(bindir: Path) -> Iterator[TlsServer]:
    """A started TLS-only server on a free loopback port; stopped and removed on exit."""
    parent = "/tmp" if os.geteuid() == 0 and Path("/tmp").is_dir() else None  # noqa: S108
    root = Path(tempfile.mkdtemp(prefix="sa-tls-", dir=parent))
    certs = Path(tempfile.mkdtemp(prefix="sa-tls-certs-", dir=parent))
    try:
        make_certificates(certs)
        if os.geteuid() == 0:
            shutil.chown(root, user="postgres", group="postgres")
        root.chmod(0o700)
        port = free_port()
        server = PgCluster(bindir, root, port, 0)
        data = server.primary_data
        try:
            server.run(
                "initdb",
                *("-D", str(data), "-A", "trust", "-U", "postgres"),
                *("--no-sync", "--no-instructions", "-E", "UTF8", "--locale", "C"),
            )
            for name in ("server.crt", "server.key", "ca.crt"):
                shutil.copy(certs / name, data / name)
                if os.geteuid() == 0:
                    shutil.chown(data / name, user="postgres", group="postgres")
                (data / name).chmod(0o600)
            _append(
                data / "postgresql.conf",
                f"port = {port}",
                "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{root}'",
                "max_connections = 40",
                "shared_buffers = 16MB",
                "ssl = on",
                "ssl_cert_file = 'server.crt'",
                "ssl_key_file = 'server.key'",
                "ssl_ca_file = 'ca.crt'",
            )
            # The last lines initdb wrote (trust for local sockets and host) come first in
            # the file, so they are replaced: only what is below applies to TCP.
            hba = data / "pg_hba.conf"
            hba.write_text(
                "local all all trust\n"
                f"hostssl all {CERT_USER} 127.0.0.1/32 cert\n"
                "hostssl all postgres 127.0.0.1/32 trust\n"
            )
            server.pg_ctl_start(data)
            server.run(
                "psql",
                *("-X", "-q", "-h", str(root), "-p", str(port), "-U", "postgres"),
                *("-d", "postgres", "-c", f"CREATE DATABASE {DATABASE}"),
                *("-c", f"CREATE ROLE {CERT_USER} LOGIN SUPERUSER"),
            )
            yield TlsServer(
                port,
                ca=certs / "ca.crt",
                wrong_ca=certs / "wrong-ca.crt",
                client_cert=certs / "client.crt",
                client_key=certs / "client.key",
            )
        finally:
            server.stop_all()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(certs, ignore_errors=True)
