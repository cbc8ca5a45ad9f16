"""One real deployment behind Debian's nginx (docs/deploy.md): the shipped
configs/nginx/nginx.conf rendered with loopback ports, three ``hubbub serve``
nodes on one redis-server behind it, clients of both transports through it.

- WebSocket and TCP clients connect through nginx and get each other's
  publications across nodes.
- The per-IP limit counts the client's address, not nginx's: X-Forwarded-For on
  WebSocket, the PROXY protocol on TCP. Clients bind their own loopback source
  address (127.0.0.N) so nginx sees distinct clients; what a client writes in its
  own X-Forwarded-For or PROXY header is not believed.
- A rolling SIGTERM restart of the three nodes while publications flow: the
  clients move through nginx to the other nodes, recover from history, and end
  with every publication exactly once, in order.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from hubbub.client import Client, Subscription
from hubbub.protocol.codes import DisconnectCode
from hubbub.protocol.proxy import encode_v1
from tests.e2e.nginx import NginxProc, render_nginx_conf, start_nginx
from tests.e2e.rawclient import MSGPACK, RawClient, TcpRaw, WsRaw
from tests.procs import NodeProc, RedisProc, free_port, start_node, start_redis

API_KEY = "nginx-e2e"
PER_IP = 3
CONFIG = f"""
[server]
trusted_proxies = ["127.0.0.1"]   # nginx connects to the nodes from 127.0.0.1
proxy_protocol = true

[limits]
max_connections_per_ip = {PER_IP}
drain_timeout = 1.0
messages_per_second = 10000
message_burst = 10000

[auth]
api_key = "{API_KEY}"

[namespaces.feed]
history_size = 1000
history_ttl = 300
"""
#: Bound on any single wait: a guard against hanging, never a timing assertion.
WAIT = 15.0


@dataclass
class Stack:
    redis: RedisProc
    nginx: NginxProc | None
    nodes: list[NodeProc]
    ports: list[tuple[int, int]]  # (tcp, ws) of each node, fixed across restarts
    ws_port: int
    tcp_port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    @property
    def tcp_url(self) -> str:
        return f"tcp://127.0.0.1:{self.tcp_port}"

    def start(self, i: int) -> NodeProc:
        tcp, ws = self.ports[i]
        node = start_node(
            CONFIG,
            redis=[self.redis.url],
            args=["--tcp", f"127.0.0.1:{tcp}", "--ws", f"127.0.0.1:{ws}",
                  "--node-id", f"node-{i}"],
        )
        self.nodes[i] = node
        return node


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    redis = start_redis()
    ports = [(free_port(), free_port()) for _ in range(3)]
    ws_port, tcp_port = free_port(), free_port()
    prefix: Path = tmp_path_factory.mktemp("nginx")
    conf = render_nginx_conf(
        prefix, ws=ws_port, tcp=tcp_port,
        upstream_ws=[ws for _, ws in ports], upstream_tcp=[tcp for tcp, _ in ports],
    )
    s = Stack(redis, None, [None] * 3, ports, ws_port, tcp_port)  # type: ignore[list-item]
    try:
        with ThreadPoolExecutor(3) as pool:  # start the three at once
            list(pool.map(s.start, range(3)))
        s.nginx = start_nginx(conf, ws_port)  # after the nodes: none is marked down
        yield s
    finally:
        for node in s.nodes:
            if node is not None:
                node.stop()
        if s.nginx is not None:
            s.nginx.stop()
        redis.stop()


@pytest.fixture
async def exits() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


async def ws_from(stack: Stack, source: str, forwarded_for: str | None = None) -> WsRaw:
    """A raw WebSocket client through nginx from loopback address ``source``."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else None
    ws = await asyncio.wait_for(
        connect(stack.ws_url, subprotocols=[Subprotocol(MSGPACK)], compression=None,
                additional_headers=headers, local_addr=(source, 0)),
        WAIT,
    )
    return WsRaw(ws)


async def tcp_from(stack: Stack, source: str) -> TcpRaw:
    """A raw TCP client through nginx from loopback address ``source``."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", stack.tcp_port, local_addr=(source, 0)), WAIT
    )
    return TcpRaw(reader, writer)


async def admitted(client: RawClient) -> bool:
    """True when ``connect`` succeeds; False when the node refused the connection
    with 3007 (WebSocket: the close code, TCP: the ``disconnect`` push)."""
    try:
        reply = await client.request("connect")
    except (AssertionError, ConnectionClosed, ConnectionError):  # closed before the reply
        got, closed = await client.closed()
        codes = {m.get("code") for m in [*client.seen, *got] if m.get("push") == "disconnect"}
        assert DisconnectCode.CONNECTION_LIMIT in codes | {closed.code}, (closed, client.seen)
        return False
    assert "ok" in reply, reply
    return True


async def fill_per_ip(opened: list[RawClient], open_one: Any) -> int:
    """Open clients with ``open_one(i)`` until one is refused (3007); how many
    were admitted first. Three nodes of PER_IP each: at most 3 x PER_IP."""
    for i in range(3 * PER_IP + 1):
        client = await open_one(i)
        opened.append(client)
        if not await admitted(client):
            return i
    raise AssertionError(f"no 3007 after {3 * PER_IP + 1} connections from one address")


async def test_ws_and_tcp_clients_through_nginx_reach_each_other(
    stack: Stack, exits: AsyncExitStack
) -> None:
    # Three of each, held open: least_conn gives each of a kind its own node.
    urls = [stack.ws_url] * 3 + [stack.tcp_url] * 3
    clients = [await exits.enter_async_context(Client(url)) for url in urls]
    assert {c.info["node"] for c in clients} == {"node-0", "node-1", "node-2"}
    subs = [await c.subscribe("feed:hello") for c in clients]
    for i, client in enumerate(clients):
        await client.publish("feed:hello", i)
    orders = []
    for sub in subs:
        async with asyncio.timeout(WAIT):
            orders.append([(await anext(sub)).data for _ in range(len(clients))])
    assert sorted(orders[0]) == list(range(len(clients)))  # every publisher, once
    assert all(order == orders[0] for order in orders)  # one order on every node


async def test_per_ip_limit_sees_the_client_through_x_forwarded_for(stack: Stack) -> None:
    opened: list[RawClient] = []
    try:
        # Each connection claims another address in its own X-Forwarded-For: not believed.
        admitted_count = await fill_per_ip(
            opened, lambda i: ws_from(stack, "127.0.0.2", forwarded_for=f"127.0.1.{i}")
        )
        assert 1 <= admitted_count <= 3 * PER_IP
        # Another client address is a fresh count on every node.
        other = await ws_from(stack, "127.0.0.3")
        opened.append(other)
        assert await admitted(other)
    finally:
        for client in opened:
            await client.close()


async def test_per_ip_limit_sees_the_client_through_the_proxy_protocol(stack: Stack) -> None:
    opened: list[RawClient] = []
    try:
        admitted_count = await fill_per_ip(opened, lambda i: tcp_from(stack, "127.0.0.4"))
        assert 1 <= admitted_count <= 3 * PER_IP
        other = await tcp_from(stack, "127.0.0.5")
        opened.append(other)
        assert await admitted(other)
    finally:
        for client in opened:
            await client.close()


async def test_a_proxy_header_from_a_client_is_not_believed(stack: Stack) -> None:
    # Through nginx: nginx's header comes first; the client's own is a bad frame.
    client = await tcp_from(stack, "127.0.0.6")
    await client.send_bytes(encode_v1(("127.0.2.1", 1), ("127.0.0.1", stack.tcp_port)))
    assert (await client.disconnected())[0]["code"] == DisconnectCode.PROTOCOL_ERROR
    # Straight to a node from an untrusted address: the same.
    tcp_port = stack.ports[0][0]
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", tcp_port, local_addr=("127.0.0.7", 0)
    )
    direct = TcpRaw(reader, writer)
    await direct.send_bytes(encode_v1(("127.0.2.1", 1), ("127.0.0.1", tcp_port)))
    assert (await direct.disconnected())[0]["code"] == DisconnectCode.PROTOCOL_ERROR
    # From the trusted address without a header: refused, nothing is guessed.
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
    bare = TcpRaw(reader, writer)
    await bare.send({"op": "connect", "id": 1})
    assert (await bare.disconnected())[0]["code"] == DisconnectCode.PROTOCOL_ERROR


async def api_publish(node: NodeProc, channel: str, data: Any) -> int:
    """POST /api/publish on ``node``'s admin listener; the HTTP status."""
    assert node.admin is not None
    body = json.dumps({"channel": channel, "data": data}).encode()
    reader, writer = await asyncio.open_connection(*node.admin)
    try:
        writer.write(
            b"POST /api/publish HTTP/1.1\r\nHost: hubbub\r\nConnection: close\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        status_line = await asyncio.wait_for(reader.readline(), WAIT)
        await reader.read()
    finally:
        writer.close()
    return int(status_line.split()[1])


async def ready(node: NodeProc) -> bool:
    assert node.admin is not None
    try:
        reader, writer = await asyncio.open_connection(*node.admin)
    except OSError:
        return False
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: hubbub\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), WAIT)
    finally:
        writer.close()
    return line.split()[1:2] == [b"200"]


async def collect(sub: Subscription, total: int, into: list[Any]) -> None:
    async with asyncio.timeout(WAIT * 3):
        while len(into) < total:
            into.append((await anext(sub)).data)


async def test_rolling_sigterm_restart_through_nginx_loses_nothing(
    stack: Stack, exits: AsyncExitStack
) -> None:
    channel = "feed:rolling"
    urls = [stack.ws_url, stack.tcp_url, stack.ws_url, stack.tcp_url]
    clients = [
        await exits.enter_async_context(
            Client(url, encoding="json" if i == 2 else "msgpack", backoff_base=0.05)
        )
        for i, url in enumerate(urls)
    ]
    subs = [await c.subscribe(channel) for c in clients]
    total = 150
    received: list[list[Any]] = [[] for _ in clients]
    readers = [asyncio.ensure_future(collect(s, total, r)) for s, r in zip(subs, received,
                                                                          strict=True)]
    restarting = {"index": -1}
    published = 0

    async def publish_stream() -> None:
        nonlocal published
        for i in range(total):
            # Through a node that is not the one restarting (the API is not behind nginx).
            node = stack.nodes[(restarting["index"] + 1) % 3]
            status = await api_publish(node, channel, i)
            assert status == 200, (i, status)
            published += 1
            await asyncio.sleep(0.01)

    streaming = asyncio.ensure_future(publish_stream())
    for i in range(3):
        restarting["index"] = i
        old = stack.nodes[i]
        old.signal(signal.SIGTERM)
        assert await asyncio.to_thread(old.wait, WAIT) == 0, old.log_text()
        old.stop()
        node = await asyncio.to_thread(stack.start, i)
        async with asyncio.timeout(WAIT):
            while not await ready(node):
                await asyncio.sleep(0.05)
    restarting["index"] = -1
    async with asyncio.timeout(WAIT * 2):
        await streaming
    await asyncio.gather(*readers)
    for got in received:
        assert got == list(range(total))  # nothing lost, nothing twice, in order
    assert sum(c.reconnects for c in clients) >= len(clients)  # every client moved
    await asyncio.sleep(0.2)
    assert all(s.pending == 0 for s in subs)  # and nothing more came
