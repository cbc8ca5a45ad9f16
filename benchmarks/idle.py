"""Idle memory: the server's resident memory per idle connection.

For each transport a fresh server: open a few warm-up connections (so
one-time allocations are not charged to the measured ones), read ``VmRSS``,
open N more idle connections (TCP: ``connect`` answered; WebSocket: handshake
done and ``connect`` answered), let the server settle, read ``VmRSS`` again.
KB per connection = the difference / N.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import procstat
from benchmarks.fanout import open_sessions
from benchmarks.launcher import BENCH_CONFIG, start_node
from hubbub.client.lean import LeanSession

WARMUP_CONNECTIONS = 100
SETTLE = 1.0


@dataclass
class IdleResult:
    """Resident memory cost of N idle connections of one transport."""

    transport: str
    connections: int
    rss_before_kb: int
    rss_after_kb: int
    kb_per_connection: float
    open_seconds: float
    still_open: int


async def measure(transport: str, count: int) -> IdleResult:
    with start_node(BENCH_CONFIG, die_with_parent=True) as server:
        procstat.pin(server.pid, procstat.SERVER_CORE)
        url = server.tcp_url if transport == "tcp" else server.ws_url

        def make(n: int) -> list[LeanSession]:
            return [LeanSession([url], reconnect=False, name="bench") for _ in range(n)]

        conns = make(WARMUP_CONNECTIONS)
        try:
            await open_sessions(conns)
            await asyncio.sleep(SETTLE)
            before = procstat.rss_kb(server.pid)
            started = time.monotonic()
            measured = make(count)
            conns += measured
            await open_sessions(measured, timeout=120.0)
            opened = time.monotonic() - started
            await asyncio.sleep(SETTLE)
            after = procstat.rss_kb(server.pid)
            still_open = sum(1 for c in measured if c.connected)
        finally:
            for conn in conns:
                await conn.close()
            await asyncio.sleep(0.2)
    return IdleResult(
        transport=transport,
        connections=count,
        rss_before_kb=before,
        rss_after_kb=after,
        kb_per_connection=(after - before) / count,
        open_seconds=opened,
        still_open=still_open,
    )


async def run_idle(*, connections: int, log: Any = print) -> list[IdleResult]:
    results = []
    for transport in ("tcp", "ws"):
        result = await measure(transport, connections)
        log(
            f"idle: {connections} {transport} connections: "
            f"{result.kb_per_connection:.1f} KB each (opened in {result.open_seconds:.1f} s)"
        )
        results.append(result)
    return results


def as_json(results: list[IdleResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
