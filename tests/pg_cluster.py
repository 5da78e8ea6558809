"""A throwaway PostgreSQL primary and streaming standby on loopback ports, for failover tests.

The primary replicates synchronously to the standby (`synchronous_standby_names = '*'`), so
a commit acknowledged to a client is on the standby's disk. The standby is a
`pg_basebackup -R -X stream` copy of the primary, so it streams from it and can be
promoted. The servers run as the `postgres` user when the tests run as root (PostgreSQL
refuses root), in a temporary directory owned by it. Everything is stopped (immediate
shutdown) and removed at the end, whatever happened.

`synchronous_standby_names` is set with `ALTER SYSTEM` on the primary only after the
standby was copied: a promoted standby then has no synchronous standby of its own to wait
for, and writes to it commit at once.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

#: The server programs the cluster needs.
PROGRAMS = ("initdb", "pg_ctl", "pg_basebackup", "psql")
#: Where to look for them when `pg_config` is not on PATH (Debian's layout).
_DEBIAN_BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
#: The database the provider uses.
DATABASE = "test"
#: Seconds a server start, stop or promotion may take.
PG_CTL_TIMEOUT_S = 30


def find_bindir() -> Path | None:
    """The directory holding PostgreSQL's server programs, or None if they are not installed."""
    candidates: list[Path] = []
    if override := os.environ.get("PG_BINDIR"):
        candidates.append(Path(override))
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with suppress(subprocess.SubprocessError, OSError):
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(found))
    candidates.extend(_DEBIAN_BINDIRS)
    for bindir in candidates:
        if all((bindir / program).is_file() for program in PROGRAMS):
            return bindir
    return None


def free_port() -> int:
    """A loopback port nothing listens on now (the OS's choice of an ephemeral port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PgCluster:
    """A primary on `primary_port` and its synchronous standby on `standby_port`."""

    bindir: Path
    root: Path
    primary_port: int
    standby_port: int

    @property
    def primary_data(self) -> Path:
        return self.root / "primary"

    @property
    def standby_data(self) -> Path:
        return self.root / "standby"

    def url(self) -> str:
        """The provider's multi-host URL: whichever host accepts writes serves it."""
        return (
            f"postgresql+asyncpg://postgres@/{DATABASE}"
            f"?host=127.0.0.1:{self.primary_port}&host=127.0.0.1:{self.standby_port}"
            "&target_session_attrs=read-write"
        )

    def url_of(self, port: int) -> str:
        """A single-host URL of one server (for checks that must reach that one)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{DATABASE}"

    # -- the servers' life -------------------------------------------------------------

    def run(self, program: str, *args: str, timeout: float = PG_CTL_TIMEOUT_S) -> str:
        """Run one of the server programs as the `postgres` user; its output, or an error
        that carries it."""
        command = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}{self._logs()}"
            )
        return done.stdout

    def psql(self, port: int, *commands: str, database: str = "postgres") -> str:
        """Each command in a transaction of its own (as `psql -c ... -c ...` runs them)."""
        return self.run(
            "psql",
            *("-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"),
            *("-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", database),
            *(part for command in commands for part in ("-c", command)),
        )

    def start(self) -> None:
        """initdb, start the primary, create the database, copy and start the standby, then
        make replication synchronous and wait until the standby is the synchronous one."""
        self.run(
            "initdb",
            *("-D", str(self.primary_data), "-A", "trust", "-U", "postgres"),
            *("--no-sync", "--no-instructions", "-E", "UTF8", "--locale", "C"),
        )
        _append(
            self.primary_data / "postgresql.conf",
            f"port = {self.primary_port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.root}'",
            "wal_level = replica",
            "max_wal_senders = 5",
            "max_connections = 50",
            "shared_buffers = 16MB",
            "wal_sender_timeout = 5s",
            "wal_receiver_status_interval = 1s",
            "hot_standby = on",
        )
        _append(
            self.primary_data / "pg_hba.conf",
            "host replication all 127.0.0.1/32 trust",
            "host all all 127.0.0.1/32 trust",
        )
        self.pg_ctl_start(self.primary_data)
        self.psql(self.primary_port, f"CREATE DATABASE {DATABASE}")
        self.run(
            "pg_basebackup",
            *("-D", str(self.standby_data), "-R", "-X", "stream", "-c", "fast", "--no-sync"),
            *("-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres"),
        )
        # The copy's postgresql.conf says the primary's port: a later line wins.
        _append(self.standby_data / "postgresql.conf", f"port = {self.standby_port}")
        self.pg_ctl_start(self.standby_data)
        self.psql(
            self.primary_port,
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        )
        self._wait_for_sync_standby()

    def _wait_for_sync_standby(self) -> None:
        deadline = time.monotonic() + PG_CTL_TIMEOUT_S
        while time.monotonic() < deadline:
            states = self.psql(self.primary_port, "SELECT sync_state FROM pg_stat_replication")
            if "sync" in states.split():
                return
            time.sleep(0.05)
        raise RuntimeError(f"the standby never became synchronous{self._logs()}")

    def pg_ctl_start(self, data: Path) -> None:
        self.run(
            "pg_ctl",
            *("-D", str(data), "-l", str(data.with_suffix(".log")), "-w"),
            *("-t", str(PG_CTL_TIMEOUT_S), "start"),
        )

    def stop_primary(self, mode: str) -> None:
        """`pg_ctl stop -m fast` or `-m immediate`: returns once the primary is down."""
        self.run("pg_ctl", "-D", str(self.primary_data), "-m", mode, "-w", "stop")

    def promote_standby(self) -> None:
        """`pg_ctl promote -w`: returns once the standby accepts writes."""
        self.run(
            "pg_ctl", "-D", str(self.standby_data), "-w", "-t", str(PG_CTL_TIMEOUT_S), "promote"
        )

    def stop_all(self) -> None:
        """Immediate shutdown of whichever server still runs (errors ignored)."""
        for data in (self.standby_data, self.primary_data):
            if (data / "postmaster.pid").exists():
                with suppress(Exception):
                    self.run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")

    def _logs(self) -> str:
        parts = []
        for log in (self.primary_data.with_suffix(".log"), self.standby_data.with_suffix(".log")):
            with suppress(OSError):
                parts.append(f"\n--- {log.name} (last lines) ---\n")
                parts.append("\n".join(log.read_text(errors="replace").splitlines()[-30:]))
        return "".join(parts)


def _append(path: Path, *lines: str) -> None:
    # Written as root into files postgres owns: appending keeps their owner and mode.
    with path.open("a", encoding="utf-8") as conf:
        conf.write("\n" + "\n".join(lines) + "\n")


@contextmanager
def pg_cluster(bindir: Path) -> Iterator[PgCluster]:
    """A started primary + synchronous standby; both stopped and removed on exit."""
    # The postgres user must reach it: a root-only $TMPDIR would not do.
    parent = "/tmp" if os.geteuid() == 0 and Path("/tmp").is_dir() else None  # noqa: S108
    root = Path(tempfile.mkdtemp(prefix="sa-failover-", dir=parent))
    try:
        if os.geteuid() == 0:
            shutil.chown(root, user="postgres", group="postgres")
        root.chmod(0o700)
        primary_port = free_port()
        standby_port = free_port()
        while standby_port == primary_port:  # pragma: no cover - the OS rarely repeats
            standby_port = free_port()
        cluster = PgCluster(bindir, root, primary_port, standby_port)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop_all()
    finally:
        shutil.rmtree(root, ignore_errors=True)
