"""The kernel floor: a bare loop of 100-byte ``send()``s to N loopback sockets.

BENCHMARKS.md "The floor": one message per ``send()`` costs about 7 µs of CPU on
this machine, nearly all of it in the kernel (on loopback the sender also runs
the receiver's TCP input). No Python server can deliver one message per send
below it; hubbub's figure is printed beside it as a ratio.

The sender is a child process pinned to the server's core: every ``1/rate``
seconds (open loop, absolute schedule) it sends one 100-byte message to each of
its N connected sockets. The benchmark process, on the generator's core,
accepts the connections and drains them. CPU per send is the sender's
``utime + stime`` over the measured window divided by the sends in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import procstat
from benchmarks.launcher import die_with_parent

PAYLOAD = b"x" * 100


@dataclass
class FloorResult:
    """One rate's figures."""

    sockets: int
    rate: float  # messages per socket per second
    sends_per_s: float
    cpu_us_per_send: float
    system_share: float  # of the sender's CPU, the kernel's part (0..1)


class _Drain(asyncio.Protocol):
    """The receiving end: read and forget (counted)."""

    received = 0

    def data_received(self, data: bytes) -> None:
        _Drain.received += len(data)


def _sender(host: str, port: int, count: int, rate: float, warmup: float, measure: float) -> None:
    """Child process: connect ``count`` sockets, then the open-loop send loop;
    prints one JSON line of figures."""
    socks = []
    for _ in range(count):
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    print("ready", flush=True)
    sys.stdin.readline()  # the receiver has accepted them all
    sends = [s.send for s in socks]
    interval = 1.0 / rate
    start = time.monotonic()
    window_start, window_end = start + warmup, start + warmup + measure
    cpu0: os.times_result | None = None
    sent = 0
    tick = 0
    while True:
        at = start + tick * interval
        now = time.monotonic()
        if at > now:
            time.sleep(at - now)
            now = at
        if cpu0 is None and now >= window_start:
            cpu0, sent = os.times(), 0
        if now >= window_end:
            break
        for send in sends:
            send(PAYLOAD)
        sent += count
        tick += 1
    cpu1 = os.times()
    assert cpu0 is not None
    user, system = cpu1.user - cpu0.user, cpu1.system - cpu0.system
    print(json.dumps({"sent": sent, "user": user, "system": system, "seconds": measure}))
    for s in socks:
        s.close()


async def run_floor(
    *, sockets: int, rates: tuple[float, ...], warmup: float, measure: float, log: Any = print
) -> list[FloorResult]:
    """One sender run per rate; the figures per send."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Drain, "127.0.0.1", 0, backlog=sockets)
    host, port = server.sockets[0].getsockname()[:2]
    results = []
    try:
        for rate in rates:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.floor",
                host,
                str(port),
                str(sockets),
                str(rate),
                str(warmup),
                str(measure),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                preexec_fn=die_with_parent,
            )
            assert proc.stdin is not None and proc.stdout is not None
            procstat.pin(proc.pid, procstat.SERVER_CORE)
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(f"floor sender did not get ready: {line!r}")
            await asyncio.sleep(0.2)  # the last accepts
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), warmup + measure + 60)
            figures = json.loads(line)
            await proc.wait()
            cpu = figures["user"] + figures["system"]
            result = FloorResult(
                sockets=sockets,
                rate=rate,
                sends_per_s=figures["sent"] / figures["seconds"],
                cpu_us_per_send=1e6 * cpu / figures["sent"] if figures["sent"] else float("nan"),
                system_share=figures["system"] / cpu if cpu else float("nan"),
            )
            log(
                f"floor: {sockets} sockets x {rate:g}/s: {result.sends_per_s:,.0f} sends/s, "
                f"{result.cpu_us_per_send:.2f} µs CPU per send"
            )
            results.append(result)
    finally:
        server.close()
    return results


def as_json(results: list[FloorResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


if __name__ == "__main__":
    h, p, n, r, w, m = sys.argv[1:7]
    _sender(h, int(p), int(n), float(r), float(w), float(m))
