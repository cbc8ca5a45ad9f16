"""Rate limits, sizes, connection limits, backpressure and keepalive against a
real ``hubbub serve`` (docs/limits.md, PROTOCOL.md §2, §5).

Every limit hit must also show in ``hubbub_limited_total{what=...}`` and in an
aggregated ``limits`` log line.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from websockets.frames import Frame, Opcode

from hubbub.protocol.codec import encode_msgpack
from hubbub.protocol.frames import encode_frame
from tests.e2e.probes import (
    SlowTcp,
    kernel_buffer_max,
    log_line,
    metric,
    rss_bytes,
    wait_for,
)
from tests.e2e.rawclient import TcpRaw, channel, open_tcp, open_ws
from tests.procs import ROOT, NodeProc

Factory = Callable[..., NodeProc]
MB = 1024 * 1024

# -- the command token bucket ----------------------------------------------------

RATE_CONFIG = """
[limits]
messages_per_second = 20
message_burst = 10
"""


async def test_over_the_bucket_is_429_with_retry_after(node_factory: Factory) -> None:
    node = node_factory(RATE_CONFIG)
    started = time.monotonic()
    client = await open_tcp(node)  # connect took one token
    await _pipeline(client, [{"op": "ping", "id": i} for i in range(2, 30)])
    replies = [await client.reply(i) for i in range(2, 30)]
    elapsed = time.monotonic() - started
    oks = [r for r in replies if "ok" in r]
    refused = [r["error"] for r in replies if "error" in r]
    # The bucket held 10, and refills at 20/s while this ran.
    assert 9 <= len(oks) <= 9 + int(elapsed * 20) + 1, (replies, elapsed)
    assert replies[: len(oks)] == oks  # admitted first, then refused
    assert all(e["code"] == 429 and 1 <= e["retry_after"] <= 50 for e in refused), refused
    # Fire-and-forget: the refusal is an error push naming the op.
    await client.send({"op": "ping"})
    push = await client.push("error")
    assert push["code"] == 429 and push["op"] == "ping" and push["retry_after"] >= 1
    # Waiting as told gets through.
    await asyncio.sleep(refused[-1]["retry_after"] / 1000 + 0.06)
    assert "ok" in await client.request("ping")
    assert metric(node, "hubbub_limited_total", what="rate") >= len(refused) + 1
    await log_line(node, "event=limits what=rate")
    await client.close()


async def test_pong_never_counts(node_factory: Factory) -> None:
    node = node_factory(RATE_CONFIG)
    client = await open_tcp(node)
    await _pipeline(client, [{"op": "ping", "id": i} for i in range(2, 12)])  # empties it
    await _pipeline(client, [{"op": "pong"}] * 500)  # far past the abuse rule if it counted
    await asyncio.sleep(0.6)  # the bucket refills some tokens
    reply = await client.request("ping")
    assert "ok" in reply, reply
    assert not [m for m in client.pushes if m.get("push") == "error"], client.pushes
    await client.close()


async def test_a_client_that_keeps_going_is_cut_with_3006(node_factory: Factory) -> None:
    node = node_factory(RATE_CONFIG)
    client = await open_tcp(node)
    # More than 2 x burst refusals within burst / rate = 0.5 s: abuse.
    await _pipeline(client, [{"op": "ping", "id": i} for i in range(2, 200)])
    push, _ = await client.disconnected()
    assert push["code"] == 3006 and push["reconnect"] is True
    assert push["after"] == 500  # the bucket's refill time
    refused = [m for m in client.seen if "error" in m]
    assert len(refused) >= 20  # 2 x burst 429s at least came before the cut
    assert client.seen[-2]["error"]["code"] == 429  # ... right before it
    assert metric(node, "hubbub_limited_total", what="rate_abuse") == 1
    assert metric(node, "hubbub_disconnects_total", code="3006") == 1


async def test_ws_client_gets_429_and_3006_as_close_code(node_factory: Factory) -> None:
    node = node_factory(RATE_CONFIG)
    client = await open_ws(node)
    for i in range(2, 200):
        await client.send({"op": "ping", "id": i})
    push, closed = await client.disconnected()
    assert push["code"] == 3006
    assert closed.code == 3006
    assert any(m.get("error", {}).get("code") == 429 for m in client.seen)


async def _pipeline(client: TcpRaw, messages: list[dict[str, Any]]) -> None:
    """Send ``messages`` in one write, so the node handles them back to back."""
    await client.send_bytes(b"".join(encode_frame(encode_msgpack(m)) for m in messages))


# -- per-namespace publish rate and size ------------------------------------------

NAMESPACE_LIMITS = """
[limits]
messages_per_second = 100000
message_burst = 100000

[auth]
api_key = "k"

[namespaces.slow]
publish_rate = 2

[namespaces.small]
max_publication = 100
"""


async def test_namespace_publish_rate_is_per_channel(node_factory: Factory) -> None:
    node = node_factory(NAMESPACE_LIMITS)
    a, b = await open_tcp(node), await open_tcp(node)
    first, second = channel("slow:"), channel("slow:")
    # Three publications from two clients at once: the channel's burst is 2.
    await _pipeline(a, [{"op": "publish", "channel": first, "data": n, "id": n} for n in (1, 2)])
    await _pipeline(b, [{"op": "publish", "channel": first, "data": 3, "id": 3}])
    replies = [await a.reply(1), await a.reply(2), await b.reply(3)]
    assert sum(1 for r in replies if "ok" in r) == 2, replies
    (reply,) = [r for r in replies if "error" in r]
    assert reply["error"]["code"] == 429 and 1 <= reply["error"]["retry_after"] <= 500
    assert "ok" in await a.request("publish", channel=second, data=1)  # another channel
    assert "ok" in await a.request("publish", channel=channel(), data=1)  # no limit there
    # The publish rate is not the client's fault: it never leads to 3006.
    await _pipeline(
        a, [{"op": "publish", "channel": first, "data": 4, "id": 100 + n} for n in range(50)]
    )
    replies = [await a.reply(100 + n) for n in range(50)]
    limited = sum(1 for r in replies if r.get("error", {}).get("code") == 429)
    assert limited >= 45, replies
    assert "ok" in await a.request("ping")
    assert metric(node, "hubbub_limited_total", what="publish_rate") == limited + 1
    await a.close()
    await b.close()


async def test_max_publication_is_413_inside_an_allowed_frame(node_factory: Factory) -> None:
    node = node_factory(NAMESPACE_LIMITS)
    client = await open_tcp(node)
    name = channel("small:")
    await client.ok("subscribe", channel=name)
    # Measured as msgpack: 98 raw bytes + a 2-byte bin header = 100, the limit.
    assert "ok" in await client.request("publish", channel=name, data=b"x" * 98)
    pub = await client.push("pub", channel=name)
    assert pub["data"] == b"x" * 98
    reply = await client.request("publish", channel=name, data=b"x" * 99)
    assert reply["error"]["code"] == 413, reply
    assert reply["error"]["max_publication"] == 100
    # A JSON client's value is measured the same way (its msgpack encoding).
    ws = await open_ws(node, "hubbub.v1.json")
    reply = await ws.request("publish", channel=name, data={"text": "y" * 200})
    assert reply["error"]["code"] == 413
    # The server API is held to it too.
    status, _ = _api_publish(node, {"channel": name, "data": "z" * 200})
    assert status == 413
    status, _ = _api_publish(node, {"channel": name, "data": "z" * 10})
    assert status == 200
    assert metric(node, "hubbub_limited_total", what="max_publication") == 3
    await client.close()
    await ws.close()


def _api_publish(node: NodeProc, body: dict[str, Any]) -> tuple[int, str]:
    request = urllib.request.Request(
        node.admin_url + "/api/publish",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# -- counts: subscriptions, frames, connections ----------------------------------


async def test_max_subscriptions_is_403(node_factory: Factory) -> None:
    node = node_factory("[limits]\nmax_subscriptions = 3\n")
    client = await open_tcp(node)
    names = [channel() for _ in range(4)]
    for name in names[:3]:
        await client.ok("subscribe", channel=name)
    reply = await client.request("subscribe", channel=names[3])
    assert reply["error"]["code"] == 403
    await client.ok("unsubscribe", channel=names[0])
    await client.ok("subscribe", channel=names[3])  # room again
    assert metric(node, "hubbub_limited_total", what="max_subscriptions") == 1
    await client.close()


async def test_max_frame_hits_are_counted_on_both_transports(node_factory: Factory) -> None:
    node = node_factory("[limits]\nmax_frame = 1024\n")
    tcp = await open_tcp(node)
    await tcp.send_bytes((1025).to_bytes(4, "big"))
    push, _ = await tcp.disconnected()
    assert push["code"] == 3004
    ws = await open_ws(node)
    await ws.send_bytes(b"\x80" * 1025)
    _, closed = await ws.closed()
    assert closed.code == 1009
    await wait_for(lambda: metric(node, "hubbub_limited_total", what="max_frame") == 2)


async def test_max_connections_refuses_with_3007(node_factory: Factory) -> None:
    node = node_factory("[limits]\nmax_connections = 3\n")
    kept = [await open_tcp(node), await open_tcp(node), await open_ws(node)]
    # TCP: refused before anything is read. A client that sent its connect at
    # once still gets the push (the node drops its input instead of resetting).
    refused = await open_tcp(node, handshake=False)
    await refused.send({"op": "connect", "id": 1})
    push, _ = await refused.disconnected()
    assert push["code"] == 3007 and push["reconnect"] is True
    assert refused.seen == [push]  # the connect was never answered
    assert 1000 <= push["after"] <= 5000
    # WebSocket: the handshake completes, then the push and close code 3007.
    ws = await open_ws(node, handshake=False)
    push, closed = await ws.disconnected()
    assert push["code"] == 3007 and 1000 <= push["after"] <= 5000
    assert closed.code == 3007
    # Refused connections did not take a place; a closed one frees one.
    await kept.pop().close()
    await wait_for(lambda: metric(node, "hubbub_connections", transport="ws") == 0)
    again = await open_ws(node)
    assert "ok" in await again.request("ping")
    assert metric(node, "hubbub_limited_total", what="max_connections") == 2
    for client in [*kept, again]:
        await client.close()


async def test_max_connections_per_ip(node_factory: Factory) -> None:
    node = node_factory("[limits]\nmax_connections_per_ip = 2\n")
    assert node.tcp is not None
    kept = [await open_tcp(node), await open_tcp(node)]
    refused = await open_tcp(node, handshake=False)
    push, _ = await refused.disconnected()
    assert push["code"] == 3007
    # Another source address (all of 127/8 is loopback) has its own count.
    reader, writer = await asyncio.open_connection(*node.tcp, local_addr=("127.0.0.2", 0))
    other = TcpRaw(reader, writer)
    await other.connect()
    assert "ok" in await other.request("ping")
    assert metric(node, "hubbub_limited_total", what="max_connections_per_ip") == 1
    for client in [*kept, other]:
        await client.close()


# -- reading is backpressured -------------------------------------------------------


async def test_a_client_that_does_not_read_its_replies_is_not_read(
    node_factory: Factory,
) -> None:
    """Each ``history`` command (a few bytes) asks for a 300 KB reply. A client
    that sends 2000 of them and reads nothing would make the node hold 600 MB
    if it kept reading commands; it stops reading once about
    ``outbound_buffer`` of replies is pending, and the keepalive cuts the
    client, whose commands are no longer processed."""
    node = node_factory("""
[limits]
messages_per_second = 100000
message_burst = 100000
ping_interval = 1.0
ping_timeout = 1.0

[namespaces.chat]
history_size = 10
""")
    name = channel("chat:")
    publisher = await open_tcp(node)
    for _ in range(10):
        await publisher.ok("publish", channel=name, data=b"h" * 30_000)
    await publisher.close()
    baseline = rss_bytes(node.proc.pid)
    slow = SlowTcp(node.tcp)  # type: ignore[arg-type]
    assert "ok" in slow.request("connect")
    slow.sock.sendall(
        b"".join(  # 2000 x 300 KB of replies asked for
            encode_frame(encode_msgpack({"op": "history", "channel": name, "id": i}))
            for i in range(2, 2002)
        )
    )
    peak = baseline
    for _ in range(40):  # 2 s: ping interval + timeout, the cut comes after
        peak = max(peak, rss_bytes(node.proc.pid))
        await asyncio.sleep(0.05)
    await wait_for(
        lambda: metric(node, "hubbub_disconnects_total", code="3003") == 1,
        timeout=10,
        what="the stale cut",
    )
    messages, _ = await asyncio.to_thread(slow.read_all)
    replies = [m for m in messages if "id" in m]
    # Kernel buffers (wmem max + the small receive buffer) and outbound_buffer
    # of replies were processed; nothing like the 2000 asked for. (Each reply
    # is a page of at most max_frame now, no longer the whole 300 KB history.)
    wmem_max, _ = kernel_buffer_max()
    size = len(encode_frame(encode_msgpack(replies[0])))
    assert len(replies) <= (wmem_max + 2 * MB) // size + 5, (len(replies), size)
    assert peak - baseline < 40 * MB, (peak - baseline) / MB
    assert metric(node, "hubbub_commands_total", op="history", result="ok") == len(replies)
    slow.close()


async def test_a_websocket_ping_flood_without_reading_is_not_read(
    node_factory: Factory,
) -> None:
    """WebSocket pings are answered by the protocol layer, not by commands: a
    client that floods them and reads no pong is not read further either."""
    node = node_factory(None)
    assert node.ws is not None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(node.ws)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    ping = Frame(Opcode.PING, b"p" * 125).serialize(mask=True, extensions=[])
    chunk = ping * (65536 // len(ping))
    baseline = rss_bytes(node.proc.pid)

    def flood() -> int:
        sent = 0
        sock.settimeout(2)
        try:
            while sent < 64 * MB:
                sock.sendall(chunk)
                sent += len(chunk)
        except TimeoutError:
            pass
        return sent

    sent = await asyncio.to_thread(flood)
    growth = rss_bytes(node.proc.pid) - baseline
    assert sent < 64 * MB  # it stalled: kernel buffers (at most 36 MB here) are full
    assert growth < 16 * MB, (growth / MB, sent / MB)
    sock.close()


# -- keepalive and handshake --------------------------------------------------------

TIMED_CONFIG = """
[limits]
handshake_timeout = 0.5
ping_interval = 0.5
ping_timeout = 0.5
"""


async def test_handshake_timeout_on_websocket_is_3004(node_factory: Factory) -> None:
    node = node_factory(TIMED_CONFIG)
    ws = await open_ws(node, handshake=False)
    push, closed = await ws.disconnected()
    assert push["code"] == 3004 and closed.code == 3004
    assert metric(node, "hubbub_disconnects_total", code="3004") == 1


async def test_handshake_timeout_before_the_http_upgrade(node_factory: Factory) -> None:
    """A socket that opens the WebSocket port and never sends its request."""
    node = node_factory(TIMED_CONFIG)
    assert node.ws is not None
    reader, writer = await asyncio.open_connection(*node.ws)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing said
    writer.close()


_PONGER = """
import socket, sys
from hubbub.protocol.codec import decode_msgpack, encode_msgpack
from hubbub.protocol.frames import FrameDecoder, encode_frame
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
send = lambda m: s.sendall(encode_frame(encode_msgpack(m)))
send({"op": "connect", "id": 1})
decoder = FrameDecoder(2**31)
while True:
    data = s.recv(65536)
    if not data:
        print("eof", flush=True)
        break
    for payload in decoder.feed(data):
        m = decode_msgpack(payload)
        if m.get("push") == "ping":
            send({"op": "pong"})
        print(m.get("push") or "reply", m.get("code", ""), flush=True)
"""


async def test_a_stopped_client_process_is_stale_3003(node_factory: Factory) -> None:
    """A client that answers pings is kept; once SIGSTOPped (its kernel still
    ACKs, as with a half-open peer nothing answers) it is cut with 3003."""
    node = node_factory(TIMED_CONFIG)
    assert node.tcp is not None
    proc = subprocess.Popen(
        [sys.executable, "-c", _PONGER, *map(str, node.tcp)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    try:
        await wait_for(lambda: lines.count("ping") >= 4, what=f"pings answered: {lines}")
        assert metric(node, "hubbub_disconnects_total", code="3003") == 0
        proc.send_signal(signal.SIGSTOP)
        await wait_for(
            lambda: metric(node, "hubbub_disconnects_total", code="3003") == 1, what="the stale cut"
        )
        proc.send_signal(signal.SIGCONT)
        await asyncio.to_thread(proc.wait, 5)
        assert lines[-2:] == ["disconnect 3003", "eof"], lines
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()
    assert metric(node, "hubbub_limited_total", what="ping_timeout") == 1


# -- slow consumers ---------------------------------------------------------------

PUB_SIZE = 32 * 1024
WINDOW = 8  # publications a fast subscriber may be behind the publisher
FLOOD = 50 * MB


def _flood_size(outbound_buffer: int) -> int:
    """At least 50 MB, and many times what the kernel and the node can hold
    for one slow client (its socket send buffer can grow to tcp_wmem max; its
    receive buffer is pinned small with SO_RCVBUF)."""
    wmem_max, _ = kernel_buffer_max()
    return max(FLOOD, 8 * (wmem_max + outbound_buffer))


class _FastSubscriber:
    """Reads everything as it comes, checking the order of ``seq``."""

    def __init__(self, client: TcpRaw, name: str, total: int) -> None:
        self.client, self.name, self.total = client, name, total
        self.seqs: list[int] = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while len(self.seqs) < self.total:
            message = await self.client.recv(timeout=30)
            if message.get("push") == "pub" and message.get("channel") == self.name:
                self.seqs.append(message["data"]["seq"])


async def _flood(node: NodeProc, name: str, slow_count: int) -> dict[str, Any]:
    """Subscribe fast and slow clients to ``name``, publish the flood, and
    sample the node's RSS throughout."""
    total = _flood_size(MB) // PUB_SIZE
    fast = [await open_tcp(node) for _ in range(2)]
    for client in fast:
        await client.ok("subscribe", channel=name)
    slow = [SlowTcp(node.tcp) for _ in range(slow_count)]  # type: ignore[arg-type]
    for one in slow:
        assert "ok" in one.request("connect")
        assert "ok" in one.request("subscribe", channel=name)
    readers = [_FastSubscriber(c, name, total) for c in fast]
    publisher = await open_tcp(node)
    await asyncio.sleep(0.3)
    baseline = rss_bytes(node.proc.pid)
    peak = baseline
    blob = b"p" * (PUB_SIZE - 64)
    for seq in range(total):
        # Fast subscribers are never more than WINDOW publications behind
        # (well under outbound_buffer): they are the ones that keep up.
        while min(len(r.seqs) for r in readers) < seq - WINDOW:
            await asyncio.sleep(0.001)
        await publisher.send({"op": "publish", "channel": name, "data": {"seq": seq, "b": blob}})
        if seq % 64 == 0:
            peak = max(peak, rss_bytes(node.proc.pid))
    reply = await publisher.request("ping", timeout=30)  # every publish was handled
    assert "ok" in reply
    while not all(r.task.done() for r in readers):
        peak = max(peak, rss_bytes(node.proc.pid))
        await asyncio.sleep(0.05)
    for r in readers:
        await r.task
        assert r.seqs == list(range(total))  # everything, in order
    for client in [*fast, publisher]:
        await client.close()
    return {"total": total, "slow": slow, "baseline": baseline, "peak": peak}


async def test_slow_consumers_are_cut_with_3002_and_memory_stays_bounded(
    node_factory: Factory,
) -> None:
    node = node_factory("""
[limits]
messages_per_second = 1000000
message_burst = 1000000
outbound_buffer = 1048576
""")
    slow_count = 4
    result = await _flood(node, channel("live:"), slow_count)
    growth = result["peak"] - result["baseline"]
    # Bounded by what the node may hold for its clients, not by the 50 MB that
    # went through it: well under outbound_buffer x (slow + fast clients) plus
    # allocator slack.
    assert growth < (slow_count + 2) * MB + 16 * MB, growth / MB
    for client in result["slow"]:
        messages, _ = await asyncio.to_thread(client.read_all)  # must end: closed
        seqs = [m["data"]["seq"] for m in messages if m.get("push") == "pub"]
        assert seqs == list(range(len(seqs)))  # a prefix, in order
        assert len(seqs) < result["total"]
        pushes = [m for m in messages if m.get("push") == "disconnect"]
        assert all(p["code"] == 3002 for p in pushes)  # may or may not have arrived
        client.close()
    assert metric(node, "hubbub_disconnects_total", code="3002") == slow_count
    assert metric(node, "hubbub_limited_total", what="outbound_buffer") >= slow_count
    await log_line(node, "event=limits what=outbound_buffer")


async def test_namespace_drop_policy_sends_lag_with_the_dropped_count(
    node_factory: Factory,
) -> None:
    node = node_factory("""
[limits]
messages_per_second = 1000000
message_burst = 1000000
slow_consumer = "disconnect"

[namespaces.feed]
slow_consumer = "drop"
""")
    name = channel("feed:")
    result = await _flood(node, name, 1)
    total = result["total"]
    assert result["peak"] - result["baseline"] < 3 * MB + 16 * MB
    (slow,) = result["slow"]

    def seen_all(messages: list[dict[str, Any]]) -> bool:
        pubs = sum(1 for m in messages if m.get("push") == "pub")
        dropped = sum(m["dropped"] for m in messages if m.get("push") == "lag")
        return pubs + dropped >= total

    messages = await asyncio.to_thread(slow.read_until, seen_all)
    seqs = [m["data"]["seq"] for m in messages if m.get("push") == "pub"]
    lags = [m for m in messages if m.get("push") == "lag"]
    assert lags and all(m["channel"] == name and m["dropped"] > 0 for m in lags)
    assert len(seqs) + sum(m["dropped"] for m in lags) == total  # each pub: got or counted
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert "ok" in slow.request("ping")  # still connected
    slow.close()
    assert metric(node, "hubbub_disconnects_total", code="3002") == 0
    assert metric(node, "hubbub_deliveries_dropped_total") == total - len(seqs)
