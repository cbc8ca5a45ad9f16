"""Cluster: fan-out through Redis over 3 nodes, its baselines, publish throughput.

Three setups run side by side, each with N lean WebSocket subscribers of
channel ``bench:feed`` (namespace ``bench``, history 100) and one open-loop
publisher (:mod:`benchmarks.publisher`) on the first node:

- ``1 node``: the in-memory broker, the single-node path;
- ``1 node + Redis``: the same node with ``--redis``: the Redis hop alone;
- ``3 nodes + Redis``: the subscribers spread evenly over three nodes.

For each rate the three setups run one after the other, so the latency
difference is measured in one sitting. Figures as in :mod:`benchmarks.fanout`
(loss, p50/p99/max from the intended send time, deliveries/s), server CPU =
every node of the setup plus its ``redis-server`` (from ``/proc``), and Redis's
``INFO commandstats`` read before the publisher starts and after it ended:
PUBLISH and EVALSHA calls per publication. (Redis 7 counts the commands a Lua
script runs in their own ``cmdstat_*``: the script's PUBLISH is ``cmdstat_publish``.)

Publish throughput: N TCP connections to one node, each keeping ``DEPTH``
publishes with ids in flight on a channel of the same namespace without
subscribers (each a pass through the Lua script), N doubled until the ok
replies per second stop rising; the node's and Redis's CPU per publish say
which one is the limit.

Cores: there are two, so every node and every ``redis-server`` is pinned to
core 0 (all their threads) and the generator to core 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack

from benchmarks import procstat
from benchmarks.fanout import Subscriber, Tally, await_deliveries, delivery_figures
from benchmarks.launcher import (
    BENCH_CONFIG,
    ROOT,
    RedisServer,
    ServerProcess,
    die_with_parent,
)
from benchmarks.leanclient import TcpConn, open_many
from benchmarks.publisher import payload
from hubbub.protocol.codec import encode_msgpack
from hubbub.protocol.frames import encode_frame

CHANNEL = "bench:feed"
THROUGHPUT_CHANNEL = "bench:tp"
HISTORY_SIZE = 100
CONFIG = BENCH_CONFIG + f"\n[namespaces.bench]\nhistory_size = {HISTORY_SIZE}\n"
NODES = 3
#: Publishes with ids each throughput connection keeps in flight.
DEPTH = 32
#: Throughput connections, tried in this order until publishes/s stops rising.
LEVELS = (1, 2, 4, 8, 16, 32, 64, 128)
#: A level must beat the best so far by this factor to count as rising.
RISING = 1.05

_unpackb = msgpack.unpackb


def pin_threads(pid: int, core: int) -> None:
    """Pin every thread of ``pid`` to ``core`` (affinity is per thread)."""
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), {core})


def core_busy_seconds(core: int) -> float:
    """CPU seconds ``core`` has spent busy so far (its ``cpuN`` line of ``/proc/stat``,
    counted as :func:`benchmarks.procstat.machine_busy_seconds` counts the machine)."""
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith(f"cpu{core} "):
                user, nice, system, _idle, _iowait, irq, softirq, steal = (
                    int(v) for v in line.split()[1:9]
                )
                return (user + nice + system + irq + softirq + steal) / procstat.CLK_TCK
    raise RuntimeError(f"no cpu{core} in /proc/stat")


async def redis_info(port: int, section: str, timeout: float = 5.0) -> str:
    """The text of ``INFO <section>`` (an inline command, a bulk-string reply)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(f"INFO {section}\r\n".encode())
        head = await asyncio.wait_for(reader.readline(), timeout)
        if not head.startswith(b"$"):
            raise RuntimeError(f"INFO {section}: unexpected reply {head!r}")
        body = await asyncio.wait_for(reader.readexactly(int(head[1:]) + 2), timeout)
    finally:
        writer.close()
    return body.decode()


async def command_calls(port: int) -> dict[str, int]:
    """Calls per command so far, from ``INFO commandstats`` (``cmdstat_<name>:calls=N,...``)."""
    calls: dict[str, int] = {}
    for line in (await redis_info(port, "commandstats")).splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[len("cmdstat_") :].partition(":")
            fields = dict(kv.split("=", 1) for kv in rest.split(","))
            calls[name] = int(fields["calls"])
    return calls


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Calls made between two readings; our own INFO calls left out."""
    out = {k: v - before.get(k, 0) for k, v in after.items() if k != "info"}
    return {k: v for k, v in sorted(out.items()) if v}


@dataclass
class Setup:
    """Nodes (and maybe their Redis) with subscribers spread evenly over them."""

    name: str
    nodes: list[ServerProcess]
    redis: RedisServer | None
    tally: Tally = field(default_factory=Tally)
    subs: list[Subscriber] = field(default_factory=list)

    @property
    def server_pids(self) -> tuple[int, ...]:
        pids = [n.pid for n in self.nodes]
        return (*pids, self.redis.pid) if self.redis is not None else tuple(pids)

    def stop(self) -> None:
        for conn in self.subs:
            conn.close()
        for node in self.nodes:
            node.stop()
        if self.redis is not None:
            self.redis.stop()


async def start_setup(name: str, nodes: int, use_redis: bool) -> Setup:
    """Start Redis (maybe) and ``nodes`` nodes, every thread pinned to core 0."""
    redis = await asyncio.to_thread(RedisServer().start) if use_redis else None
    setup = Setup(name, [], redis)
    try:
        args: tuple[str, ...] = ("--redis", redis.url) if redis is not None else ()
        tag = f"{nodes}{'r' if use_redis else 'm'}"
        setup.nodes = [
            ServerProcess(CONFIG, args=(*args, "--node-id", f"bench-{tag}-{i}"))
            for i in range(nodes)
        ]
        await asyncio.gather(*(asyncio.to_thread(p.start) for p in setup.nodes))
        for pid in setup.server_pids:
            pin_threads(pid, procstat.SERVER_CORE)
    except BaseException:
        setup.stop()
        raise
    return setup


async def subscribe(setup: Setup, subscribers: int) -> None:
    """Open ``subscribers`` WebSocket subscribers of :data:`CHANNEL`, spread evenly."""
    nodes = setup.nodes
    for i, node in enumerate(nodes):
        count = subscribers // len(nodes) + (1 if i < subscribers % len(nodes) else 0)
        host, port = node.address("ws")

        def make(host: str = host, port: int = port) -> Subscriber:
            return Subscriber(host, port, CHANNEL, setup.tally)

        setup.subs += await open_many(make, host, port, count)  # type: ignore[arg-type]


@dataclass
class ClusterRun:
    """One setup at one rate."""

    setup: str
    nodes: int
    redis: bool
    subscribers: int
    rate: float
    offered: float
    seconds: float
    expected: int
    received: int
    loss: int
    loss_pct: float
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_us_per_delivery: float  # nodes + redis-server
    server_cpu_pct: float  # nodes + redis-server, share of one core (all on core 0)
    node_cpu_pct: list[float]  # each node
    redis_cpu_pct: float
    generator_cpu_pct: float
    client_bound: bool
    other_cpu_pct: float
    server_core_pct: float  # core 0 busy, by anyone: near 100 = the servers' core is full
    publications: int  # sent by the publisher while commandstats were counted
    commands: dict[str, int]  # Redis calls per command over those publications
    publish_per_publication: float
    evalsha_per_publication: float
    publisher: dict[str, Any] = field(default_factory=dict)
    disconnected: int = 0
    foreign: int = 0


async def _readline(stream: asyncio.StreamReader, timeout: float) -> str:
    line = await asyncio.wait_for(stream.readline(), timeout)
    if not line:
        raise RuntimeError("publisher exited early")
    return line.decode().strip()


async def run_rate(
    setup: Setup, *, run: int, rate: float, warmup: float, measure: float, drain: float = 3.0
) -> ClusterRun:
    """One setup at one rate: as :func:`benchmarks.fanout.run_rate`, CPU of every
    server process, and Redis commands counted over the whole publisher run."""
    subs, tally = setup.subs, setup.tally
    host, port = setup.nodes[0].address("tcp")
    warm_count, measure_count = int(warmup * rate), int(measure * rate)
    tally.reset(run, warm_count, warm_count + measure_count)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.publisher", host, str(port), CHANNEL,
        str(rate), str(warm_count + measure_count), str(run),
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    redis_port = setup.redis.port if setup.redis is not None else 0
    try:
        if await _readline(proc.stdout, 15) != "ready":
            raise RuntimeError("publisher did not get ready")
        calls0 = await command_calls(redis_port) if redis_port else {}
        t0 = time.monotonic() + 0.2
        proc.stdin.write(f"{t0!r}\n".encode())
        await proc.stdin.drain()
        gen = procstat.CpuMeter((os.getpid(), proc.pid))
        servers = [procstat.CpuMeter((pid,)) for pid in setup.server_pids]
        window_start = t0 + warm_count / rate
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        now = time.monotonic()
        for m in (gen, *servers):
            m.start(now)
        busy0 = procstat.machine_busy_seconds()
        core0 = core_busy_seconds(procstat.SERVER_CORE)
        total0 = tally.total
        window_end = window_start + measure_count / rate
        expected = measure_count * len(subs)
        await await_deliveries(tally, subs, window_end, expected, drain)
        now = time.monotonic()
        used = [m.stop(now)[0] for m in servers]
        gen_cpu, wall = gen.stop(now)
        other_cpu = procstat.machine_busy_seconds() - busy0 - sum(used) - gen_cpu
        core_cpu = core_busy_seconds(procstat.SERVER_CORE) - core0
        deliveries = tally.total - total0
        publisher = json.loads(await _readline(proc.stdout, 15))
        calls1 = await command_calls(redis_port) if redis_port else {}
        proc.stdin.write(b"exit\n")
        await proc.stdin.drain()
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    server_cpu = sum(used)
    commands = _delta(calls1, calls0)
    sent = int(publisher["sent"])
    n = len(setup.nodes)
    return ClusterRun(
        setup=setup.name,
        nodes=n,
        redis=setup.redis is not None,
        **delivery_figures(
            tally,
            subs,
            rate=rate,
            measure_count=measure_count,
            expected=expected,
            deliveries=deliveries,
            wall=wall,
            server_cpu=server_cpu,
            gen_cpu=gen_cpu,
            other_cpu=other_cpu,
        ),
        node_cpu_pct=[100.0 * c / wall for c in used[:n]],
        redis_cpu_pct=100.0 * used[n] / wall if setup.redis is not None else 0.0,
        server_core_pct=100.0 * core_cpu / wall,
        publications=sent,
        commands=commands,
        publish_per_publication=commands.get("publish", 0) / sent if redis_port else float("nan"),
        evalsha_per_publication=commands.get("evalsha", 0) / sent if redis_port else float("nan"),
        publisher=publisher,
    )


class Pumper(TcpConn):
    """A TCP publisher keeping ``depth`` publishes with ids in flight: each ok
    (or error) reply read lets another one go, written together per read."""

    def __init__(self, channel: str, depth: int, data: bytes) -> None:
        super().__init__(None)
        self.publish_channel, self.depth, self.data = channel, depth, data
        self.ok = self.errors = self.in_flight = 0
        self.next_id = 10
        self.running = False

    def start(self) -> None:
        self.running = True
        self._send(self.depth - self.in_flight)

    def _send(self, count: int) -> None:
        if count <= 0 or self.transport is None or self.transport.is_closing():
            return
        frames = []
        for _ in range(count):
            self.next_id += 1
            frames.append(
                encode_frame(
                    encode_msgpack(
                        {
                            "op": "publish",
                            "id": self.next_id,
                            "channel": self.publish_channel,
                            "data": self.data,
                        }
                    )
                )
            )
        self.in_flight += count
        self.transport.write(b"".join(frames))

    def on_message(self, payload: bytes, now: float) -> None:
        if not self.ready.done():
            super().on_message(payload, now)
            return
        message = _unpackb(payload)
        if "ok" in message:
            self.ok += 1
        elif "error" in message:
            self.errors += 1
        else:  # a push (ping)
            self.on_map(message, now)
            return
        self.in_flight -= 1

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.running:
            self._send(self.depth - self.in_flight)


@dataclass
class ThroughputLevel:
    """Publishes/s through the Lua script with ``connections`` publishers on one node."""

    connections: int
    depth: int
    seconds: float
    publishes_per_s: float
    errors: int
    node_cpu_pct: float  # the node published to
    redis_cpu_pct: float
    other_nodes_cpu_pct: float
    generator_cpu_pct: float
    other_cpu_pct: float
    node_us_per_publish: float
    redis_us_per_publish: float
    evalsha_per_publish: float
    publish_per_publish: float


async def run_throughput(
    setup: Setup, *, warm: float, measure: float, log: Any = print
) -> list[ThroughputLevel]:
    """Double the publisher connections to the setup's first node until publishes/s
    stops rising (two levels in a row not :data:`RISING` x the best)."""
    assert setup.redis is not None
    node, redis = setup.nodes[0], setup.redis
    host, port = node.address("tcp")
    data = payload(0, 0, 0.0)
    pumpers: list[Pumper] = []
    results: list[ThroughputLevel] = []
    best, stale = 0.0, 0
    try:
        for level in LEVELS:
            more = await open_many(
                lambda: Pumper(THROUGHPUT_CHANNEL, DEPTH, data), host, port, level - len(pumpers)
            )
            for conn in more:
                conn.start()  # type: ignore[attr-defined]
            pumpers += more  # type: ignore[arg-type]
            await asyncio.sleep(warm)
            meters = {
                "node": procstat.CpuMeter((node.pid,)),
                "redis": procstat.CpuMeter((redis.pid,)),
                "others": procstat.CpuMeter(tuple(n.pid for n in setup.nodes[1:])),
                "gen": procstat.CpuMeter((os.getpid(),)),
            }
            calls0 = await command_calls(redis.port)
            now = time.monotonic()
            for m in meters.values():
                m.start(now)
            busy0 = procstat.machine_busy_seconds()
            ok0, err0 = sum(p.ok for p in pumpers), sum(p.errors for p in pumpers)
            await asyncio.sleep(measure)
            ok1, err1 = sum(p.ok for p in pumpers), sum(p.errors for p in pumpers)
            now = time.monotonic()
            cpu = {k: m.stop(now)[0] for k, m in meters.items()}
            wall = now - meters["node"].wall0
            other = procstat.machine_busy_seconds() - busy0 - sum(cpu.values())
            commands = _delta(await command_calls(redis.port), calls0)
            done = ok1 - ok0
            result = ThroughputLevel(
                connections=level,
                depth=DEPTH,
                seconds=wall,
                publishes_per_s=done / wall,
                errors=err1 - err0,
                node_cpu_pct=100.0 * cpu["node"] / wall,
                redis_cpu_pct=100.0 * cpu["redis"] / wall,
                other_nodes_cpu_pct=100.0 * cpu["others"] / wall,
                generator_cpu_pct=100.0 * cpu["gen"] / wall,
                other_cpu_pct=max(0.0, 100.0 * other / wall),
                node_us_per_publish=cpu["node"] / done * 1e6 if done else float("nan"),
                redis_us_per_publish=cpu["redis"] / done * 1e6 if done else float("nan"),
                evalsha_per_publish=commands.get("evalsha", 0) / done if done else float("nan"),
                publish_per_publish=commands.get("publish", 0) / done if done else float("nan"),
            )
            results.append(result)
            log(
                f"cluster: throughput, {level} connections: {result.publishes_per_s:,.0f} "
                f"publishes/s, node {result.node_cpu_pct:.0f} %, redis "
                f"{result.redis_cpu_pct:.0f} %, generator {result.generator_cpu_pct:.0f} %"
            )
            if result.publishes_per_s > best * RISING:
                best, stale = result.publishes_per_s, 0
            else:
                stale += 1
                if stale >= 2:
                    break
    finally:
        for conn in pumpers:
            conn.running = False
            conn.close()
        await asyncio.sleep(0.2)
    return results


#: (name, nodes, with Redis): the single-node path, the Redis hop alone, the cluster.
SETUPS = (
    ("1 node", 1, False),
    ("1 node + Redis", 1, True),
    (f"{NODES} nodes + Redis", NODES, True),
)


async def run_cluster(
    *,
    subscribers: int,
    rates: tuple[float, ...],
    warmup: float,
    measure: float,
    throughput_warm: float,
    throughput_measure: float,
    log: Any = print,
) -> dict[str, Any]:
    """Start the three setups, run every rate on each in turn, then the
    throughput measurement on the cluster's first node; stop everything."""
    setups: list[Setup] = []
    out: dict[str, Any] = {
        "channel": CHANNEL,
        "history_size": HISTORY_SIZE,
        "pinning": "every node and redis-server (all threads) on core 0, the generator on core 1",
        "subscribe_calls": {},
        "runs": [],
        "throughput": [],
    }
    try:
        for name, nodes, use_redis in SETUPS:
            started = time.monotonic()
            setup = await start_setup(name, nodes, use_redis)
            setups.append(setup)
            if setup.redis is not None:
                out["redis_version"] = _field(
                    await redis_info(setup.redis.port, "server"), "redis_version"
                )
                before = await command_calls(setup.redis.port)
            await subscribe(setup, subscribers)
            if setup.redis is not None:
                # One SUBSCRIBE per node, however many of its clients subscribe.
                out["subscribe_calls"][name] = _delta(
                    await command_calls(setup.redis.port), before
                ).get("subscribe", 0)
            log(
                f"cluster: {name}: {subscribers} WebSocket subscribers ready in "
                f"{time.monotonic() - started:.1f} s"
            )
        run, disconnected = 0, False
        for rate in rates:
            if disconnected:
                break
            for setup in setups:
                run += 1
                result = await run_rate(setup, run=run, rate=rate, warmup=warmup, measure=measure)
                out["runs"].append(result)
                log(
                    f"cluster: {setup.name}, {subscribers} x {rate:g}/s: "
                    f"{result.deliveries_per_s:,.0f} deliveries/s, loss {result.loss}, "
                    f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, core 0 "
                    f"{result.server_core_pct:.0f} %, other CPU {result.other_cpu_pct:.0f} %"
                )
                if result.disconnected:
                    log(
                        f"cluster: {setup.name}: {result.disconnected} subscribers were "
                        "disconnected; no higher rate"
                    )
                    disconnected = True
                await asyncio.sleep(0.5)
        for setup in setups[:-1]:
            setup.stop()
        out["throughput"] = await run_throughput(
            setups[-1], warm=throughput_warm, measure=throughput_measure, log=log
        )
    finally:
        for setup in setups:
            setup.stop()
        await asyncio.sleep(0.1)
    return out


def _field(info: str, name: str) -> str:
    for line in info.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def as_json(data: dict[str, Any]) -> dict[str, Any]:
    return {
        **data,
        "runs": [asdict(r) for r in data.get("runs", [])],
        "throughput": [asdict(r) for r in data.get("throughput", [])],
    }
