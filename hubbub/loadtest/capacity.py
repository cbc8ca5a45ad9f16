"""How many messages per second can one worker take in? ``python -m loadtest.capacity``.

Sizing numbers are only true while the load generator is not the bottleneck.
This measures the generator alone: a stand-in server (``--serve``, a process
of its own) answers ``connect`` and ``subscribe`` and then writes stamped
publications to every subscriber at a fixed total rate, the same bytes to
each, as hubbub's fan-out does; one worker runs the ``livefeed`` subscribers
(the real fast path: framing, msgpack, sequence accounting, HdrHistogram) and
the report says what it received and at what CPU. Rates step up until the
worker falls behind. With two or more cores the stand-in runs on the last one
and the worker on the others, so neither steals the other's CPU.

    python -m loadtest.capacity --subscribers 1000 --rates 50000,100000,150000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import msgpack

from hubbub.loadtest.accounting.payload import make_payload, stream_id
from hubbub.protocol.frames import FrameDecoder, encode_frame

#: The stand-in server writes this often (seconds): publications due meanwhile go together.
TICK = 0.005


class _Conn(asyncio.Protocol):
    def __init__(self, server: StandIn) -> None:
        self.server = server
        self.decoder = FrameDecoder(1 << 20)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.subscribers.discard(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for frame in self.decoder.feed(data):
            message = msgpack.unpackb(frame)
            op, cid = message.get("op"), message.get("id")
            ok: dict[str, Any] = {}
            if op == "connect":
                ok = {"client": "c", "node": "standin", "ping": 3600, "limits": {}}
            elif op == "subscribe":
                self.server.subscribers.add(self)
                ok = {"channel": message.get("channel")}
            if cid is not None:
                self.transport.write(encode_frame(msgpack.packb({"id": cid, "ok": ok})))


class StandIn:
    """A fake server that fans out stamped publications at ``rate`` per subscriber."""

    def __init__(self, rate_per_subscriber: float, size: int, run: int) -> None:
        self.rate = rate_per_subscriber
        self.size = size
        self.run = run
        self.subscribers: set[_Conn] = set()
        self.seq = 0

    async def serve(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Conn(self), "127.0.0.1", port)
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        if not line:
            return
        sid = stream_id(1 << 30, 0)
        start = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            due = int((now - start) * self.rate)
            frames = []
            while self.seq < due:
                self.seq += 1
                intended = start + self.seq / self.rate
                data = make_payload(self.run, sid, self.seq, intended, self.size)
                push = {"push": "pub", "channel": "feed:live-0", "data": data}
                frames.append(encode_frame(msgpack.packb(push)))
            if frames:
                blob = b"".join(frames)
                for conn in list(self.subscribers):
                    if conn.transport is not None and not conn.transport.is_closing():
                        conn.transport.write(blob)


async def _measure(
    subscribers: int, total_rate: float, seconds: float, size: int
) -> dict[str, Any]:
    from hubbub.loadtest.config import RunConfig
    from hubbub.loadtest.reports.report import build_report
    from hubbub.loadtest.running.coordinator import Coordinator

    run = 7
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hubbub.loadtest.capacity", "--serve",
        "--rate", str(total_rate / subscribers), "--size", str(size), "--run", str(run),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    port = int((await proc.stdout.readline()).split()[1])
    config = RunConfig(
        hosts=(f"tcp://127.0.0.1:{port}",),
        users=subscribers,
        spawn_rate=5000,
        run_time=seconds + subscribers / 5000 + 1,
        scenario="livefeed",
        publishers=0,
        workers=1,
        run_id=run,
        grace=1.0,
    )
    coord = Coordinator(config, log=lambda line: None)

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) >= 2:  # the stand-in on one core, the worker on another
        os.sched_setaffinity(proc.pid, {cpus[-1]})

    async def go() -> None:
        await asyncio.sleep(0.3)
        if len(cpus) >= 2:
            for worker in coord.workers:
                os.sched_setaffinity(worker.proc.pid, set(cpus[:-1]))
        await asyncio.sleep(subscribers / 5000 + 0.5)
        proc.stdin.write(b"go\n")  # type: ignore[union-attr]

    starter = asyncio.get_running_loop().create_task(go())
    try:
        await coord.run()
    finally:
        starter.cancel()
        proc.kill()
        await proc.wait()
    report = build_report(coord, "capacity")
    rows = [r for r in report["timeline"] if r["msgs_in"] > 0][1:-1]  # steady seconds only
    received = sum(r["msgs_in"] for r in rows)
    cpu = sum(r["cpu"].get("0", 0) for r in rows)
    return {
        "target_per_s": total_rate,
        "received_per_s": round(received / len(rows)) if rows else 0,
        "cpu": round(cpu / len(rows), 3) if rows else 0.0,
        "us_per_msg": round(1e6 * cpu / received, 2) if received else None,
        "p99_ms": report["latency"].get("p99"),
        "client_bound": report["client_bound"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.capacity", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=100.0, help=argparse.SUPPRESS)
    p.add_argument("--run", type=int, default=7, help=argparse.SUPPRESS)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument(
        "--rates",
        default="50000,100000,150000,200000",
        help="total received messages/s to try, in order",
    )
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--size", type=int, default=100)
    args = p.parse_args(argv)
    import uvloop

    if args.serve:
        uvloop.run(StandIn(args.rate, args.size, args.run).serve(0))
        return
    print(f"{'target/s':>10} {'received/s':>11} {'worker CPU':>10} {'us/msg':>7} {'p99 ms':>8}")
    for rate in (float(r) for r in args.rates.split(",")):
        result = uvloop.run(_measure(args.subscribers, rate, args.seconds, args.size))
        print(
            f"{result['target_per_s']:>10,.0f} {result['received_per_s']:>11,} "
            f"{result['cpu']:>10.0%} {result['us_per_msg']!s:>7} {result['p99_ms']!s:>8}"
            + ("  client-bound" if result["client_bound"] else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
