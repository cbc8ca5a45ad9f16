"""Redis Cluster: three nodes over one Redis vs over a three-primary Redis Cluster.

Both setups are three ``hubbub serve`` nodes with :data:`CHANNELS` channels of
namespace ``bench`` (history 100, so every publication is one pass through the
publish script) spread over all slots, one lean TCP subscriber per channel on
each node (every publication is delivered three times, once per node), and one
TCP publisher per channel (:class:`benchmarks.cluster.Pumper`, :data:`DEPTH`
publishes in flight) spread over the nodes: a closed loop at the rate the
servers sustain, warmed up, then measured for a short window.

- ``3 nodes + Redis``: one ``redis-server`` (``--redis redis://``);
- ``3 nodes + Redis Cluster``: three ``redis-server --cluster-enabled``, joined
  by ``redis-cli --cluster create --cluster-replicas 0`` (no replicas, so both
  setups do the same Redis work per publication), nodes given
  ``--redis redis+cluster://`` and nothing else.

Figures: publications/s (ok replies), deliveries/s, CPU per publication of the
nodes and of Redis (every ``redis-server``, and the busiest one), and, summed
over the Redis servers from ``INFO commandstats``, PUBLISH, SPUBLISH and EVALSHA
per publication (PUBLISH or SPUBLISH must stay 1).

Cores: this machine has two, shared by everything. Every node and every
``redis-server`` is pinned to core 0 and the generator to core 1, so both
setups are bounded by the one server core: publications/s compares what the
servers spend per publication, not what three Redis cores could do. What a
cluster divides is the Redis CPU per publication: each primary does about a
third of it, so on machines with a core per primary the Redis side scales
with the primaries (the busiest primary's share says how evenly).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import os
import random
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import procstat
from benchmarks.cluster import CONFIG, Pumper, _delta, command_calls, pin_threads
from benchmarks.fanout import open_sessions
from benchmarks.launcher import NodeProc, RedisProc, start_node, start_redis
from benchmarks.publisher import payload
from hubbub.client.lean import LeanSession

NODES = 3
PRIMARIES = 3
#: Channels (one publisher and one subscriber per node each), over all slots.
CHANNELS = 48
#: Publishes each publisher keeps in flight.
DEPTH = 8


class Counter:
    """Publications received by every subscriber session of the run."""

    deliveries = 0

    @staticmethod
    def on_pub(channel: str, data: Any, now: float) -> None:
        Counter.deliveries += 1


@dataclass
class HaRun:
    """One setup, measured."""

    setup: str
    redis_servers: int
    seconds: float
    publications_per_s: float
    deliveries_per_s: float
    errors: int
    nodes_cpu_pct: float
    redis_cpu_pct: float
    busiest_redis_cpu_pct: float
    generator_cpu_pct: float
    other_cpu_pct: float
    nodes_us_per_publication: float
    redis_us_per_publication: float
    busiest_redis_us_per_publication: float
    publish_per_publication: float
    spublish_per_publication: float
    evalsha_per_publication: float
    commands: dict[str, int]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, below the ephemeral range."""
    for _ in range(1000):
        port = random.randrange(12000, 22000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def start_cluster() -> list[RedisProc]:
    """Three primaries, no replicas, joined with ``redis-cli --cluster create``."""
    servers = []
    try:
        for _ in range(PRIMARIES):
            server = RedisProc(
                cluster_port(),
                tempfile.mkdtemp(prefix="hubbub-bench-redis-"),
                args=("--cluster-enabled", "yes"),
            )
            server.start(die_with_parent=True)
            servers.append(server)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all(_cluster_ok(s.port) for s in servers):
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark cluster did not become ok")
            time.sleep(0.1)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def _cluster_ok(port: int) -> bool:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "CLUSTER", "INFO"], capture_output=True, text=True
    )
    return "cluster_state:ok" in out.stdout


def channel_names() -> list[str]:
    """:data:`CHANNELS` names whose slots are spread evenly over the slot space."""
    names: list[str] = []
    step = 16384 // CHANNELS
    i = 0
    for band in range(CHANNELS):
        while True:
            i += 1
            name = f"bench:ha-{i}"
            if binascii.crc_hqx(name.encode(), 0) % 16384 // step == band:  # its slot
                names.append(name)
                break
    return names


async def run_setup(
    name: str, redis: list[RedisProc], url: str, *, warm: float, measure: float, log: Any
) -> HaRun:
    """Start the nodes on ``url``, subscribe, pump, measure; stop the nodes."""
    nodes: list[NodeProc] = []
    sessions: list[LeanSession] = []
    try:
        nodes += await asyncio.gather(
            *(
                asyncio.to_thread(start_node, CONFIG, redis=[url], die_with_parent=True)
                for _ in range(NODES)
            )
        )
        for pid in (*(n.pid for n in nodes), *(r.pid for r in redis)):
            pin_threads(pid, procstat.SERVER_CORE)
        channels = channel_names()
        subscribers = [
            LeanSession([node.tcp_url], reconnect=False, name="bench", on_pub=Counter.on_pub)
            for node in nodes
            for _ in channels
        ]
        sessions += subscribers
        for i, session in enumerate(subscribers):  # node by node, a channel each
            await open_sessions([session], channel=channels[i % len(channels)])
        data = payload(0, 0, 0.0)
        pumpers = [
            Pumper(nodes[i % NODES].tcp_url, channel, DEPTH, data)
            for i, channel in enumerate(channels)
        ]
        sessions += [p.session for p in pumpers]
        await open_sessions([p.session for p in pumpers])
        # Commands are counted from before the first publication to after the
        # last reply, so they divide by exactly the publications made.
        calls0 = [await command_calls(r.port) for r in redis]
        for pumper in pumpers:
            pumper.start()
        await asyncio.sleep(warm)
        meters = {
            "nodes": procstat.CpuMeter(tuple(n.pid for n in nodes)),
            "gen": procstat.CpuMeter((os.getpid(),)),
            **{f"redis{i}": procstat.CpuMeter((r.pid,)) for i, r in enumerate(redis)},
        }
        now = time.monotonic()
        for meter in meters.values():
            meter.start(now)
        busy0 = procstat.machine_busy_seconds()
        ok0, err0 = sum(p.ok for p in pumpers), sum(p.errors for p in pumpers)
        dlv0 = Counter.deliveries
        await asyncio.sleep(measure)
        ok1, err1 = sum(p.ok for p in pumpers), sum(p.errors for p in pumpers)
        dlv1 = Counter.deliveries
        now = time.monotonic()
        cpu = {k: m.stop(now)[0] for k, m in meters.items()}
        wall = now - meters["nodes"].wall0
        other = procstat.machine_busy_seconds() - busy0 - sum(cpu.values())
        for pumper in pumpers:
            pumper.running = False
        async with asyncio.timeout(10):
            while any(p.in_flight for p in pumpers):
                await asyncio.sleep(0.01)
        made = max(1, sum(p.ok + p.errors for p in pumpers))
        commands: dict[str, int] = {}
        for server, before in zip(redis, calls0, strict=True):
            for key, value in _delta(await command_calls(server.port), before).items():
                commands[key] = commands.get(key, 0) + value
    finally:
        for session in sessions:
            await session.close()
        for node in nodes:
            node.stop()
    done = ok1 - ok0
    redis_cpu = [cpu[f"redis{i}"] for i in range(len(redis))]
    per_pub = 1e6 / done if done else float("nan")
    result = HaRun(
        setup=name,
        redis_servers=len(redis),
        seconds=wall,
        publications_per_s=done / wall,
        deliveries_per_s=(dlv1 - dlv0) / wall,
        errors=err1 - err0,
        nodes_cpu_pct=100.0 * cpu["nodes"] / wall,
        redis_cpu_pct=100.0 * sum(redis_cpu) / wall,
        busiest_redis_cpu_pct=100.0 * max(redis_cpu) / wall,
        generator_cpu_pct=100.0 * cpu["gen"] / wall,
        other_cpu_pct=max(0.0, 100.0 * other / wall),
        nodes_us_per_publication=cpu["nodes"] * per_pub,
        redis_us_per_publication=sum(redis_cpu) * per_pub,
        busiest_redis_us_per_publication=max(redis_cpu) * per_pub,
        publish_per_publication=commands.get("publish", 0) / made,
        spublish_per_publication=commands.get("spublish", 0) / made,
        evalsha_per_publication=commands.get("evalsha", 0) / made,
        commands=commands,
    )
    log(
        f"rediscluster: {name}: {result.publications_per_s:,.0f} publications/s, "
        f"{result.deliveries_per_s:,.0f} deliveries/s, redis {result.redis_us_per_publication:.1f}"
        f" µs/publication, PUBLISH {result.publish_per_publication:.2f} SPUBLISH "
        f"{result.spublish_per_publication:.2f} per publication"
    )
    return result


async def run_rediscluster(*, warm: float, measure: float, log: Any = print) -> dict[str, Any]:
    """One Redis, then the cluster; each started, measured and stopped in turn."""
    out: dict[str, Any] = {
        "channels": CHANNELS,
        "nodes": NODES,
        "depth": DEPTH,
        "pinning": "every node and redis-server (all threads) on core 0, the generator on core 1",
        "runs": [],
    }
    single = await asyncio.to_thread(start_redis, die_with_parent=True)
    try:
        out["runs"].append(
            await run_setup(
                f"{NODES} nodes + Redis", [single], single.url, warm=warm, measure=measure, log=log
            )
        )
    finally:
        single.stop()
    servers = await asyncio.to_thread(start_cluster)
    try:
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
        name = f"{NODES} nodes + Redis Cluster ({PRIMARIES} primaries)"
        out["runs"].append(await run_setup(name, servers, url, warm=warm, measure=measure, log=log))
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
    return out


def as_json(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "runs": [asdict(r) for r in data.get("runs", [])]}
