"""Fan-out: N WebSocket subscribers on one channel, one publisher at a fixed rate.

For each publication rate, after a warm-up: deliveries/s, loss (expected =
publications in the measured window x subscribers), latency from the intended
send time (p50/p99/max), the server's CPU per delivery and the generator's own
CPU (when it is near 100 % the figures are client-bound, not server-bound).

The subscribers are the client core's lean fast path
(:class:`hubbub.client.lean.LeanSession`, ``ws://``) and are accounted as the
load tester accounts its users (:mod:`hubbub.loadtest.accounting`: a
``Receiver`` per subscriber, loss and duplicates per stream, latency in an
HdrHistogram). They and this coordinator share one process and one event loop
on the generator's core; the publisher (:mod:`benchmarks.publisher`) is a
second process on the same core.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks import procstat
from benchmarks.launcher import BENCH_CONFIG, NodeProc, start_node
from benchmarks.publisher import PAYLOAD_SIZE, Publisher, measured_run
from hubbub.client.lean import LeanSession
from hubbub.loadtest.accounting.hist import summary
from hubbub.loadtest.accounting.payload import msgpack_mark
from hubbub.loadtest.accounting.receiver import Receiver
from hubbub.loadtest.accounting.sequences import StreamInfo, Tally
from hubbub.loadtest.accounting.stats import WorkerStats

CHANNEL = "bench"
#: The generator (receivers + publisher, one core) counts as saturated above this share.
SATURATED = 0.9

#: How a stamped payload starts inside a msgpack ``pub`` push: bin 8 of 100 bytes, magic.
STAMP_MARK = msgpack_mark(PAYLOAD_SIZE)


class Subscriber:
    """A lean WebSocket subscriber that decodes only what accounting needs.

    A publication's stamp is found by its msgpack header and magic (a C-speed
    ``bytes.find``) instead of decoding the whole push: at 200 deliveries per
    millisecond on one core every microsecond counts. Anything else (replies,
    pings, disconnects, unstamped publications) is decoded by the session.
    """

    __slots__ = ("channel", "receiver", "session")

    def __init__(self, url: str, channel: str) -> None:
        self.channel = channel
        self.receiver: Receiver | None = None
        self.session = LeanSession(
            [url], on_pub=self.on_pub, raw=self.raw, reconnect=False, name="bench"
        )

    def raw(self, payload: bytes, now: float) -> bool:
        at = payload.find(STAMP_MARK)
        if at < 0 or self.receiver is None:
            return False
        self.receiver.on_pub(self.channel, payload[at + 2 : at + 2 + PAYLOAD_SIZE], now)
        return True

    def on_pub(self, channel: str, data: Any, now: float) -> None:
        if self.receiver is not None:
            self.receiver.on_pub(channel, data, now)

    @property
    def closed(self) -> bool:
        return not self.session.connected


class Subscribers:
    """One process's subscribers and their accounting for the current run."""

    def __init__(self) -> None:
        self.subs: list[Subscriber] = []
        self.stats = WorkerStats()
        self.group = self.stats.group("bench")

    def reset(self, run: int) -> None:
        """Fresh receivers for run ``run`` (its measured publications only)."""
        self.stats = WorkerStats()
        self.group = self.stats.group("bench")
        now = time.monotonic()
        for sub in self.subs:
            sub.receiver = Receiver(measured_run(run), self.group, self.stats)
            sub.receiver.joined(sub.channel, now)

    @property
    def total(self) -> int:
        """Publications received so far, every run and phase (deliveries)."""
        return self.group.received

    @property
    def measured(self) -> int:
        """... of them from the measured window of the current run."""
        counts = self.stats.counts
        return self.group.received - counts["foreign"] - counts["unstamped"]

    def expected(self, streams: dict[int, StreamInfo]) -> int:
        """Deliveries the ledger's publications owe these subscribers (each
        subscriber hears the streams of its own channel)."""
        per_channel: dict[str, int] = {}
        for info in streams.values():
            per_channel[info.channel] = per_channel.get(info.channel, 0) + info.last
        return sum(per_channel.get(sub.channel, 0) for sub in self.subs)

    @property
    def disconnected(self) -> int:
        return sum(1 for s in self.subs if s.closed)

    def tally(self, streams: dict[int, StreamInfo]) -> Tally:
        """Expected, delivered, lost, duplicated: every subscriber against the ledger."""
        tally = Tally()
        by_channel = {info.channel: [stream] for stream, info in streams.items()}
        for sub in self.subs:
            if sub.receiver is not None:
                sub.receiver.account(streams, by_channel, tally)
        return tally

    async def open(self, url: str, channel: str, count: int, *, timeout: float = 60.0) -> None:
        """Add ``count`` subscribers of ``channel`` at ``url``."""
        subs = [Subscriber(url, channel) for _ in range(count)]
        self.subs += subs
        await open_sessions([s.session for s in subs], channel=channel, timeout=timeout)

    async def close(self) -> None:
        for sub in self.subs:
            await sub.session.close()


async def open_sessions(
    sessions: list[LeanSession],
    *,
    channel: str | None = None,
    concurrency: int = 200,
    timeout: float = 60.0,
) -> None:
    """Connect every session (and subscribe it to ``channel``), at most
    ``concurrency`` handshakes in flight, all within ``timeout`` seconds. On
    failure every session is closed and the error raised."""
    gate = asyncio.Semaphore(concurrency)

    async def one(session: LeanSession) -> None:
        async with gate:
            await session.connect()
            if channel is not None:
                await session.subscribe(channel)

    tasks = [asyncio.ensure_future(one(s)) for s in sessions]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    except BaseException:
        for task in tasks:
            task.cancel()
        for session in sessions:
            await session.close()
        raise


@dataclass
class FanoutResult:
    """One fan-out run's figures."""

    subscribers: int
    rate: float  # publications/s offered
    offered: float  # deliveries/s offered = rate x subscribers
    seconds: float  # measured window
    expected: int  # deliveries expected in the window
    received: int  # ... of which received
    loss: int
    loss_pct: float
    deliveries_per_s: float  # received in the CPU window / its length
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_us_per_delivery: float
    server_cpu_pct: float
    generator_cpu_pct: float  # receivers + publisher, share of one core
    receiver_cpu_pct: float
    client_bound: bool
    other_cpu_pct: float  # the machine's task time that was neither server nor generator
    server_system_share: float  # of the server's CPU, the kernel's part (0..1)
    publisher: dict[str, Any] = field(default_factory=dict)
    disconnected: int = 0
    foreign: int = 0  # publications received that were not this run's stamped ones
    duplicates: int = 0
    reordered: int = 0
    server_rss_kb: int = 0


async def await_deliveries(
    subs: Subscribers, window_end: float, expected: int, drain: float
) -> None:
    """Wait until every delivery of the measured window has arrived, or
    ``drain`` seconds past its end, or until every subscriber is gone."""
    deadline = window_end + drain
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        if subs.measured >= expected and time.monotonic() >= window_end:
            break
        if subs.disconnected == len(subs.subs):
            break


def delivery_figures(
    subs: Subscribers,
    streams: dict[int, StreamInfo],
    *,
    rate: float,
    deliveries: int,
    wall: float,
    server_cpu: float,
    gen_cpu: float,
    other_cpu: float,
) -> dict[str, Any]:
    """The figures every fan-out run reports, single node or cluster: loss,
    latency percentiles from the intended send time, CPU per delivery."""
    tally = subs.tally(streams)
    subs.group.flush()
    latency = summary(subs.group.hist)
    nan = float("nan")
    seconds = sum(info.last for info in streams.values()) / rate
    return {
        "subscribers": len(subs.subs),
        "rate": rate,
        "offered": subs.expected(streams) / seconds if seconds else nan,  # deliveries/s
        "seconds": seconds,
        "expected": tally.expected,
        "received": tally.delivered,
        "loss": tally.lost,
        "loss_pct": 100.0 * tally.lost / tally.expected if tally.expected else 0.0,
        "deliveries_per_s": deliveries / wall if wall > 0 else 0.0,
        "p50_ms": latency.get("p50", nan),
        "p99_ms": latency.get("p99", nan),
        "max_ms": latency.get("max", nan),
        "server_cpu_us_per_delivery": (server_cpu / deliveries * 1e6 if deliveries else nan),
        "server_cpu_pct": 100.0 * server_cpu / wall,
        "generator_cpu_pct": 100.0 * gen_cpu / wall,
        "client_bound": gen_cpu / wall >= SATURATED,
        "other_cpu_pct": max(0.0, 100.0 * other_cpu / wall),
        "disconnected": subs.disconnected,
        "foreign": subs.stats.counts["unstamped"] + tally.unknown,
        "duplicates": tally.duplicates,
        "reordered": tally.reordered,
    }


@dataclass
class Window:
    """The measured window of one run: its publications and when they are due."""

    run: int
    rate: float
    warm_count: int
    measure_count: int
    t0: float = 0.0

    @property
    def start(self) -> float:
        return self.t0 + self.warm_count / self.rate

    @property
    def end(self) -> float:
        return self.start + self.measure_count / self.rate

    def ledger(self, channels: list[str]) -> dict[int, StreamInfo]:
        """The publisher's side (:func:`benchmarks.publisher.slots`): stream k + 1
        is channel k, its measured numbers 1..N, the first due ``k / rate`` after
        :attr:`start`."""
        n = len(channels)
        return {
            k + 1: StreamInfo(
                name,
                self.start + k / self.rate,
                self.measure_count // n + (1 if k < self.measure_count % n else 0),
            )
            for k, name in enumerate(channels)
        }


async def start_window(
    address: tuple[str, int],
    channels: list[str],
    subs: Subscribers,
    window: Window,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> Publisher:
    """Fresh accounting, a publisher connected (then ``on_ready``) and started 0.2 s on."""
    subs.reset(window.run)
    publisher = await Publisher.start(
        address,
        ",".join(channels),
        window.rate,
        window.warm_count,
        window.measure_count,
        window.run,
    )
    try:
        if on_ready is not None:
            await on_ready()
        window.t0 = time.monotonic() + 0.2
        await publisher.go(window.t0)
    except BaseException:
        await publisher.kill()
        raise
    return publisher


async def run_rate(
    server: NodeProc,
    subs: Subscribers,
    *,
    run: int,
    rate: float,
    warmup: float,
    measure: float,
    drain: float = 3.0,
    channels: list[str] | None = None,
    extra_pids: tuple[int, ...] = (),
) -> FanoutResult:
    """One rate: warm up, measure, wait for the last deliveries, compute.
    ``channels``: where the publisher spreads its publications (round robin)
    [the one fan-out channel]; ``extra_pids`` count as server (its Redis)."""
    names = channels or [CHANNEL]
    window = Window(run, rate, int(warmup * rate), int(measure * rate))
    publisher = await start_window(server.address("tcp"), names, subs, window)
    servers = (server.pid, *extra_pids)
    try:
        gen = procstat.CpuMeter((os.getpid(), publisher.pid))
        own = procstat.CpuMeter((os.getpid(),))
        await asyncio.sleep(max(0.0, window.start - time.monotonic()))
        now = time.monotonic()
        for m in (gen, own):
            m.start(now)
        busy0 = procstat.machine_busy_seconds()
        srv_user0, srv_sys0 = _cpu_times(servers)
        total0 = subs.total
        expected = subs.expected(window.ledger(names))
        await await_deliveries(subs, window.end, expected, drain)
        now = time.monotonic()
        srv_user1, srv_sys1 = _cpu_times(servers)
        gen_cpu, wall = gen.stop(now)
        own_cpu, _ = own.stop(now)
        server_user, server_sys = srv_user1 - srv_user0, srv_sys1 - srv_sys0
        server_cpu = server_user + server_sys
        other_cpu = procstat.machine_busy_seconds() - busy0 - server_cpu - gen_cpu
        deliveries = subs.total - total0
        results = await publisher.results()
        await publisher.exit()
    finally:
        await publisher.kill()
    return FanoutResult(
        **delivery_figures(
            subs,
            window.ledger(names),
            rate=rate,
            deliveries=deliveries,
            wall=wall,
            server_cpu=server_cpu,
            gen_cpu=gen_cpu,
            other_cpu=other_cpu,
        ),
        receiver_cpu_pct=100.0 * own_cpu / wall,
        server_system_share=server_sys / server_cpu if server_cpu else float("nan"),
        publisher=results,
        server_rss_kb=procstat.rss_kb(server.pid),
    )


def _cpu_times(pids: tuple[int, ...]) -> tuple[float, float]:
    """(user, system) CPU seconds of every process in ``pids``, added up."""
    times = [procstat.cpu_times(pid) for pid in pids]
    return sum(t[0] for t in times), sum(t[1] for t in times)


async def run_fanout(
    *,
    subscribers: int,
    rates: tuple[float, ...],
    warmup: float,
    measure: float,
    log: Any = print,
) -> list[FanoutResult]:
    """Start a server, subscribe, run every rate, stop the server."""
    results: list[FanoutResult] = []
    with start_node(BENCH_CONFIG, die_with_parent=True) as server:
        procstat.pin(server.pid, procstat.SERVER_CORE)
        subs = Subscribers()
        started = time.monotonic()
        try:
            await subs.open(server.ws_url, CHANNEL, subscribers)
            log(
                f"fanout: {subscribers} WebSocket subscribers ready in "
                f"{time.monotonic() - started:.1f} s"
            )
            for run, rate in enumerate(rates, start=1):
                result = await run_rate(
                    server, subs, run=run, rate=rate, warmup=warmup, measure=measure
                )
                log(
                    f"fanout: {subscribers} x {rate:g}/s: {result.deliveries_per_s:,.0f} "
                    f"deliveries/s, loss {result.loss}, p99 {result.p99_ms:.1f} ms, "
                    f"server {result.server_cpu_us_per_delivery:.2f} µs/delivery, "
                    f"generator {result.generator_cpu_pct:.0f} %"
                )
                results.append(result)
                if result.disconnected:
                    log(
                        f"fanout: {result.disconnected} subscribers were disconnected; "
                        "stopping here"
                    )
                    break
                await asyncio.sleep(0.5)
        finally:
            await subs.close()
            await asyncio.sleep(0.1)
    return results


def as_json(results: list[FanoutResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
