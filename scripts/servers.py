"""Throwaway MariaDB and Redis servers for tests, benchmarks and the demo.

Every server runs on a free 127.0.0.1 port with all of its files in one
directory, so nothing here can touch a system server on 3306/6379.

Library use::

    db = start_mariadb(tmp / "mariadb")   # db.url == "mysql://root@127.0.0.1:PORT"
    rd = start_redis(tmp / "redis")       # rd.url == "redis://127.0.0.1:PORT/0"
    db.kill(); db.restart()               # fault injection, same port and data
    primary = start_mariadb(tmp / "p", server_id=1)  # with a ROW binlog
    replica = start_replica(tmp / "r", primary, server_id=2)
    db.stop(); rd.stop()

CLI use (servers outlive the script; pids are recorded in DIR/servers.json)::

    eval "$(python scripts/servers.py up --dir .demo)"
    python scripts/servers.py down --dir .demo
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pymysql
import redis

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
STATE_FILE = "servers.json"
# Debian keeps mariadbd in /usr/sbin, which is not on a normal user's PATH.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"]
)
# AF_UNIX paths are limited to 108 bytes; longer ones make mariadbd refuse to start.
_MAX_SOCKET_PATH = 100


class ServerError(RuntimeError):
    """A throwaway server failed to start or stop; the message carries its log tail."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _which(name: str) -> str:
    path = shutil.which(name, path=_SEARCH_PATH)
    if path is None:
        raise ServerError(f"{name} not found; run scripts/bootstrap to install it")
    return path


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (a dead child nobody reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class Server:
    """One running (or stopped) throwaway server and how to start it again."""

    kind: str  # "mariadb" or "redis"
    host: str
    port: int
    base_dir: Path
    argv: list[str]
    log: Path
    url: str
    socket: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    pid: int | None = None

    def start(self) -> None:
        """Spawn the server in its own session (survives our exit) and wait until ready."""
        if self.is_running():
            return
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=True,
            )
        self.pid = self.process.pid
        try:
            _wait_ready(self)
        except BaseException:
            self.kill()
            raise

    def is_running(self) -> bool:
        """Whether the server process is still alive."""
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and _pid_alive(self.pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Shut down gracefully (SIGTERM) and wait; SIGKILL if it takes over `timeout`."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the server, like a crash or OOM kill; data dir is left as is."""
        self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT)

    def restart(self) -> None:
        """Start again on the same port and data dir (stopping it first if it is up)."""
        if self.is_running():
            self.stop()
        self.start()

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(sig)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            return
        if self.pid is None or not _pid_alive(self.pid):
            return
        os.kill(self.pid, sig)
        deadline = time.monotonic() + timeout
        while _pid_alive(self.pid):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout
            time.sleep(0.05)

    def to_json(self) -> dict[str, object]:
        """State recorded by `up` so that `down` can find the process later."""
        return {
            "kind": self.kind,
            "host": self.host,
            "port": self.port,
            "base_dir": str(self.base_dir),
            "argv": self.argv,
            "log": str(self.log),
            "url": self.url,
            "socket": str(self.socket) if self.socket else None,
            "pid": self.pid,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Server:
        """Rebuild a detached server record written by `to_json`."""
        argv = data["argv"]
        pid = data["pid"]
        port = data["port"]
        sock = data.get("socket")
        assert isinstance(argv, list)
        assert isinstance(port, int)
        assert pid is None or isinstance(pid, int)
        return cls(
            kind=str(data["kind"]),
            host=str(data["host"]),
            port=port,
            base_dir=Path(str(data["base_dir"])),
            argv=[str(a) for a in argv],
            log=Path(str(data["log"])),
            url=str(data["url"]),
            socket=Path(str(sock)) if sock else None,
            pid=pid,
        )


def _wait_ready(server: Server) -> None:
    probe: Callable[[Server], None] = _mariadb_probe if server.kind == "mariadb" else _redis_probe
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not server.is_running():
            code = server.process.returncode if server.process else "?"
            raise ServerError(
                f"{server.kind} exited with code {code} during start-up on port {server.port}."
                f" Last lines of {server.log}:\n{_tail(server.log)}"
            )
        try:
            probe(server)
            return
        except Exception as exc:
            last = exc
            time.sleep(0.1)
    raise ServerError(
        f"{server.kind} on port {server.port} not ready after {START_TIMEOUT:.0f}s ({last})."
        f" Last lines of {server.log}:\n{_tail(server.log)}"
    )


def _mariadb_probe(server: Server) -> None:
    # The socket always lets root in, even before TCP grants exist.
    assert server.socket is not None
    # Connect by hand first: PyMySQL leaks its AF_UNIX socket when connect() fails,
    # which pytest's filterwarnings=error turns into a failure.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(2)
        raw.connect(str(server.socket))
    conn = pymysql.connect(
        unix_socket=str(server.socket), user="root", connect_timeout=2, autocommit=True
    )
    try:
        with conn.cursor() as cur:
            # Idempotent, so it is also correct after restart() or on an old data dir.
            for host in ("127.0.0.1", "::1", "%"):
                cur.execute(f"CREATE USER IF NOT EXISTS 'root'@'{host}' IDENTIFIED BY ''")
                cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{host}' WITH GRANT OPTION")
    finally:
        conn.close()
    tcp = pymysql.connect(host=server.host, port=server.port, user="root", connect_timeout=2)
    try:
        tcp.ping(reconnect=False)
    finally:
        tcp.close()


def _redis_probe(server: Server) -> None:
    with socket.create_connection((server.host, server.port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        reply = s.recv(64)
    if not reply.startswith((b"+PONG", b"-NOAUTH")):  # a server with requirepass answers too
        raise ServerError(f"unexpected PING reply {reply!r}")


def _socket_path(base_dir: Path) -> Path:
    path = base_dir / "mysqld.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    return Path(tempfile.mkdtemp(prefix="cwdb-")) / "mysqld.sock"


def start_mariadb(
    base_dir: Path,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    *,
    server_id: int | None = None,
) -> Server:
    """Initialise a data dir under base_dir (unless present) and start mariadbd on it.

    Root has an empty password over TCP from 127.0.0.1. Settings favour fast bulk
    loads over durability, which is what a disposable server is for. `extra_args`
    go to mariadbd last, as they are (TLS options, say), so they can override ours.

    With `server_id`, the binary log is on in the format `cachewarm follow` needs
    (ROW, FULL row image and metadata) under base_dir/binlog.*; without, it is off.
    """
    base_dir = base_dir.resolve()
    datadir = base_dir / "data"
    base_dir.mkdir(parents=True, exist_ok=True)
    log = base_dir / "mariadb.err"
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    if not (datadir / "mysql").is_dir():
        install = [
            _which("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            # The bootstrap server's temporary tables go here, not in /tmp: a mariadbd
            # starting deletes every #sql* file in its tmpdir, so concurrent installs
            # (parallel test workers) sharing /tmp would delete each other's and fail.
            f"--tmpdir={base_dir}",
            *as_root,
        ]
        done = subprocess.run(
            install, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ServerError(
                f"mariadb-install-db failed ({done.returncode}):\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
    sock = _socket_path(base_dir)
    binlog = ["--skip-log-bin"] if server_id is None else _binlog_args(base_dir, server_id)
    extra = [*as_root, *binlog, *extra_args]
    return _start_on_port(port, lambda p: _mariadb_server(base_dir, datadir, sock, log, extra, p))


def _binlog_args(base_dir: Path, server_id: int) -> list[str]:
    """A primary whose binlog a row-event reader (or a replica) can follow."""
    return [
        f"--server-id={server_id}",
        f"--log-bin={base_dir / 'binlog'}",
        f"--log-bin-index={base_dir / 'binlog.index'}",
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
    ]


def start_replica(base_dir: Path, primary: Server, server_id: int) -> Server:
    """A MariaDB replicating everything in `primary`'s binlog by GTID, from its start.

    `primary` must have been started with a `server_id`; the replica has its own binlog
    too. Returns once both replication threads run.
    """
    replica = start_mariadb(base_dir, server_id=server_id)
    try:
        conn = pymysql.connect(host=replica.host, port=replica.port, user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER='root', "
                    "MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos",
                    (primary.host, primary.port),
                )
                cur.execute("START SLAVE")
                deadline = time.monotonic() + START_TIMEOUT
                while True:
                    cur.execute("SHOW SLAVE STATUS")
                    names = [d[0] for d in cur.description or ()]
                    status = dict(zip(names, cur.fetchone() or (), strict=False))
                    if status.get("Slave_IO_Running") == status.get("Slave_SQL_Running") == "Yes":
                        break
                    if time.monotonic() > deadline:
                        raise ServerError(
                            f"replica on port {replica.port} not replicating: "
                            f"{status.get('Last_IO_Error') or status.get('Last_SQL_Error')}"
                        )
                    time.sleep(0.1)
        finally:
            conn.close()
    except BaseException:
        replica.stop()
        raise
    return replica


def _mariadb_server(
    base_dir: Path, datadir: Path, sock: Path, log: Path, extra: list[str], port: int
) -> Server:
    argv = [
        _which("mariadbd"),
        "--no-defaults",
        f"--datadir={datadir}",
        f"--socket={sock}",
        f"--pid-file={base_dir / 'mariadb.pid'}",
        f"--log-error={log}",
        f"--tmpdir={base_dir}",
        f"--port={port}",
        f"--bind-address={HOST}",
        "--skip-name-resolve",
        "--local-infile=1",
        "--max-connections=500",
        "--innodb-buffer-pool-size=512M",
        "--innodb-log-file-size=512M",
        "--innodb-flush-log-at-trx-commit=2",
        "--innodb-doublewrite=0",
        # The hot query's GROUP BY over a day of order lines outgrows the default 16 MiB
        # in-memory temporary table at 1M products; production servers want this too.
        "--tmp-table-size=256M",
        "--max-heap-table-size=256M",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci",
        *extra,
    ]
    server = Server(
        kind="mariadb",
        host=HOST,
        port=port,
        base_dir=base_dir,
        argv=argv,
        log=log,
        url=f"mysql://root@{HOST}:{port}",
        socket=sock,
    )
    server.start()
    return server


def _start_on_port(port: int | None, start: Callable[[int], Server]) -> Server:
    """Start on `port`, or on a free one, retrying if another process grabbed it first."""
    if port is not None:
        return start(port)
    for attempt in range(3):
        try:
            return start(free_port())
        except ServerError as exc:
            if "already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def start_redis(base_dir: Path, port: int | None = None, extra_args: Sequence[str] = ()) -> Server:
    """Start a non-persistent redis-server whose files live in base_dir.

    `extra_args` go to redis-server as they are (a TLS port, say).
    """
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    log = base_dir / "redis.log"
    return _start_on_port(port, lambda p: _redis_server(base_dir, log, p, list(extra_args)))


def _redis_server(base_dir: Path, log: Path, port: int, extra: list[str]) -> Server:
    argv = [
        _which("redis-server"),
        "--port",
        str(port),
        "--bind",
        HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(base_dir),
        "--daemonize",
        "no",
        "--logfile",
        str(log),
        *extra,
    ]
    server = Server(
        kind="redis",
        host=HOST,
        port=port,
        base_dir=base_dir,
        argv=argv,
        log=log,
        url=f"redis://{HOST}:{port}/0",
    )
    server.start()
    return server


@dataclass(frozen=True)
class TLSFiles:
    """A server certificate and key, and the CA that signed them (PEM files)."""

    cert: Path
    key: Path
    ca: Path


@dataclass
class RedisCluster:
    """A throwaway Redis Cluster: masters only, every slot assigned, cluster_state:ok.

    With TLS, each node also has a TLS port (tls_ports, in node order), its cluster bus
    runs over TLS, and a TLS client is told TLS ports in the slot map.
    """

    nodes: list[Server]
    tls_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Any node will do as a seed; the client learns the rest from it."""
        return self.nodes[0].url

    @property
    def tls_url(self) -> str:
        return f"rediss://{self.nodes[0].host}:{self.tls_ports[0]}/0"

    @property
    def seeds(self) -> list[str]:
        return [f"{n.host}:{n.port}" for n in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(
    base_dir: Path, masters: int = 3, tls: TLSFiles | None = None, replicas: int = 0
) -> RedisCluster:
    """Start cluster-enabled servers, join them with `redis-cli --cluster create`.

    `masters` masters with `replicas` replicas each; redis-cli picks which node is which.
    Returns once every node reports cluster_state:ok and agrees on the slot map.
    """
    base_dir = base_dir.resolve()
    nodes: list[Server] = []
    count = masters * (1 + replicas)
    tls_ports = [_free_cluster_port() for _ in range(count)] if tls else []
    try:
        for i in range(count):
            node_dir = base_dir / f"node{i}"
            tls_args = (
                [
                    "--tls-port", str(tls_ports[i]),
                    "--tls-cert-file", str(tls.cert),
                    "--tls-key-file", str(tls.key),
                    "--tls-ca-cert-file", str(tls.ca),
                    "--tls-auth-clients", "no",
                    "--tls-cluster", "yes",  # the bus on tls-port + 10000
                ]
                if tls
                else []
            )  # fmt: skip
            nodes.append(
                start_redis(
                    node_dir,
                    port=_free_cluster_port(),
                    extra_args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(node_dir / "nodes.conf"),
                        "--cluster-node-timeout",
                        "3000",
                        # Tests check what a failed run left on the nodes still up.
                        "--cluster-allow-reads-when-down",
                        "yes",
                        # A replica may take over however long ago it last synced: a test
                        # kills masters seconds after creating the cluster.
                        "--cluster-replica-validity-factor",
                        "0",
                        *tls_args,
                    ],
                )
            )
        ports = tls_ports or [n.port for n in nodes]  # the nodes meet on their bus ports
        create = [
            _which("redis-cli"),
            *(["--tls", "--cacert", str(tls.ca)] if tls else []),
            "--cluster",
            "create",
            *(f"{n.host}:{port}" for n, port in zip(nodes, ports, strict=True)),
            "--cluster-replicas",
            str(replicas),
            "--cluster-yes",
        ]
        try:
            done = subprocess.run(
                create,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
                timeout=START_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            raise ServerError(f"redis-cli --cluster create hung:\n{out[-3000:]}") from None
        if done.returncode != 0:
            raise ServerError(f"redis-cli --cluster create failed:\n{done.stdout[-3000:]}")
        wait_cluster_ok(nodes)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return RedisCluster(nodes, tls_ports)


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, as Redis requires."""
    for _ in range(100):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                bus.bind((HOST, port + 10000))
            except OSError:
                continue
        return port
    raise ServerError("no free port pair for a cluster node")


def wait_cluster_ok(nodes: Sequence[Server]) -> None:
    """Every node says cluster_state:ok and knows every other node."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        ready = 0
        for node in nodes:
            client = redis.Redis(host=node.host, port=node.port, socket_timeout=2)
            try:
                info = client.cluster("INFO")
                nodes_seen = client.cluster("NODES")
                ready += info.get("cluster_state") == "ok" and len(nodes_seen) == len(nodes)
            except redis.exceptions.RedisError:
                pass
            finally:
                client.close()
        if ready == len(nodes):
            return
        time.sleep(0.1)  # gossip settles within a few node-timeout ticks
    raise ServerError(f"cluster on {[n.port for n in nodes]} never reached cluster_state:ok")


SENTINEL_SERVICE = "cwmaster"


@dataclass
class RedisSentinel:
    """A throwaway Sentinel setup: one master, one replica, and sentinels watching them."""

    master: Server
    replica: Server
    sentinels: list[Server]
    service_name: str = SENTINEL_SERVICE
    password: str | None = None  # the sentinels' requirepass

    def sentinel_client(self, sentinel: Server) -> redis.Redis:
        return redis.Redis(host=sentinel.host, port=sentinel.port, password=self.password)

    @property
    def seeds(self) -> list[str]:
        return [f"{s.host}:{s.port}" for s in self.sentinels]

    def master_address(self) -> tuple[str, int]:
        """Where the sentinels say the master is now."""
        client = self.sentinel_client(self.sentinels[0])
        try:
            address = client.sentinel_get_master_addr_by_name(self.service_name)
        finally:
            client.close()
        if not isinstance(address, tuple):
            raise ServerError(f"sentinels do not know {self.service_name}")
        host, port = address
        return host.decode() if isinstance(host, bytes) else str(host), int(port)

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.master):
            server.stop()


def start_redis_sentinel(
    base_dir: Path, sentinels: int = 1, password: str | None = None
) -> RedisSentinel:
    """Master, replica (synced), and `sentinels` sentinels that have seen the replica.

    Quorum 1 and a one-second down-after, so failovers in tests take seconds.
    `password`: the sentinels' own requirepass (the master and replica have none).
    """
    base_dir = base_dir.resolve()
    started: list[Server] = []
    try:
        master = start_redis(base_dir / "master")
        started.append(master)
        replica = start_redis(
            base_dir / "replica", extra_args=["--replicaof", master.host, str(master.port)]
        )
        started.append(replica)
        watchers = []
        for i in range(sentinels):
            watchers.append(_start_sentinel(base_dir / f"sentinel{i}", master, password))
            started.append(watchers[-1])
        setup = RedisSentinel(master, replica, watchers, password=password)
        _wait_sentinel_ready(setup)
    except BaseException:
        for server in started:
            server.stop()
        raise
    return setup


def _start_sentinel(base_dir: Path, master: Server, password: str | None) -> Server:
    base_dir.mkdir(parents=True, exist_ok=True)
    log = base_dir / "sentinel.log"

    def start(port: int) -> Server:
        conf = base_dir / "sentinel.conf"  # sentinel rewrites its own config file
        conf.write_text(
            f"port {port}\nbind {HOST}\ndir {base_dir}\n"
            f"sentinel monitor {SENTINEL_SERVICE} {master.host} {master.port} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 10000\n"
            + (f'requirepass "{password}"\n' if password else "")
        )
        server = Server(
            kind="redis",
            host=HOST,
            port=port,
            base_dir=base_dir,
            argv=[_which("redis-server"), str(conf), "--sentinel", "--logfile", str(log)],
            log=log,
            url=f"redis://{HOST}:{port}",
        )
        server.start()
        return server

    return _start_on_port(None, start)


def _wait_sentinel_ready(setup: RedisSentinel) -> None:
    """The replica is in sync and every sentinel lists it: a failover can then succeed."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        ok = True
        master = redis.Redis(host=setup.master.host, port=setup.master.port)
        try:
            info = master.info("replication")
            ok = any(
                isinstance(v, dict) and v.get("state") == "online"
                for k, v in info.items()
                if k.startswith("slave")
            )
            for s in setup.sentinels:
                client = setup.sentinel_client(s)
                try:
                    ok = ok and bool(client.sentinel_slaves(setup.service_name))
                finally:
                    client.close()
        except redis.exceptions.RedisError:
            ok = False
        finally:
            master.close()
        if ok:
            return
        time.sleep(0.2)  # replication handshake and sentinel discovery
    raise ServerError("sentinel setup never saw its replica in sync")


def delete_prefix(client: redis.Redis, prefix: str, batch: int = 1000) -> int:
    """Delete every key under `prefix:` with SCAN; never FLUSHDB, the Redis may be shared."""
    deleted = 0
    pending: list[bytes | str] = []
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + ":*"  # glob-escape the prefix
    for key in client.scan_iter(match=pattern, count=batch):
        pending.append(key)
        if len(pending) >= batch:
            deleted += int(client.delete(*pending))
            pending.clear()
    if pending:
        deleted += int(client.delete(*pending))
    return deleted


# --- CLI -----------------------------------------------------------------------------------

_EXPORTS = {"mariadb": "CACHEWARM_TEST_MYSQL_URL", "redis": "CACHEWARM_TEST_REDIS_URL"}
_BINARIES = {"mariadb": "mariadbd", "redis": "redis-server"}


def _load_state(directory: Path) -> list[Server]:
    path = directory / STATE_FILE
    if not path.exists():
        return []
    return [Server.from_json(item) for item in json.loads(path.read_text())]


def _is_ours(server: Server) -> bool:
    """Guard against signalling an unrelated process that reused a recorded pid."""
    return (
        server.pid is not None
        and _pid_alive(server.pid)
        and _BINARIES[server.kind] in _pid_cmdline(server.pid)
    )


def _print_exports(servers: list[Server]) -> None:
    for server in servers:
        print(f"export {_EXPORTS[server.kind]}={shlex.quote(server.url)}")


def cmd_up(directory: Path) -> int:
    """Start both servers detached (or reuse running ones) and print export lines."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    running = [s for s in _load_state(directory) if _is_ours(s)]
    if {s.kind for s in running} == {"mariadb", "redis"}:
        _print_exports(running)
        return 0
    for server in running:
        server.stop()
    started: list[Server] = []
    try:
        started.append(start_mariadb(directory / "mariadb"))
        started.append(start_redis(directory / "redis"))
    except BaseException:
        for server in started:
            server.stop()
        raise
    (directory / STATE_FILE).write_text(json.dumps([s.to_json() for s in started], indent=2))
    for server in started:
        # Forget the Popen handle: the servers are meant to outlive us.
        server.process = None
    _print_exports(started)
    return 0


def cmd_down(directory: Path) -> int:
    """Stop whatever `up` started in directory; a no-op if nothing is running."""
    directory = directory.resolve()
    for server in _load_state(directory):
        if _is_ours(server):
            server.stop()
            print(f"stopped {server.kind} (pid {server.pid}, port {server.port})", file=sys.stderr)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for `python scripts/servers.py up|down --dir DIR`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, required=True, help="directory for data and pids")
    args = parser.parse_args(argv)
    try:
        return cmd_up(args.dir) if args.command == "up" else cmd_down(args.dir)
    except ServerError as exc:
        print(f"servers.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
