"""A throwaway 3-node MariaDB Galera cluster on loopback ports, for the conformance suite.

Debian's `galera-4` (the wsrep provider `/usr/lib/galera/libgalera_smm.so`; `.ci/run`
installs it and `rsync`, the state transfer's tool, when missing) with the machine's
MariaDB server (`mariadbd`, wsrep built in). `GaleraCluster.start`:

- gives each node a data directory of its own (`mariadb-install-db`), a socket, a pid file
  and four free loopback ports: client (`port`), group communication (`gmcast.listen_addr`,
  the ports `wsrep_cluster_address` lists), incremental state transfer (`ist.recv_addr`)
  and full state transfer (`wsrep_sst_receive_address`, rsync);
- bootstraps node 1 (`--wsrep-new-cluster`), then starts each next node once the previous
  one reports `wsrep_local_state_comment = Synced` (it joins by a full state transfer);
- lets `root` in over TCP with no password and creates the database `test`.

Failure detection is short (`evs.suspect_timeout=PT2S`, `evs.keepalive_period=PT0.5S`) so
that tests which kill a node (`kill`, then `restart`) see the cluster shrink quickly;
`start(fast_failure_detection=False)` leaves Galera's defaults (PT5S, PT1S) instead, as a
production cluster has them (benchmarks/galera.py measures a failover under both).
As root the servers run as the `mysql` user (`--user=mysql`), in a directory it owns.
`stop` always terminates every node (SIGTERM, a wait, then SIGKILL) and removes all files.

Galera hands out AUTO_INCREMENT values with a step of the cluster size
(`wsrep_auto_increment_control`), so ids are unique but not contiguous.

The session fixture `galera` (tests/conftest.py) starts it on first use; it skips when the
cluster cannot start, and fails instead under SLACK_AGENTS_SA_STRICT=1 (CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL

#: The wsrep provider of Debian's galera-4.
PROVIDER = Path("/usr/lib/galera/libgalera_smm.so")
#: The user the servers run as when the tests run as root.
RUN_AS = "mysql"
#: The database the providers use.
DATABASE = "test"
#: Nodes in the cluster.
SIZE = 3
#: Seconds a node may take to start (a joiner: including its state transfer) or to stop.
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


class GaleraUnavailable(RuntimeError):
    """Galera or MariaDB is not installed, or the cluster did not start; the message says why."""


def _program(name: str, *fallbacks: str) -> str:
    found = shutil.which(name) or next((f for f in fallbacks if Path(f).is_file()), None)
    if found is None:
        raise GaleraUnavailable(f"{name} is not installed (the MariaDB server package)")
    return found


def _free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports nothing listens on now (held open together while
    chosen, so the OS gives different ones)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            probe = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind(("127.0.0.1", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


@dataclass
class GaleraNode:
    """One node: its ports and files, and its server process while it runs."""

    number: int
    directory: Path
    port: int
    gcomm_port: int
    ist_port: int
    sst_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def socket(self) -> Path:
        return self.directory / "mysqld.sock"

    @property
    def log(self) -> Path:
        return self.directory / "mariadbd.log"

    @property
    def url(self) -> URL:
        return URL.create(
            "mysql+asyncmy", username="root", host="127.0.0.1", port=self.port, database=DATABASE
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"\n--- node {self.number} log (last lines) ---\n" + "\n".join(text[-lines:])


@dataclass
class GaleraCluster:
    """SIZE MariaDB nodes replicating synchronously through Galera, on loopback."""

    root: Path
    nodes: list[GaleraNode]
    mariadbd: str
    client: str
    #: Seconds each node took to start (the joiners: until Synced), for the curious.
    start_times: list[float] = field(default_factory=list)
    #: Short `evs.suspect_timeout` / `evs.keepalive_period` (see the module docstring).
    fast_failure_detection: bool = True

    @property
    def url(self) -> URL:
        """Node 1's database `test` (any node would serve: they hold the same data)."""
        return self.nodes[0].url

    def urls(self) -> list[URL]:
        return [node.url for node in self.nodes]

    @classmethod
    def start(cls, size: int = SIZE, *, fast_failure_detection: bool = True) -> GaleraCluster:
        """Bootstrap node 1, join the others one by one, make root and `test` reachable;
        on any failure every node is stopped and the files are removed.

        `fast_failure_detection=False`: Galera's default failure detection, not the tests'."""
        if not PROVIDER.is_file():
            raise GaleraUnavailable(
                f"{PROVIDER} is missing (apt-get install -y galera-4 rsync; .ci/run does it)"
            )
        if shutil.which("rsync") is None:
            raise GaleraUnavailable("rsync is missing (apt-get install -y rsync; .ci/run does it)")
        mariadbd = _program("mariadbd", "/usr/sbin/mariadbd")
        client = _program("mariadb", "/usr/bin/mariadb")
        install_db = _program("mariadb-install-db", "/usr/bin/mariadb-install-db")
        # The server user must reach the directory: a root-only $TMPDIR would not do.
        parent = "/tmp" if os.geteuid() == 0 and Path("/tmp").is_dir() else None  # noqa: S108
        root = Path(tempfile.mkdtemp(prefix="sa-galera-", dir=parent))
        ports = _free_ports(4 * size)
        nodes = []
        for n in range(size):
            port, gcomm_port, ist_port, sst_port = ports[4 * n : 4 * n + 4]
            nodes.append(
                GaleraNode(n + 1, root / f"node{n + 1}", port, gcomm_port, ist_port, sst_port)
            )
        cluster = cls(root, nodes, mariadbd, client, fast_failure_detection=fast_failure_detection)
        try:
            for node in nodes:
                node.directory.mkdir()
            if os.geteuid() == 0:
                for path in (root, *(node.directory for node in nodes)):
                    shutil.chown(path, user=RUN_AS, group=RUN_AS)
            root.chmod(0o755)
            for node in nodes:
                cluster._install_db(install_db, node)
            for node in nodes:
                started = time.monotonic()
                cluster._start_node(node, bootstrap=node is nodes[0])
                cluster.start_times.append(time.monotonic() - started)
            cluster._grant_root_and_create_database()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    # -- the nodes' life ---------------------------------------------------------------

    def _install_db(self, install_db: str, node: GaleraNode) -> None:
        """Create `node`'s system tables; tried twice: `mariadb-install-db` crashed once here
        (signal 11 in its bootstrap's temporary tables) while another cluster was starting."""
        for attempt in (1, 2):
            done = self._run_install_db(install_db, node)
            if done.returncode == 0:
                return
            if attempt == 1:
                shutil.rmtree(node.datadir, ignore_errors=True)
        raise GaleraUnavailable(
            f"mariadb-install-db for node {node.number} exited with {done.returncode}:\n"
            f"{done.stdout}{done.stderr}"
        )

    def _run_install_db(
        self, install_db: str, node: GaleraNode
    ) -> subprocess.CompletedProcess[str]:
        command = [
            install_db,
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            f"--datadir={node.datadir}",
            "--innodb-log-file-size=16M",
            "--innodb-buffer-pool-size=32M",
        ]
        if os.geteuid() == 0:
            command.append(f"--user={RUN_AS}")
        return subprocess.run(
            command, capture_output=True, text=True, timeout=START_TIMEOUT_S, cwd=self.root
        )

    def _options(self, node: GaleraNode, bootstrap: bool) -> list[str]:
        members = ",".join(f"127.0.0.1:{other.gcomm_port}" for other in self.nodes)
        detection = (
            ["evs.suspect_timeout=PT2S", "evs.keepalive_period=PT0.5S"]
            if self.fast_failure_detection
            else []
        )
        provider_options = ";".join(
            [
                f"gmcast.listen_addr=tcp://127.0.0.1:{node.gcomm_port}",
                f"ist.recv_addr=127.0.0.1:{node.ist_port}",
                *detection,
                "gcache.size=32M",
            ]
        )
        options = [
            "--no-defaults",
            f"--datadir={node.datadir}",
            f"--socket={node.socket}",
            f"--pid-file={node.directory / 'mariadbd.pid'}",
            f"--port={node.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--wsrep-on=ON",
            f"--wsrep-provider={PROVIDER}",
            f"--wsrep-cluster-address=gcomm://{members}",
            "--wsrep-cluster-name=sa-test",
            f"--wsrep-node-name=node{node.number}",
            "--wsrep-node-address=127.0.0.1",
            f"--wsrep-provider-options={provider_options}",
            f"--wsrep-sst-receive-address=127.0.0.1:{node.sst_port}",
            "--wsrep-sst-method=rsync",
            "--binlog-format=ROW",
            "--innodb-autoinc-lock-mode=2",
            "--default-storage-engine=InnoDB",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=300",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ]
        if os.geteuid() == 0:
            options.append(f"--user={RUN_AS}")
        if bootstrap:
            options.append("--wsrep-new-cluster")
        return options

    def _start_node(self, node: GaleraNode, bootstrap: bool = False) -> None:
        """Start `node` and wait until it is Synced (a joiner: after its state transfer)."""
        command = [self.mariadbd, *self._options(node, bootstrap)]
        # Its output goes to a file: a pipe nobody reads could fill and stall it.
        with node.log.open("ab") as output:
            node.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, cwd=node.directory
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not node.running():
                raise GaleraUnavailable(f"node {node.number} exited{node.log_tail()}")
            if self._state(node) == "Synced":
                return
            time.sleep(0.1)
        raise GaleraUnavailable(
            f"node {node.number} not Synced within {START_TIMEOUT_S:g} s{node.log_tail()}"
        )

    def _state(self, node: GaleraNode) -> str | None:
        """`wsrep_local_state_comment` of `node` (over its socket), or None if it does not
        answer yet."""
        try:
            return self.sql(node, "SHOW STATUS LIKE 'wsrep_local_state_comment'").split()[-1]
        except (GaleraUnavailable, IndexError):
            return None

    def sql(self, node: GaleraNode, statement: str) -> str:
        """Run `statement` on `node` as root over its socket; its tab-separated output."""
        command = [
            self.client,
            "--no-defaults",
            f"--socket={node.socket}",
            "--user=root",
            "--batch",
            "--skip-column-names",
            "--connect-timeout=2",
            "-e",
            statement,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired as error:
            raise GaleraUnavailable(f"node {node.number}: {statement}: {error}") from error
        if done.returncode != 0:
            raise GaleraUnavailable(f"node {node.number}: {statement}: {done.stderr.strip()}")
        return done.stdout

    def _grant_root_and_create_database(self) -> None:
        # DDL and account changes replicate (total order isolation): node 1 is enough.
        self.sql(
            self.nodes[0],
            "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';"
            " GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
            f" CREATE DATABASE IF NOT EXISTS `{DATABASE}` CHARACTER SET utf8mb4",
        )

    def cluster_size(self, node: GaleraNode) -> int:
        """`wsrep_cluster_size` as `node` sees it."""
        return int(self.sql(node, "SHOW STATUS LIKE 'wsrep_cluster_size'").split()[-1])

    def kill(self, number: int) -> None:
        """SIGKILL node `number` (1-based) and wait until its process is gone."""
        node = self.nodes[number - 1]
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()

    def restart(self, number: int) -> None:
        """Start node `number` again (it rejoins the running nodes) and wait until Synced."""
        node = self.nodes[number - 1]
        if node.running():
            raise RuntimeError(f"node {number} still runs")
        started = time.monotonic()
        self._start_node(node)
        self.start_times.append(time.monotonic() - started)

    def stop(self) -> None:
        """Stop every node we started (SIGTERM, wait, then SIGKILL) and remove all files."""
        try:
            running = [node.process for node in self.nodes if node.running()]
            for process in running:
                assert process is not None
                with suppress(OSError):
                    process.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for process in running:
                assert process is not None
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
