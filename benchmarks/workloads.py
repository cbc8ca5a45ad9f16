"""Where deployments live: chat rooms, fan-out through Redis, ``write_delay``, and
one node's publish throughput (the performance issue's rows).

Every row is a :func:`benchmarks.fanout.run_rate` run (open-loop publisher on one
TCP connection, lean WebSocket subscribers accounted by the load tester's
accounting) on a node started for it, embedded or with a ``redis-server`` of
its own; the node and its Redis are pinned to the server's core and their CPU
is the server's. Each row prints deliveries/s, loss, p50/p99 and server CPU
per delivery and per publication.

- ``chat``: ``rooms`` channels of ``per_room`` subscribers each, the publisher's
  publications spread over the rooms round robin;
- ``redis``: the one-channel fan-out through Redis (1,000 x 200/s);
- ``write_delay``: the one-channel fan-out with ``[limits] write_delay`` 0, 10
  and 50 ms;
- ``publish``: publications per second one node accepts from 1, 10 and 100
  connections (each keeping :data:`DEPTH` in flight, no subscribers), and the
  node's CPU per accepted publication, embedded and through Redis; the TCP
  msgpack publishers are the lean fast path, and a row of WebSocket-JSON
  publishers (the asyncio client, as a browser would publish) gives the cost
  of the default subprotocol.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import procstat
from benchmarks.cluster import Pumper, pin_threads
from benchmarks.fanout import CHANNEL, FanoutResult, Subscribers, open_sessions, run_rate
from benchmarks.launcher import BENCH_CONFIG, NodeProc, RedisProc, start_node, start_redis
from benchmarks.publisher import payload
from hubbub.client import Client

#: History on, as a chat deployment has it (recovery needs it).
CHAT_CONFIG = BENCH_CONFIG + "\n[namespaces.chat]\nhistory_size = 100\n"
#: Publishes each throughput connection keeps in flight.
DEPTH = 32
#: Publishing connections of the throughput rows.
PUBLISH_LEVELS = (1, 10, 100)


@dataclass
class WorkloadRow:
    """One row: which workload, on what, and its fan-out figures."""

    workload: str
    broker: str  # "embedded" or "redis"
    setting: str  # what else distinguishes the row (rooms, write_delay)
    result: dict[str, Any]  # FanoutResult fields
    server_cpu_us_per_publication: float


@dataclass
class PublishRow:
    """Publications one node accepted per second from ``connections`` publishers."""

    broker: str
    client: str  # "tcp msgpack" (lean) or "ws json" (the asyncio client)
    connections: int
    depth: int
    seconds: float
    publishes_per_s: float
    errors: int
    node_cpu_pct: float
    redis_cpu_pct: float
    node_us_per_publish: float
    redis_us_per_publish: float
    generator_cpu_pct: float


class Server:
    """A node (and maybe its Redis) pinned to the server's core."""

    def __init__(self, config: str, use_redis: bool) -> None:
        self.config = config
        self.use_redis = use_redis
        self.redis: RedisProc | None = None
        self.node: NodeProc | None = None

    async def __aenter__(self) -> Server:
        if self.use_redis:
            self.redis = await asyncio.to_thread(start_redis, die_with_parent=True)
            pin_threads(self.redis.pid, procstat.SERVER_CORE)
        redis = [self.redis.url] if self.redis is not None else []
        self.node = await asyncio.to_thread(
            start_node, self.config, redis=redis, die_with_parent=True
        )
        pin_threads(self.node.pid, procstat.SERVER_CORE)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.node is not None:
            self.node.stop()
        if self.redis is not None:
            self.redis.stop()

    @property
    def broker(self) -> str:
        return "redis" if self.use_redis else "embedded"

    @property
    def extra_pids(self) -> tuple[int, ...]:
        return (self.redis.pid,) if self.redis is not None else ()


def _row(workload: str, server: Server, setting: str, result: FanoutResult) -> WorkloadRow:
    data = asdict(result)
    published = result.rate * result.seconds
    server_cpu = result.server_cpu_us_per_delivery * result.received
    return WorkloadRow(
        workload,
        server.broker,
        setting,
        data,
        server_cpu / published if published else float("nan"),
    )


def _log_row(log: Any, row: WorkloadRow) -> None:
    r = row.result
    log(
        f"{row.workload}: {row.broker} {row.setting} {r['rate']:g}/s: "
        f"{r['deliveries_per_s']:,.0f} deliveries/s, loss {r['loss']}, "
        f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
        f"{r['server_cpu_us_per_delivery']:.2f} µs/delivery, "
        f"{row.server_cpu_us_per_publication:.1f} µs/publication"
    )


async def run_chat(
    *,
    rooms: int,
    per_room: int,
    rates: tuple[float, ...],
    warmup: float,
    measure: float,
    brokers: tuple[bool, ...] = (False, True),
    log: Any = print,
) -> list[WorkloadRow]:
    """``rooms`` x ``per_room`` subscribers, publications spread over the rooms."""
    rows = []
    channels = [f"chat:room{i}" for i in range(rooms)]
    for use_redis in brokers:
        async with Server(CHAT_CONFIG, use_redis) as server:
            assert server.node is not None
            subs = Subscribers()
            try:
                for channel in channels:
                    await subs.open(server.node.ws_url, channel, per_room)
                for run, rate in enumerate(rates, start=1):
                    result = await run_rate(
                        server.node,
                        subs,
                        run=run,
                        rate=rate,
                        warmup=warmup,
                        measure=measure,
                        channels=channels,
                        extra_pids=server.extra_pids,
                    )
                    row = _row("chat", server, f"{rooms}x{per_room}", result)
                    _log_row(log, row)
                    rows.append(row)
                    await asyncio.sleep(0.5)
            finally:
                await subs.close()
    return rows


async def run_one_channel(
    workload: str,
    *,
    subscribers: int,
    rate: float,
    warmup: float,
    measure: float,
    settings: list[tuple[str, str, bool]],
    log: Any = print,
) -> list[WorkloadRow]:
    """The one-channel fan-out once per ``(label, config, with Redis)``."""
    rows = []
    for label, config, use_redis in settings:
        async with Server(config, use_redis) as server:
            assert server.node is not None
            subs = Subscribers()
            try:
                await subs.open(server.node.ws_url, CHANNEL, subscribers)
                result = await run_rate(
                    server.node,
                    subs,
                    run=1,
                    rate=rate,
                    warmup=warmup,
                    measure=measure,
                    extra_pids=server.extra_pids,
                )
                row = _row(workload, server, label, result)
                _log_row(log, row)
                rows.append(row)
            finally:
                await subs.close()
    return rows


def write_delay_settings(delays: tuple[float, ...]) -> list[tuple[str, str, bool]]:
    """One embedded node per ``[limits] write_delay`` (added to BENCH_CONFIG's table)."""
    return [
        (
            f"write_delay={delay * 1000:g}ms",
            BENCH_CONFIG.replace("[limits]\n", f"[limits]\nwrite_delay = {delay}\n", 1),
            False,
        )
        for delay in delays
    ]


#: The one-channel fan-out through Redis, beside the embedded broker.
REDIS_SETTINGS = [("1 channel", BENCH_CONFIG, False), ("1 channel", BENCH_CONFIG, True)]


class _Counted:
    """What the publishers of one level have done so far (``ok``, ``errors``)."""

    def __init__(self, pumpers: list[Pumper] | None = None) -> None:
        self.pumpers = pumpers or []
        self.ok = self.errors = 0

    def totals(self) -> tuple[int, int]:
        return (
            self.ok + sum(p.ok for p in self.pumpers),
            self.errors + sum(p.errors for p in self.pumpers),
        )


async def _publish_level(
    server: Server, counted: _Counted, connections: int, measure: float, client: str
) -> PublishRow:
    assert server.node is not None
    node_meter = procstat.CpuMeter((server.node.pid,))
    redis_meter = procstat.CpuMeter(server.extra_pids)
    gen_meter = procstat.CpuMeter((os.getpid(),))
    now = time.monotonic()
    for m in (node_meter, redis_meter, gen_meter):
        m.start(now)
    ok0, err0 = counted.totals()
    await asyncio.sleep(measure)
    ok1, err1 = counted.totals()
    now = time.monotonic()
    node_cpu, wall = node_meter.stop(now)
    redis_cpu, _ = redis_meter.stop(now)
    gen_cpu, _ = gen_meter.stop(now)
    done = ok1 - ok0
    nan = float("nan")
    return PublishRow(
        broker=server.broker,
        client=client,
        connections=connections,
        depth=DEPTH,
        seconds=wall,
        publishes_per_s=done / wall,
        errors=err1 - err0,
        node_cpu_pct=100.0 * node_cpu / wall,
        redis_cpu_pct=100.0 * redis_cpu / wall,
        node_us_per_publish=node_cpu / done * 1e6 if done else nan,
        redis_us_per_publish=redis_cpu / done * 1e6 if done else nan,
        generator_cpu_pct=100.0 * gen_cpu / wall,
    )


async def run_publish(
    *,
    levels: tuple[int, ...] = PUBLISH_LEVELS,
    warm: float,
    measure: float,
    brokers: tuple[bool, ...] = (False, True),
    log: Any = print,
) -> list[PublishRow]:
    """Publications/s one node accepts from 1, 10 and 100 connections."""
    rows = []
    data = payload(0, 0, 0.0)
    for use_redis in brokers:
        async with Server(CHAT_CONFIG, use_redis) as server:
            assert server.node is not None
            pumpers: list[Pumper] = []
            try:
                for level in levels:
                    more = [
                        Pumper(server.node.tcp_url, "chat:tp", DEPTH, data)
                        for _ in range(level - len(pumpers))
                    ]
                    await open_sessions([p.session for p in more])
                    for pumper in more:
                        pumper.start()
                    pumpers += more
                    await asyncio.sleep(warm)
                    counted = _Counted(pumpers)
                    row = await _publish_level(server, counted, level, measure, "tcp msgpack")
                    log(
                        f"publish: {row.broker}, {level} tcp connections: "
                        f"{row.publishes_per_s:,.0f}/s, node {row.node_us_per_publish:.1f} "
                        f"µs/publication ({row.node_cpu_pct:.0f} %), redis "
                        f"{row.redis_us_per_publish:.1f} µs ({row.redis_cpu_pct:.0f} %), generator "
                        f"{row.generator_cpu_pct:.0f} %"
                    )
                    rows.append(row)
            finally:
                for pumper in pumpers:
                    pumper.running = False
                    await pumper.session.close()
                await asyncio.sleep(0.2)
            rows.append(await _publish_ws_json(server, warm, measure, log))
    return rows


async def _publish_ws_json(
    server: Server, warm: float, measure: float, log: Any, connections: int = 4, depth: int = 8
) -> PublishRow:
    """WebSocket-JSON publishers (:class:`hubbub.Client`), ``depth`` publishes in
    flight each: what the node spends per publication on the default subprotocol."""
    assert server.node is not None
    counted = _Counted()
    data = {"text": "hello, this is a chat message of about a hundred bytes", "n": 0}

    async def loop(client: Client) -> None:
        while True:
            try:
                await client.publish("chat:tp", data)
                counted.ok += 1
            except Exception:
                counted.errors += 1

    clients = [Client(server.node.ws_url, encoding="json") for _ in range(connections)]
    tasks: list[asyncio.Task[None]] = []
    try:
        for client in clients:
            await client.connect()
            tasks += [asyncio.ensure_future(loop(client)) for _ in range(depth)]
        await asyncio.sleep(warm)
        row = await _publish_level(server, counted, connections, measure, "ws json")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.close()
    log(
        f"publish: {row.broker}, {connections} ws-json connections: "
        f"{row.publishes_per_s:,.0f}/s, node {row.node_us_per_publish:.1f} µs/publication "
        f"({row.node_cpu_pct:.0f} %), generator {row.generator_cpu_pct:.0f} %"
    )
    return row


def as_json(rows: list[WorkloadRow] | list[PublishRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
