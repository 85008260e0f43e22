"""Real servers for the test session: a redis-server and a PostgreSQL cluster on free loopback ports.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) the cluster is initialised and
run as the unprivileged ``nobody`` user in a directory that user owns. Missing binaries fail loudly with
the install command; they are never a reason to skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass


class ServerUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerUnavailable(f"{what} exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise ServerUnavailable(f"{what} did not listen on port {port} within {timeout}s")


def find_binary(name: str, extra_globs: tuple[str, ...] = ()) -> str:
    path = shutil.which(name)
    if path:
        return path
    for pattern in extra_globs:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[-1]
    raise ServerUnavailable(name)


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    workdir: str
    extra: tuple[str, ...] = ()
    """Arguments the server was started with beyond the common ones (a cluster node's), kept on restart."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same port (data is not persisted)."""
        self.stop()
        self.proc = _spawn_redis(self.port, self.workdir, *self.extra)


def _spawn_redis(port: int, workdir: str, *extra: str) -> subprocess.Popen[bytes]:
    try:
        binary = find_binary("redis-server")
    except ServerUnavailable:
        raise ServerUnavailable(
            "redis-server is not installed; install it with `apt-get install -y redis-server`"
        ) from None
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    _wait_port(port, proc, "redis-server")
    return proc


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    workdir = tempfile.mkdtemp(prefix="asyncsched-redis-")
    port = free_port()
    server = RedisServer(port, _spawn_redis(port, workdir), workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class SentinelSetup:
    """A master, one replica and one Sentinel monitoring them as ``mymaster`` (quorum 1).

    The master refuses writes without a connected replica (``min-replicas-to-write 1``): after a failover
    the old master, still alive, refuses writes instead of acknowledging ones its demotion will discard
    (the Redis setting that makes a failover lose nothing acknowledged). The replica has no such guard, so
    that once promoted, alone until the old master follows it, it takes writes at once.
    """

    master: RedisServer
    replica: RedisServer
    sentinel_port: int
    sentinel: subprocess.Popen[bytes]
    service: str = "mymaster"

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.service}/0"

    def master_port(self) -> int:
        import redis as syncredis

        with syncredis.Redis(port=self.sentinel_port) as client:
            _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(port)

    def ready(self) -> bool:
        """The master takes writes (its replica is synced and acknowledging) and the Sentinel sees the
        replica as a healthy promotion candidate."""
        import redis as syncredis
        from redis.exceptions import ResponseError

        with syncredis.Redis(port=self.sentinel_port, decode_responses=True) as client:
            replicas = client.execute_command("SENTINEL", "REPLICAS", self.service)
        info = [dict(zip(r[::2], r[1::2], strict=True)) if isinstance(r, list) else r for r in replicas]
        if not any(r.get("flags") == "slave" and r.get("master-link-status") == "ok" for r in info):
            return False
        with syncredis.Redis(port=self.master_port()) as master:
            try:
                master.set("asyncsched:sentinel-probe", 1)
            except ResponseError:  # NOREPLICAS until the replica's first acknowledgement
                return False
            master.delete("asyncsched:sentinel-probe")
        return True

    def failover(self, timeout: float = 30.0) -> int:
        """``SENTINEL FAILOVER``; returns the new master's port once the Sentinel names it and it accepts
        writes (the old master is demoted by the Sentinel later, in its own time)."""
        import redis as syncredis

        old = self.master_port()
        with syncredis.Redis(port=self.sentinel_port) as client:
            client.execute_command("SENTINEL", "FAILOVER", self.service)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.master_port()
            if new != old:
                with syncredis.Redis(port=new) as master:
                    if master.info("replication")["role"] == "master":
                        return new
            time.sleep(0.05)
        raise ServerUnavailable(f"Sentinel failover of {self.service} did not complete in {timeout}s")


@contextlib.contextmanager
def sentinel_setup() -> Iterator[SentinelSetup]:
    """Start a master, a replica and a Sentinel on free ports; wait until the Sentinel sees the replica."""

    workdir = tempfile.mkdtemp(prefix="asyncsched-sentinel-")
    guard = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")
    servers: list[RedisServer] = []
    sentinel: subprocess.Popen[bytes] | None = None
    try:
        mport = free_port()
        os.mkdir(mdir := os.path.join(workdir, "master"))
        servers.append(RedisServer(mport, _spawn_redis(mport, mdir, *guard), mdir))
        rport = free_port()
        os.mkdir(rdir := os.path.join(workdir, "replica"))
        replica = _spawn_redis(rport, rdir, "--replicaof", "127.0.0.1", str(mport))
        servers.append(RedisServer(rport, replica, rdir))
        sport = free_port()
        conf = os.path.join(workdir, "sentinel.conf")
        with open(conf, "w") as fh:
            fh.write(
                f"port {sport}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor mymaster 127.0.0.1 {mport} 1\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
                "sentinel failover-timeout mymaster 10000\n"
            )
        sentinel = subprocess.Popen(
            [find_binary("redis-server"), conf, "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        _wait_port(sport, sentinel, "redis-server --sentinel")
        setup = SentinelSetup(servers[0], servers[1], sport, sentinel)
        deadline = time.monotonic() + 30
        while not setup.ready():
            if time.monotonic() > deadline:
                raise ServerUnavailable("the Sentinel setup was not ready (replica synced, seen) within 30s")
            time.sleep(0.1)
        yield setup
    finally:
        if sentinel is not None and sentinel.poll() is None:
            sentinel.terminate()
            sentinel.wait(10)
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class PostgresServer:
    port: int
    datadir: str
    user: str | None
    pg_ctl: str

    @property
    def dsn(self) -> str:
        return f"postgresql+asyncpg://asyncsched@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://asyncsched@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [self.pg_ctl, "-D", self.datadir, "-w", "-t", "60", *args],
            check=True,
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._ctl("-o", opts, "-l", os.path.join(self.datadir, "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("-m", mode, "stop")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    globs = ("/usr/lib/postgresql/*/bin/{}",)
    try:
        initdb = find_binary("initdb", tuple(g.format("initdb") for g in globs))
        pg_ctl = find_binary("pg_ctl", tuple(g.format("pg_ctl") for g in globs))
    except ServerUnavailable:
        raise ServerUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) are missing; install them with "
            "`apt-get install -y postgresql`"
        ) from None
    user = "nobody" if os.geteuid() == 0 else None
    datadir = tempfile.mkdtemp(prefix="asyncsched-pg-")
    if user:
        shutil.chown(datadir, user=user)
    subprocess.run(
        [initdb, "-D", datadir, "-U", "asyncsched", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        user=user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = PostgresServer(free_port(), datadir, user, pg_ctl)
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(datadir, ignore_errors=True)


@dataclass
class ClusterSetup:
    """A Redis Cluster of three masters and three replicas on free loopback ports (one slot range each)."""

    nodes: list[RedisServer]
    workdir: str

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def _info(self) -> list[tuple[int, str, str]]:
        """``(port, role, master node id)`` of every node still running."""
        import redis as syncredis

        rows = []
        for node in self.nodes:
            if node.proc.poll() is not None:
                continue
            with syncredis.Redis(port=node.port, decode_responses=True) as client:
                for line in client.execute_command("CLUSTER", "NODES").splitlines():
                    fields = line.split()
                    if "myself" in fields[2]:
                        rows.append((node.port, "master" if "master" in fields[2] else "replica", fields[3]))
        return rows

    def masters(self) -> list[int]:
        """Ports of the nodes that are masters now."""
        return [port for port, role, _ in self._info() if role == "master"]

    def replicas(self) -> list[int]:
        """Ports of the nodes that are replicas now."""
        return [port for port, role, _ in self._info() if role == "replica"]

    def ready(self) -> bool:
        """Every running node says the cluster is ``ok`` and every replica's link to its master is up."""
        import redis as syncredis

        for node in self.nodes:
            if node.proc.poll() is not None:
                continue
            with syncredis.Redis(port=node.port, decode_responses=True) as client:
                if "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                    return False
                info = client.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"the Redis Cluster was not ready within {timeout}s")
            time.sleep(0.05)

    def flush(self) -> None:
        """FLUSHALL on every master (replicas follow)."""
        import redis as syncredis

        for port in self.masters():
            with syncredis.Redis(port=port) as client:
                client.flushall()

    def replica_for(self, key: str) -> int:
        """Port of a replica of the master that serves ``key``'s hash slot."""
        import redis as syncredis

        with syncredis.Redis(port=self.masters()[0], decode_responses=True) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            rows = [line.split() for line in client.execute_command("CLUSTER", "NODES").splitlines()]
        owner = None
        for row in rows:
            for part in row[8:]:
                start, _, end = part.partition("-")
                if "[" not in part and int(start) <= slot <= int(end or start):
                    owner = int(row[1].split("@")[0].rsplit(":", 1)[1])
        if owner is not None:  # the master knows its replicas at once; other nodes learn them by gossip
            with syncredis.Redis(port=owner, decode_responses=True) as client:
                info = client.info("replication")
            if "slave0" in info:
                return int(info["slave0"]["port"])
        raise ServerUnavailable(f"no replica serves the slot of {key!r}")

    def failover(self, replica: int | None = None, timeout: float = 30.0) -> int:
        """``CLUSTER FAILOVER`` on a replica (the first one, unless given); returns its port once it is a
        master that every running node knows as such."""
        import redis as syncredis

        port = replica if replica is not None else self.replicas()[0]
        deadline = time.monotonic() + timeout
        asked = 0.0
        while time.monotonic() < deadline:
            if port in self.masters() and self.ready():
                return port
            if time.monotonic() - asked > 2.0:  # a manual failover can stall under load: ask again
                with syncredis.Redis(port=port) as client:
                    client.execute_command("CLUSTER", "FAILOVER")
                asked = time.monotonic()
            time.sleep(0.05)
        raise ServerUnavailable(f"CLUSTER FAILOVER on {port} did not complete in {timeout}s")

    def wipe(self, port: int) -> None:
        """Restart the master on ``port`` without its data (no persistence: it comes back empty, still the
        master of its slots, and its replica resyncs to the empty data set) and wait until the cluster is
        ready again. Quick, so that no failover happens meanwhile (node timeout 5 s)."""
        node = next(n for n in self.nodes if n.port == port)
        node.restart()
        self.wait_ready()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def cluster_setup() -> Iterator[ClusterSetup]:
    """Start six cluster-enabled redis-servers, join them with ``redis-cli --cluster create`` (one replica
    per master) and wait until every node reports the cluster ``ok`` and every replica is in sync."""
    workdir = tempfile.mkdtemp(prefix="asyncsched-cluster-")
    nodes: list[RedisServer] = []
    setup = ClusterSetup(nodes, workdir)
    try:
        cli = find_binary("redis-cli")
        for k in range(6):
            port = free_port()
            os.mkdir(ndir := os.path.join(workdir, f"node{k}"))
            extra: tuple[str, ...] = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
            extra += ("--cluster-node-timeout", "5000", "--cluster-port", str(free_port()))  # not port+10000
            extra += ("--repl-diskless-sync-delay", "0")  # replicas sync at once, not after 5 s
            nodes.append(RedisServer(port, _spawn_redis(port, ndir, *extra), ndir, extra))
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        setup.wait_ready()
        yield setup
    finally:
        setup.stop()
        shutil.rmtree(workdir, ignore_errors=True)
