"""A PgBouncer (transaction pooling) in front of the test PostgreSQL, for the whole run.

Debian's `pgbouncer` package (1.18; `.ci/run` installs it when missing). `PgBouncer.start`
writes a config and an auth file into a directory of their own, starts pgbouncer on a
free loopback port (as the `postgres` user when we are root: pgbouncer refuses to run as
root) and waits until it answers. Every database of the server is reachable through it
(`* = host=... port=...`), so scratch databases made through the direct URL are too.

The session fixture `pgbouncer` (tests/conftest.py) skips when it cannot start one, and
fails instead under SLACK_AGENTS_SA_STRICT=1 (CI).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

#: The user pgbouncer runs as when the tests run as root.
RUN_AS = "postgres"
#: How long pgbouncer may take to answer after starting (s).
START_TIMEOUT_S = 15.0


class PgBouncerUnavailable(RuntimeError):
    """pgbouncer is not installed or did not start; the message says why."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(server: URL, directory: Path, port: int) -> str:
    host = server.host or "127.0.0.1"
    server_port = server.port or 5432
    return f"""\
[databases]
* = host={host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "userlist.txt"}
pool_mode = transaction
max_client_conn = 2000
default_pool_size = 20
reserve_pool_size = 5
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
admin_users = {server.username or RUN_AS}
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
"""


@dataclass
class PgBouncer:
    """A running pgbouncer: `url_for` turns a direct database URL into one through it."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(cls, server: URL) -> PgBouncer:
        """pgbouncer in front of `server` (a direct PostgreSQL URL), answering on loopback."""
        binary = shutil.which("pgbouncer") or (
            "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
        )
        if binary is None:
            raise PgBouncerUnavailable(
                "pgbouncer is not installed (apt-get install -y pgbouncer; .ci/run does it)"
            )
        directory = Path(tempfile.mkdtemp(prefix="sa_pgbouncer_"))
        user = server.username or RUN_AS
        # Trust: the server trusts loopback too; the user must still be listed.
        (directory / "userlist.txt").write_text(f'"{user}" ""\n')
        port = _free_port()
        config = directory / "pgbouncer.ini"
        config.write_text(_config(server, directory, port))
        command = [binary, "-q", str(config)]
        if os.geteuid() == 0:
            entry = pwd.getpwnam(RUN_AS)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
            for path in directory.iterdir():
                os.chown(path, entry.pw_uid, entry.pw_gid)
            command[1:1] = ["-u", RUN_AS]
        # Its own output goes to a file: a pipe nobody reads could fill and stall it.
        with open(directory / "stdout.log", "wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        bouncer = cls(port, directory, process)
        try:
            bouncer._wait_until_listening()
        except BaseException:
            bouncer.stop()
            raise
        return bouncer

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PgBouncerUnavailable(f"pgbouncer exited: {self._output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise PgBouncerUnavailable(f"pgbouncer did not listen within {START_TIMEOUT_S:g} s")

    def _output(self) -> str:
        files = [self.directory / "stdout.log", self.directory / "pgbouncer.log"]
        text = "".join(f.read_text(errors="replace") for f in files if f.exists())
        return text.strip()[-2000:]

    def url_for(self, direct: URL) -> URL:
        """`direct` (a database on the server behind) reached through this pgbouncer."""
        return direct.set(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        """Stop pgbouncer (the process we started, by its pid) and remove its files."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
