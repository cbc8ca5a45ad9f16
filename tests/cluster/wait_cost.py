"""What ``WAIT`` costs a publication: ``python -m tests.cluster.wait_cost``.

Starts a redis-server primary and one replica on loopback ports, then runs the
Redis engine's publish (history on) with ``?min_replicas=0`` and ``=1`` in
turns: latency of one publish at a time (p50, p99) and throughput with 64 in
flight. Prints figures, asserts nothing (docs/clustering.md "What WAIT costs").
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time

from hubbub.cluster.redis import RedisBroker
from tests.cluster.contract import HISTORY, RecordingHandler
from tests.procs import RedisProc, free_port, start_redis

SEQUENTIAL = 2000
CONCURRENT = 5000
IN_FLIGHT = 64


async def measure(url: str) -> str:
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

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(CONCURRENT)))
        rate = CONCURRENT / (time.perf_counter() - started)
    finally:
        await broker.close()
    p50 = latencies[len(latencies) // 2] * 1e6
    p99 = latencies[len(latencies) * 99 // 100] * 1e6
    return f"p50 {p50:5.0f} us  p99 {p99:5.0f} us  {rate:7.0f} publications/s ({IN_FLIGHT} at once)"


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
        for _ in range(2):  # in turns: the machine's load drifts
            for replicas in (0, 1):
                figures = await measure(f"{primary.url}?min_replicas={replicas}")
                print(f"min_replicas={replicas}  {figures}")
    finally:
        replica.stop()
        primary.stop()


def _cli(port: int, *args: str) -> str:
    command = ["redis-cli", "-p", str(port), *args]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    return out.stdout


if __name__ == "__main__":
    asyncio.run(main())
