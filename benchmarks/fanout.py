"""Fan-out: N WebSocket subscribers on one channel, one publisher at a fixed rate.

For each publication rate, after a warm-up: deliveries/s, loss (expected =
publications in the measured window x subscribers), latency from the intended
send time (p50/p99/max), the server's CPU per delivery and the generator's own
CPU (when it is near 100 % the figures are client-bound, not server-bound).

The receivers (:class:`Subscriber`, lean WebSocket protocols) and this
coordinator share one process and one event loop on the generator's core; the
publisher (:mod:`benchmarks.publisher`) is a second process on the same core.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack

from benchmarks import procstat
from benchmarks.launcher import ROOT, ServerProcess, die_with_parent
from benchmarks.leanclient import WsConn, open_many
from benchmarks.publisher import MAGIC, PAYLOAD_SIZE, STAMP

CHANNEL = "bench"
#: The generator (receivers + publisher, one core) counts as saturated above this share.
SATURATED = 0.9

_unpackb = msgpack.unpackb
_unpack_stamp = STAMP.unpack_from


#: How a stamped payload starts inside a msgpack ``pub`` push: bin 8 of 100 bytes, magic.
STAMP_MARK = b"\xc4" + bytes((PAYLOAD_SIZE,)) + MAGIC


class Tally:
    """What every subscriber of this process received in the current run."""

    __slots__ = ("hi", "latencies", "lo", "measured", "other", "run", "stale", "total")

    def __init__(self) -> None:
        self.reset(0, 0, 0)

    def reset(self, run: int, lo: int, hi: int) -> None:
        self.run, self.lo, self.hi = run, lo, hi
        self.total = 0  # publications of this run received, all sequence numbers
        self.measured = 0  # ... of them in [lo, hi): the measured window
        self.other = 0  # publications that are not ours
        self.stale = 0  # stamped publications of an earlier run
        self.latencies = array("d")  # seconds, measured window only

    def record(self, buf: bytes, at: int, now: float) -> None:
        """Count the stamped payload found at ``buf[at:]``, arrived at ``now``."""
        _, run, seq, intended = _unpack_stamp(buf, at)
        if run != self.run:
            self.stale += 1
            return
        self.total += 1
        if self.lo <= seq < self.hi:
            self.measured += 1
            self.latencies.append(now - intended)


class Subscriber(WsConn):
    """A WebSocket subscriber that decodes only what latency needs.

    A publication's stamp is found by its msgpack header and magic (a C-speed
    ``bytes.find``) instead of decoding the whole push: at 200 deliveries per
    millisecond on one core every microsecond counts. Anything else (replies,
    pings, disconnects) is decoded in full.
    """

    def __init__(self, host: str, port: int, channel: str, tally: Tally) -> None:
        super().__init__(host, port, channel)
        self.tally = tally

    def on_frame(self, buf: bytes, start: int, end: int, now: float) -> None:
        at = buf.find(STAMP_MARK, start, end)
        if at >= 0:
            self.tally.record(buf, at + 2, now)
            return
        message = _unpackb(buf[start:end])
        if message.get("push") == "pub":
            self.tally.other += 1
        else:
            self.on_map(message, now)


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
    foreign: int = 0  # publications received that were not this run's
    server_rss_kb: int = 0


def percentile(ordered: list[float] | array[float], q: float) -> float:
    """The ``q``-quantile (0..1) of an ascending sequence, nearest rank."""
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def await_deliveries(
    tally: Tally, subs: list[Subscriber], window_end: float, expected: int, drain: float
) -> None:
    """Wait until every delivery of the measured window has arrived, or
    ``drain`` seconds past its end, or until every subscriber is gone."""
    deadline = window_end + drain
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        if tally.measured >= expected and time.monotonic() >= window_end:
            break
        if all(s.closed for s in subs):
            break


def delivery_figures(
    tally: Tally,
    subs: list[Subscriber],
    *,
    rate: float,
    measure_count: int,
    expected: int,
    deliveries: int,
    wall: float,
    server_cpu: float,
    gen_cpu: float,
    other_cpu: float,
) -> dict[str, Any]:
    """The figures every fan-out run reports, single node or cluster: loss,
    latency percentiles from the intended send time, CPU per delivery."""
    ordered = sorted(tally.latencies)
    loss = expected - tally.measured
    return {
        "subscribers": len(subs),
        "rate": rate,
        "offered": rate * len(subs),
        "seconds": measure_count / rate,
        "expected": expected,
        "received": tally.measured,
        "loss": loss,
        "loss_pct": 100.0 * loss / expected if expected else 0.0,
        "deliveries_per_s": deliveries / wall if wall > 0 else 0.0,
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] * 1000) if ordered else float("nan"),
        "server_cpu_us_per_delivery": (
            server_cpu / deliveries * 1e6 if deliveries else float("nan")
        ),
        "server_cpu_pct": 100.0 * server_cpu / wall,
        "generator_cpu_pct": 100.0 * gen_cpu / wall,
        "client_bound": gen_cpu / wall >= SATURATED,
        "other_cpu_pct": max(0.0, 100.0 * other_cpu / wall),
        "disconnected": sum(1 for s in subs if s.closed),
        "foreign": tally.other + tally.stale,
    }


async def _readline(stream: asyncio.StreamReader, timeout: float) -> str:
    line = await asyncio.wait_for(stream.readline(), timeout)
    if not line:
        raise RuntimeError("publisher exited early")
    return line.decode().strip()


async def run_rate(
    server: ServerProcess,
    subs: list[Subscriber],
    tally: Tally,
    *,
    run: int,
    rate: float,
    warmup: float,
    measure: float,
    drain: float = 3.0,
) -> FanoutResult:
    """One rate: warm up, measure, wait for the last deliveries, compute."""
    host, port = server.address("tcp")
    warm_count = int(warmup * rate)
    measure_count = int(measure * rate)
    tally.reset(run, warm_count, warm_count + measure_count)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.publisher",
        host,
        str(port),
        CHANNEL,
        str(rate),
        str(warm_count + measure_count),
        str(run),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if await _readline(proc.stdout, 15) != "ready":
            raise RuntimeError("publisher did not get ready")
        t0 = time.monotonic() + 0.2
        proc.stdin.write(f"{t0!r}\n".encode())
        await proc.stdin.drain()
        gen = procstat.CpuMeter((os.getpid(), proc.pid))
        own = procstat.CpuMeter((os.getpid(),))
        window_start = t0 + warm_count / rate
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        now = time.monotonic()
        for m in (gen, own):
            m.start(now)
        busy0 = procstat.machine_busy_seconds()
        srv_user0, srv_sys0 = procstat.cpu_times(server.pid)
        total0 = tally.total
        window_end = window_start + measure_count / rate
        expected = measure_count * len(subs)
        await await_deliveries(tally, subs, window_end, expected, drain)
        now = time.monotonic()
        srv_user1, srv_sys1 = procstat.cpu_times(server.pid)
        gen_cpu, wall = gen.stop(now)
        own_cpu, _ = own.stop(now)
        server_user, server_sys = srv_user1 - srv_user0, srv_sys1 - srv_sys0
        server_cpu = server_user + server_sys
        other_cpu = procstat.machine_busy_seconds() - busy0 - server_cpu - gen_cpu
        deliveries = tally.total - total0
        publisher = json.loads(await _readline(proc.stdout, 15))
        proc.stdin.write(b"exit\n")
        await proc.stdin.drain()
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return FanoutResult(
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
        receiver_cpu_pct=100.0 * own_cpu / wall,
        server_system_share=server_sys / server_cpu if server_cpu else float("nan"),
        publisher=publisher,
        server_rss_kb=procstat.rss_kb(server.pid),
    )


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
    with ServerProcess() as server:
        procstat.pin(server.pid, procstat.SERVER_CORE)
        host, port = server.address("ws")
        tally = Tally()
        started = time.monotonic()
        conns = await open_many(
            lambda: Subscriber(host, port, CHANNEL, tally), host, port, subscribers
        )
        subs: list[Subscriber] = conns  # type: ignore[assignment]
        log(
            f"fanout: {subscribers} WebSocket subscribers ready in "
            f"{time.monotonic() - started:.1f} s"
        )
        try:
            for run, rate in enumerate(rates, start=1):
                result = await run_rate(
                    server, subs, tally, run=run, rate=rate, warmup=warmup, measure=measure
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
            for conn in subs:
                conn.close()
            await asyncio.sleep(0.1)
    return results


def as_json(results: list[FanoutResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
