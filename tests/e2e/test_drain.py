"""Draining on SIGTERM (PROTOCOL.md §7, DESIGN.md "Draining") with 200 clients,
and the second signal that closes everything at once."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

from tests.e2e.probes import SlowTcp, http_get, kernel_buffer_max, log_line
from tests.e2e.rawclient import channel, open_tcp
from tests.procs import NodeProc

Factory = Callable[..., NodeProc]
MB = 1024 * 1024
DRAIN_TIMEOUT = 3.0
CLIENTS = 200
PUB = 32 * 1024
CONFIG = f"""
[limits]
drain_timeout = {DRAIN_TIMEOUT}
outbound_buffer = {32 * MB}
messages_per_second = 1000000
message_burst = 1000000
"""


async def _refused(address: tuple[str, int]) -> bool:
    try:
        _, writer = await asyncio.open_connection(*address)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_sigterm_drains_200_clients_over_the_window(node_factory: Factory) -> None:
    node = node_factory(CONFIG)
    assert node.tcp is not None
    name, bulk = channel(), channel()
    clients = [await open_tcp(node) for _ in range(CLIENTS)]
    for client in clients:
        await client.ok("subscribe", channel=name)
    # Two clients that stop reading, with more pending than the kernel holds:
    # "late" reads again within the window and must get everything, then its
    # 3001; "stuck" never does and is closed at drain_timeout.
    late, stuck = SlowTcp(node.tcp), SlowTcp(node.tcp)
    for slow in (late, stuck):
        assert "ok" in slow.request("connect")
        assert "ok" in slow.request("subscribe", channel=bulk)
    publisher = await open_tcp(node)
    wmem_max, _ = kernel_buffer_max()
    bulk_count = (wmem_max + 4 * MB) // PUB
    for seq in range(bulk_count):
        await publisher.send(
            {
                "op": "publish",
                "channel": bulk,
                "id": 10 + seq,
                "data": {"seq": seq, "b": b"d" * (PUB - 64)},
            }
        )
    assert "ok" in await publisher.reply(10 + bulk_count - 1, timeout=30)
    # Accepted just before the signal: it must reach every subscriber.
    await publisher.ok("publish", channel=name, data="last words")
    signalled = time.monotonic()
    node.signal(signal.SIGTERM)

    results = await asyncio.gather(*(c.closed(timeout=10) for c in clients))
    # By the first 3001 the listeners are closed: new clients are refused.
    assert await _refused(node.tcp)
    assert node.ws is not None and await _refused(node.ws)
    status, body = await asyncio.to_thread(http_get, node.admin_url + "/readyz")
    assert status == 503 and '"draining": true' in body  # still draining: "stuck"
    afters = []
    for got, _ in results:
        assert [m.get("push") for m in got] == ["pub", "disconnect"], got
        assert got[0]["data"] == "last words"
        assert got[1]["code"] == 3001 and got[1]["reconnect"] is True
        afters.append(got[1]["after"])
    window_ms = DRAIN_TIMEOUT * 1000
    assert all(0 <= a <= window_ms for a in afters)
    assert min(afters) < 0.2 * window_ms and max(afters) > 0.8 * window_ms, afters
    assert len(set(afters)) > CLIENTS // 2  # each its own

    await asyncio.sleep(max(0.0, signalled + 1.0 - time.monotonic()))
    messages, _ = await asyncio.to_thread(late.read_all, 10)
    seqs = [m["data"]["seq"] for m in messages if m.get("push") == "pub"]
    assert seqs == list(range(bulk_count))  # nothing lost
    assert messages[-1]["push"] == "disconnect" and messages[-1]["code"] == 3001

    rc = await asyncio.to_thread(node.wait, DRAIN_TIMEOUT + 5)
    exited = time.monotonic() - signalled
    assert rc == 0, node.log_text()
    assert exited <= DRAIN_TIMEOUT + 1.0, exited
    messages, _ = await asyncio.to_thread(stuck.read_all, 10)  # closed, not flushed
    assert not [m for m in messages if m.get("push") == "disconnect"]
    assert sum(1 for m in messages if m.get("push") == "pub") < bulk_count
    assert "Traceback" not in node.log_text()
    for slow in (late, stuck):
        slow.close()
    for client in [*clients, publisher]:
        await client.close()


async def test_second_signal_closes_everything_at_once(node_factory: Factory) -> None:
    node = node_factory("[limits]\ndrain_timeout = 60\n")
    assert node.tcp is not None
    name = channel()
    stuck = SlowTcp(node.tcp)
    assert "ok" in stuck.request("connect")
    assert "ok" in stuck.request("subscribe", channel=name)
    publisher = await open_tcp(node)
    wmem_max, _ = kernel_buffer_max()
    for i in range((wmem_max + 2 * MB) // PUB):  # more than the kernel holds
        await publisher.send({"op": "publish", "channel": name, "data": b"x" * PUB, "id": i + 5})
    await publisher.reply(4 + (wmem_max + 2 * MB) // PUB, timeout=30)
    node.signal(signal.SIGTERM)
    await log_line(node, "event=draining")
    node.signal(signal.SIGTERM)
    assert await asyncio.to_thread(node.wait, 10) == 0
    assert 'action="close now"' in node.log_text()
    stuck.close()
    await publisher.close()


async def test_drain_with_admin_keep_alive_connections_logs_no_error(
    node_factory: Factory,
) -> None:
    """Issue 11 item 5: HTTP keep-alive connections to the admin listener (a
    Prometheus scraper, a load balancer's health checks) open at stop end with
    the node, without an error-level traceback."""
    node = node_factory("[limits]\ndrain_timeout = 0.5\n")
    assert node.admin is not None
    kept = []
    for _ in range(3):
        reader, writer = await asyncio.open_connection(*node.admin)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: hubbub\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        kept.append(writer)
    node.signal(signal.SIGTERM)
    assert await asyncio.to_thread(node.wait, 10) == 0
    await log_line(node, "event=stopped")
    errors = [line for line in node.lines if "level=error" in line or "Traceback" in line]
    assert errors == [], errors[:2]
    for writer in kept:
        writer.close()
