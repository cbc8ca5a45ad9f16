"""Highly available Redis for the tests, as real processes on loopback ports:
a Sentinel group (one primary, two replicas, three sentinels) and a Redis
Cluster (three primaries, three replicas, made by ``redis-cli --cluster
create``). Timeouts are tuned low so a failover takes a second or two.

Both are expensive to start (a few seconds), so the fixtures that hold them
(``tests/conftest.py``) are per session; a test that kills a server brings the
group back to full strength before it returns (:meth:`SentinelGroup.heal`,
:meth:`ClusterGroup.heal`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.crc import key_slot

from tests.procs import RedisProc, free_port

MASTER = "hubbub"
#: Sentinel: a primary silent this long is subjectively down.
DOWN_AFTER_MS = 800
#: Redis Cluster: a node silent this long fails over. Not lower: on a loaded
#: machine (two cores shared by the suite) a busy node would look failed for a
#: moment (CLUSTERDOWN in the middle of a reshard).
NODE_TIMEOUT_MS = 2000
#: A replica's full sync starts at once (Redis waits 5 s for more replicas by default).
SYNC_NOW = ("--repl-diskless-sync-delay", "0")


def command(port: int, *args: str, timeout: float = 2.0) -> str:
    """One command to a Redis (or sentinel) on ``port`` through ``redis-cli``;
    its output, or "" when it could not run."""
    try:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ""
    return out.stdout.strip()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True
    except OSError:
        return False


@dataclass
class SentinelProc:
    port: int
    dir: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self, master_port: int) -> None:
        exe = shutil.which("redis-sentinel")
        if exe is None:
            raise RuntimeError("redis-sentinel is not installed: run `make install`")
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as fh:  # Sentinel rewrites its own file: one each
            fh.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} 3000\n"
                f"sentinel parallel-syncs {MASTER} 2\n"
            )
        self.proc = subprocess.Popen(
            [exe, conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: _listening(self.port), f"sentinel on {self.port}", 10.0)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class SentinelGroup:
    """One primary, two replicas, three sentinels watching master ``hubbub``."""

    servers: list[RedisProc] = field(default_factory=list)
    sentinels: list[SentinelProc] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}"

    def primary_port(self) -> int:
        """The primary as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            out = command(sentinel.port, "SENTINEL", "get-master-addr-by-name", MASTER).split()
            if len(out) == 2:
                return int(out[1])
        raise RuntimeError("no sentinel names a primary")

    def primary(self) -> RedisProc:
        port = self.primary_port()
        return next(s for s in self.servers if s.port == port)

    def start(self) -> None:
        primary = _server(*SYNC_NOW)
        self.servers.append(primary)
        for _ in range(2):
            self.servers.append(_server(*SYNC_NOW, "--replicaof", "127.0.0.1", str(primary.port)))
        for _ in range(3):
            sentinel = SentinelProc(free_port(), tempfile.mkdtemp(prefix="hubbub-sentinel-"))
            sentinel.start(primary.port)
            self.sentinels.append(sentinel)
        self.wait_settled()

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Until every sentinel names one live primary, sees both replicas up and
        knows the two other sentinels (so the next failover can be voted)."""

        def settled() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                info = command(sentinel.port, "SENTINEL", "master", MASTER).split("\n")
                fields = dict(zip(info[::2], info[1::2], strict=False))
                if fields.get("flags") != "master" or fields.get("num-slaves") != "2":
                    return False
                if fields.get("num-other-sentinels") != "2":
                    return False
                replicas = command(sentinel.port, "SENTINEL", "replicas", MASTER)
                if replicas.count("s_down") or replicas.count("\nslave\n") < 2:
                    return False
                ports.add(fields.get("port"))
            if len(ports) != 1 or not _listening(int(ports.pop() or 0)):
                return False
            primary = self.primary_port()
            if not all(_synced(s.port) for s in self.servers if s.port != primary):
                return False
            return _acknowledged(primary, "hubbub-test-settled", len(self.servers) - 1)

        wait_until(settled, "the sentinel group to settle", timeout)

    def heal(self) -> None:
        """Restart every killed server (the sentinels make it a replica) and wait."""
        for server in self.servers:
            if server.proc is None or server.proc.poll() is not None:
                server.start()
        self.wait_settled()

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
            shutil.rmtree(sentinel.dir, ignore_errors=True)
        for server in self.servers:
            server.stop()


def _synced(port: int) -> bool:
    """A replica whose link to its primary is up (the first full sync is done)."""
    return "master_link_status:up" in command(port, "INFO", "replication")


def _acknowledged(port: int, key: str, replicas: int) -> bool:
    """A write to the primary on ``port`` is acknowledged by ``replicas``
    replicas (``WAIT``, on the write's connection). After a full sync Redis
    starts a replica's command stream only on its first ``REPLCONF ACK``
    (sent once a second), so until then WAIT cannot succeed and the engine
    refuses publications ("not replicated")."""
    try:
        out = subprocess.run(
            ["redis-cli", "-p", str(port)],
            input=f"SET {key} 1\nWAIT {replicas} 1000\n",
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    lines = out.stdout.split()
    return len(lines) == 2 and lines[1].isdigit() and int(lines[1]) >= replicas


def _server(*args: str, port: int | None = None) -> RedisProc:
    server = RedisProc(port or free_port(), tempfile.mkdtemp(prefix="hubbub-redis-"), args=args)
    server.start()
    return server


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, below the
    ephemeral range (so neither is handed to an outgoing connection)."""
    for _ in range(1000):
        port = random.randrange(12000, 22000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@functools.cache
def _key_in(slot: int) -> str:
    """A key of ``slot``."""
    return next(
        f"hubbub-test-{i}"
        for i in range(1_000_000)
        if key_slot(f"hubbub-test-{i}".encode()) == slot
    )


@dataclass(frozen=True)
class ClusterNode:
    """A primary as ``CLUSTER NODES`` shows it."""

    id: str
    port: int
    slots: list[tuple[int, int]]


def _cluster_tool(*args: str) -> None:
    """``redis-cli --cluster ARGS --cluster-yes``; raises with its output on failure."""
    out = subprocess.run(
        ["redis-cli", "--cluster", *args, "--cluster-yes"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"redis-cli --cluster {args[0]} failed:\n{out.stdout}{out.stderr}")


@dataclass
class ClusterGroup:
    """Three primaries and three replicas in one Redis Cluster."""

    servers: list[RedisProc] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:3])
        return f"redis+cluster://{hosts}"

    def start(self) -> None:
        for _ in range(6):
            server = _server(
                *SYNC_NOW,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",  # in the server's own --dir
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--cluster-replica-validity-factor",
                "0",
                "--cluster-require-full-coverage",
                "no",
                port=cluster_port(),
            )
            self.servers.append(server)
        _cluster_tool(
            "create", *(f"127.0.0.1:{s.port}" for s in self.servers), "--cluster-replicas", "1"
        )
        self.wait_ok()

    def primaries(self) -> list[RedisProc]:
        return [s for s in self.live() if command(s.port, "ROLE").split("\n")[0] == "master"]

    def primary_nodes(self) -> list[ClusterNode]:
        """The primaries that own slots, by port, from ``CLUSTER NODES`` of a live node."""
        out = []
        for line in command(self.live()[0].port, "CLUSTER", "NODES").splitlines():
            row = line.split()
            ranges = [r.partition("-") for r in row[8:] if not r.startswith("[")]
            if "master" in row[2] and "fail" not in row[2] and ranges:
                port = int(row[1].split("@")[0].rsplit(":", 1)[1])
                slots = [(int(a), int(b or a)) for a, _, b in ranges]
                out.append(ClusterNode(row[0], port, slots))
        return sorted(out, key=lambda n: n.port)

    def primary_ids(self) -> list[str]:
        return [n.id for n in self.primary_nodes()]

    def primary_ports(self) -> dict[str, int]:
        """Node id → port of the primaries that own slots."""
        return {n.id: n.port for n in self.primary_nodes()}

    def first_slot(self, node_id: str) -> int:
        """The lowest slot of a primary (the one ``reshard`` moves first)."""
        return min(first for first, _ in self._node(node_id).slots)

    def owner_of(self, slot: int) -> tuple[str, int]:
        """(node id, port) of the primary that owns ``slot``."""
        for node in self.primary_nodes():
            if any(first <= slot <= last for first, last in node.slots):
                return node.id, node.port
        raise LookupError(f"no primary owns slot {slot}")

    def _node(self, node_id: str) -> ClusterNode:
        return next(n for n in self.primary_nodes() if n.id == node_id)

    def reshard(self, source: str, target: str, slots: int, attempts: int = 3) -> None:
        """``redis-cli --cluster reshard``: move ``slots`` slots, keys and all.

        The tool refuses to start unless every node agrees on the slot map, and
        stops half-way on a ``CLUSTERDOWN`` (a node that looked failed for a
        moment on a loaded machine): it runs only on a settled cluster, and
        after a failure the slot left open is closed (``--cluster fix``) and
        what is still to move is moved again.
        """
        owned = self._slot_count(source)
        for attempt in range(attempts):
            self.wait_ok()
            left = slots - (owned - self._slot_count(source))
            if left <= 0:
                break
            address = f"127.0.0.1:{self.live()[0].port}"
            try:
                _cluster_tool(
                    "reshard", address, "--cluster-from", source, "--cluster-to", target,
                    "--cluster-slots", str(left),
                )  # fmt: skip
                break
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                with contextlib.suppress(RuntimeError):
                    self.wait_ok()
                    _cluster_tool("fix", address)
        self.wait_ok()

    def _slot_count(self, node_id: str) -> int:
        return sum(last - first + 1 for first, last in self._node(node_id).slots)

    @staticmethod
    def run(port: int, *args: str) -> str:
        return command(port, *args)

    def shard_channels(self, node_id: str) -> set[str]:
        """The sharded pub/sub channels subscribed on one primary."""
        return set(command(self._node(node_id).port, "PUBSUB", "SHARDCHANNELS").split())

    def live(self) -> list[RedisProc]:
        return [s for s in self.servers if s.proc is not None and s.proc.poll() is None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok with three primaries, each
        with a replica, and the same slot map."""

        def ok() -> bool:
            live = self.live()
            maps = set()
            for server in live:
                if "cluster_state:ok" not in command(server.port, "CLUSTER", "INFO"):
                    return False
                maps.add(command(server.port, "CLUSTER", "SLOTS"))
            roles = {s.port: command(s.port, "ROLE").split("\n")[0] for s in live}
            replicas = [port for port, role in roles.items() if role == "slave"]
            if len(maps) != 1 or len(replicas) != 3 or len(roles) != 6:
                return False
            if not all(_synced(port) for port in replicas):
                return False
            return all(
                _acknowledged(node.port, _key_in(node.slots[0][0]), 1)
                for node in self.primary_nodes()
            )

        wait_until(ok, "the cluster to be ok", timeout)

    def heal(self) -> None:
        """Restart every killed node (it rejoins as a replica) and wait."""
        for server in self.servers:
            if server.proc is None or server.proc.poll() is not None:
                # The nodes file is kept (it is the node's identity); the data is not.
                server.start()
        self.wait_ok()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
