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
script runs in their own ``cmdstat_*``: the script's PUBLISH is ``cmdstat_publish``.
The nodes' delivery probes are off here: their PUBLISHes would count too.)

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
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks import procstat
from benchmarks.fanout import (
    Subscribers,
    Window,
    await_deliveries,
    delivery_figures,
    open_sessions,
    start_window,
)
from benchmarks.launcher import BENCH_CONFIG, NodeProc, RedisProc, start_node, start_redis
from benchmarks.publisher import payload
from hubbub.client.lean import LeanSession

CHANNEL = "bench:feed"
THROUGHPUT_CHANNEL = "bench:tp"
HISTORY_SIZE = 100
# The delivery probe (one PUBLISH per node and shard each second) is off: its
# PUBLISHes are not publications, and INFO commandstats cannot tell them apart.
CONFIG = (
    BENCH_CONFIG
    + "\n[broker]\nprobe_interval = 0\n"
    + f"\n[namespaces.bench]\nhistory_size = {HISTORY_SIZE}\n"
)
NODES = 3
#: Publishes with ids each throughput connection keeps in flight.
DEPTH = 32
#: Throughput connections, tried in this order until publishes/s stops rising.
LEVELS = (1, 2, 4, 8, 16, 32, 64, 128)
#: A level must beat the best so far by this factor to count as rising.
RISING = 1.05


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
    nodes: list[NodeProc]
    redis: RedisProc | None
    subs: Subscribers = field(default_factory=Subscribers)

    @property
    def server_pids(self) -> tuple[int, ...]:
        pids = [n.pid for n in self.nodes]
        return (*pids, self.redis.pid) if self.redis is not None else tuple(pids)

    async def stop(self) -> None:
        await self.subs.close()
        for node in self.nodes:
            node.stop()
        if self.redis is not None:
            self.redis.stop()


async def start_setup(name: str, nodes: int, use_redis: bool) -> Setup:
    """Start Redis (maybe) and ``nodes`` nodes, every thread pinned to core 0."""
    redis = await asyncio.to_thread(start_redis, die_with_parent=True) if use_redis else None
    setup = Setup(name, [], redis)
    try:
        args: tuple[str, ...] = ("--redis", redis.url) if redis is not None else ()
        tag = f"{nodes}{'r' if use_redis else 'm'}"
        setup.nodes = await asyncio.gather(
            *(
                asyncio.to_thread(
                    start_node,
                    CONFIG,
                    args=(*args, "--node-id", f"bench-{tag}-{i}"),
                    die_with_parent=True,
                )
                for i in range(nodes)
            )
        )
        for pid in setup.server_pids:
            pin_threads(pid, procstat.SERVER_CORE)
    except BaseException:
        await setup.stop()
        raise
    return setup


async def subscribe(setup: Setup, subscribers: int) -> None:
    """Open ``subscribers`` WebSocket subscribers of :data:`CHANNEL`, spread evenly."""
    nodes = setup.nodes
    for i, node in enumerate(nodes):
        count = subscribers // len(nodes) + (1 if i < subscribers % len(nodes) else 0)
        await setup.subs.open(node.ws_url, CHANNEL, count)


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
    duplicates: int = 0
    reordered: int = 0


async def run_rate(
    setup: Setup, *, run: int, rate: float, warmup: float, measure: float, drain: float = 3.0
) -> ClusterRun:
    """One setup at one rate: as :func:`benchmarks.fanout.run_rate`, CPU of every
    server process, and Redis commands counted over the whole publisher run."""
    subs = setup.subs
    window = Window(run, rate, int(warmup * rate), int(measure * rate))
    redis_port = setup.redis.port if setup.redis is not None else 0
    calls0: dict[str, int] = {}

    async def count_calls() -> None:  # once the publisher is connected, before its first slot
        if redis_port:
            calls0.update(await command_calls(redis_port))

    publisher = await start_window(
        setup.nodes[0].address("tcp"), [CHANNEL], subs, window, on_ready=count_calls
    )
    try:
        gen = procstat.CpuMeter((os.getpid(), publisher.pid))
        servers = [procstat.CpuMeter((pid,)) for pid in setup.server_pids]
        await asyncio.sleep(max(0.0, window.start - time.monotonic()))
        now = time.monotonic()
        for m in (gen, *servers):
            m.start(now)
        busy0 = procstat.machine_busy_seconds()
        core0 = core_busy_seconds(procstat.SERVER_CORE)
        total0 = subs.total
        expected = window.measure_count * len(subs.subs)
        await await_deliveries(subs, window.end, expected, drain)
        now = time.monotonic()
        used = [m.stop(now)[0] for m in servers]
        gen_cpu, wall = gen.stop(now)
        other_cpu = procstat.machine_busy_seconds() - busy0 - sum(used) - gen_cpu
        core_cpu = core_busy_seconds(procstat.SERVER_CORE) - core0
        deliveries = subs.total - total0
        results = await publisher.results()
        calls1 = await command_calls(redis_port) if redis_port else {}
        await publisher.exit()
    finally:
        await publisher.kill()
    figures = delivery_figures(
        subs,
        window.ledger([CHANNEL]),
        rate=rate,
        deliveries=deliveries,
        wall=wall,
        server_cpu=sum(used),
        gen_cpu=gen_cpu,
        other_cpu=other_cpu,
    )
    return _cluster_run(setup, figures, used, wall, core_cpu, results, _delta(calls1, calls0))


def _cluster_run(
    setup: Setup,
    figures: dict[str, Any],
    used: list[float],
    wall: float,
    core_cpu: float,
    publisher: dict[str, Any],
    commands: dict[str, int],
) -> ClusterRun:
    """The figures of one run with each server's share and Redis calls per publication."""
    sent = int(publisher["sent"])
    n = len(setup.nodes)
    redis = setup.redis is not None
    return ClusterRun(
        setup=setup.name,
        nodes=n,
        redis=redis,
        **figures,
        node_cpu_pct=[100.0 * c / wall for c in used[:n]],
        redis_cpu_pct=100.0 * used[n] / wall if redis else 0.0,
        server_core_pct=100.0 * core_cpu / wall,
        publications=sent,
        commands=commands,
        publish_per_publication=commands.get("publish", 0) / sent if redis else float("nan"),
        evalsha_per_publication=commands.get("evalsha", 0) / sent if redis else float("nan"),
        publisher=publisher,
    )


class Pumper:
    """A TCP publisher keeping ``depth`` publishes with ids in flight: the replies
    read in one pass of the event loop let as many go again, in one write."""

    def __init__(self, url: str, channel: str, depth: int, data: bytes) -> None:
        self.session = LeanSession([url], reconnect=False, name="bench")
        self.channel, self.depth, self.data = channel, depth, data
        self.ok = self.errors = self.in_flight = 0
        self.running = False
        self._refill_due = False

    def start(self) -> None:
        self.running = True
        self._refill()

    def _reply(self, reply: dict[str, Any] | None, now: float) -> None:
        self.in_flight -= 1
        if reply is not None and "ok" in reply:
            self.ok += 1
        elif reply is not None:
            self.errors += 1
        if self.running and not self._refill_due:
            self._refill_due = True
            asyncio.get_running_loop().call_soon(self._refill)

    def _refill(self) -> None:
        self._refill_due = False
        count = self.depth - self.in_flight
        if count <= 0 or not self.running or not self.session.connected:
            return
        self.in_flight += count
        message = {"op": "publish", "channel": self.channel, "data": self.data}
        self.session.send_batch([dict(message) for _ in range(count)], self._reply)


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


async def _measure_level(
    setup: Setup, pumpers: list[Pumper], level: int, measure: float
) -> ThroughputLevel:
    """Publishes/s and the CPU of each process over ``measure`` seconds at one level."""
    assert setup.redis is not None
    node, redis = setup.nodes[0], setup.redis
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
    nan = float("nan")
    return ThroughputLevel(
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
        node_us_per_publish=cpu["node"] / done * 1e6 if done else nan,
        redis_us_per_publish=cpu["redis"] / done * 1e6 if done else nan,
        evalsha_per_publish=commands.get("evalsha", 0) / done if done else nan,
        publish_per_publish=commands.get("publish", 0) / done if done else nan,
    )


async def run_throughput(
    setup: Setup, *, warm: float, measure: float, log: Any = print
) -> list[ThroughputLevel]:
    """Double the publisher connections to the setup's first node until publishes/s
    stops rising (two levels in a row not :data:`RISING` x the best)."""
    assert setup.redis is not None
    data = payload(0, 0, 0.0)
    url = setup.nodes[0].tcp_url
    pumpers: list[Pumper] = []
    results: list[ThroughputLevel] = []
    best, stale = 0.0, 0
    try:
        for level in LEVELS:
            more = [
                Pumper(url, THROUGHPUT_CHANNEL, DEPTH, data) for _ in range(level - len(pumpers))
            ]
            await open_sessions([p.session for p in more])
            for pumper in more:
                pumper.start()
            pumpers += more
            await asyncio.sleep(warm)
            result = await _measure_level(setup, pumpers, level, measure)
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
        for pumper in pumpers:
            pumper.running = False
            await pumper.session.close()
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
            setups.append(await _prepare(name, nodes, use_redis, subscribers, out, log))
        for rate in rates:
            if not await _run_rate_everywhere(setups, rate, warmup, measure, out, log):
                break
        for setup in setups[:-1]:
            await setup.stop()
        out["throughput"] = await run_throughput(
            setups[-1], warm=throughput_warm, measure=throughput_measure, log=log
        )
    finally:
        for setup in setups:
            await setup.stop()
        await asyncio.sleep(0.1)
    return out


async def _prepare(
    name: str, nodes: int, use_redis: bool, subscribers: int, out: dict[str, Any], log: Any
) -> Setup:
    """Start one setup and subscribe; count the SUBSCRIBEs Redis saw meanwhile."""
    started = time.monotonic()
    setup = await start_setup(name, nodes, use_redis)
    if setup.redis is not None:
        out["redis_version"] = _field(await redis_info(setup.redis.port, "server"), "redis_version")
        before = await command_calls(setup.redis.port)
    await subscribe(setup, subscribers)
    if setup.redis is not None:
        # One SUBSCRIBE per node, however many of its clients subscribe.
        out["subscribe_calls"][name] = _delta(await command_calls(setup.redis.port), before).get(
            "subscribe", 0
        )
    log(
        f"cluster: {name}: {subscribers} WebSocket subscribers ready in "
        f"{time.monotonic() - started:.1f} s"
    )
    return setup


async def _run_rate_everywhere(
    setups: list[Setup],
    rate: float,
    warmup: float,
    measure: float,
    out: dict[str, Any],
    log: Any,
) -> bool:
    """One rate on every setup in turn; False when subscribers were disconnected."""
    going_on = True
    for setup in setups:
        run = len(out["runs"]) + 1
        result = await run_rate(setup, run=run, rate=rate, warmup=warmup, measure=measure)
        out["runs"].append(result)
        log(
            f"cluster: {setup.name}, {result.subscribers} x {rate:g}/s: "
            f"{result.deliveries_per_s:,.0f} deliveries/s, loss {result.loss}, "
            f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, core 0 "
            f"{result.server_core_pct:.0f} %, other CPU {result.other_cpu_pct:.0f} %"
        )
        if result.disconnected:
            log(
                f"cluster: {setup.name}: {result.disconnected} subscribers were "
                "disconnected; no higher rate"
            )
            going_on = False
        await asyncio.sleep(0.5)
    return going_on


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
