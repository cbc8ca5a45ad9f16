"""What ``WAIT`` costs a publication: ``python -m tests.cluster.wait_cost``.

Starts a redis-server primary and one replica on loopback ports, then runs the
Redis engine's publish (history on) with ``?min_replicas=0`` and ``=1`` in
turns, five times (the machine's load drifts): latency of one publish at a
time (p50, p99) and throughput with 64 in flight, each turn and then the
median of the turns. Prints figures, asserts nothing (docs/clustering.md
"What WAIT costs").
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import tempfile
import time

from hubbub.cluster.redis import RedisBroker
from tests.cluster.contract import HISTORY, RecordingHandler
from tests.procs import RedisProc, free_port, start_redis

SEQUENTIAL = 2000
CONCURRENT = 5000
IN_FLIGHT = 64
TURNS = 5


async def measure(url: str, port: int) -> tuple[float, float, float, float]:
    """p50 and p99 latency (µs) one at a time; publications/s and WAITs sent
    with 64 at once."""
    broker = RedisBroker([url], node_id="wait-cost")
    await broker.start(RecordingHandler())
    try:
        latencies = []
        for i in range(SEQUENTIAL):
            started = time.perf_counter()
            await broker.publish("chat:latency", i, options=HISTORY)
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(i: int) -> None:
            async with gate:
                await broker.publish(f"chat:throughput-{i % 16}", i, options=HISTORY)

        waits = await asyncio.to_thread(_waits, port)
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(CONCURRENT)))
        rate = CONCURRENT / (time.perf_counter() - started)
        waits = await asyncio.to_thread(_waits, port) - waits
    finally:
        await broker.close()
    p50 = latencies[len(latencies) // 2] * 1e6
    p99 = latencies[len(latencies) * 99 // 100] * 1e6
    return p50, p99, rate, waits


def line(label: str, figures: tuple[float, ...]) -> str:
    p50, p99, rate, waits = figures
    return (
        f"{label}  p50 {p50:5.0f} us  p99 {p99:5.0f} us  {rate:7.0f} publications/s"
        f"  {waits:5.0f} WAITs for {CONCURRENT}"
    )


def _waits(port: int) -> int:
    found = re.search(r"cmdstat_wait:calls=(\d+)", _cli(port, "INFO", "commandstats"))
    return int(found.group(1)) if found else 0


async def main() -> None:
    primary = start_redis()
    replica = RedisProc(
        free_port(),
        tempfile.mkdtemp(prefix="hubbub-redis-"),
        args=("--replicaof", "127.0.0.1", str(primary.port)),
    )
    primary_args = ("CONFIG", "SET", "repl-diskless-sync-delay", "0")
    try:
        await asyncio.to_thread(_cli, primary.port, *primary_args)
        replica.start()
        while "master_link_status:up" not in await asyncio.to_thread(
            _cli, replica.port, "INFO", "replication"
        ):
            await asyncio.sleep(0.05)
        turns: dict[int, list[tuple[float, float, float, float]]] = {0: [], 1: []}
        for _ in range(TURNS):
            for replicas, runs in turns.items():
                url = f"{primary.url}?min_replicas={replicas}"
                runs.append(await measure(url, primary.port))
                print(line(f"min_replicas={replicas}", runs[-1]))
        print(f"median of {TURNS} turns ({IN_FLIGHT} at once for the rate):")
        for replicas, runs in turns.items():
            medians = tuple(statistics.median(run[i] for run in runs) for i in range(4))
            print(line(f"min_replicas={replicas}", medians))
    finally:
        replica.stop()
        primary.stop()


def _cli(port: int, *args: str) -> str:
    command = ["redis-cli", "-p", str(port), *args]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    return out.stdout


if __name__ == "__main__":
    asyncio.run(main())
