"""A cluster end to end: real redis-server processes, three ``hubbub serve
--redis`` nodes, clients of both transports (client.Client).

What a cluster promises (DESIGN.md "Clustering", docs/clustering.md): every
subscriber on every node gets each publication exactly once, in one order per
channel; history and presence are shared; channels spread over shards; a Redis
outage is a clear 503 with ``/readyz`` down and delivery resumes by itself;
the clients of a node that dies recover on another with nothing lost.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import pytest
import redis.asyncio as aioredis

from hubbub.client import (
    ChannelEvent,
    Client,
    Publication,
    ReplyError,
    StreamPosition,
    Subscription,
)
from hubbub.cluster.redis_layout import Keys
from hubbub.cluster.sharding import shard_of
from tests.procs import NodeProc, RedisProc

CONFIG = """
[limits]
messages_per_second = 100000
message_burst = 100000

[namespaces.chat]
history_size = 1000
history_ttl = 300
presence = true
join_leave = true
"""

#: Bound on any single wait: a guard against hanging, never a timing assertion.
WAIT = 15.0

NodeFactory = Callable[..., NodeProc]


def start_cluster(node_factory: NodeFactory, urls: list[str], count: int = 3) -> list[NodeProc]:
    return [node_factory(CONFIG, redis=urls) for _ in range(count)]


async def take(sub: Subscription, count: int, timeout: float = WAIT) -> list[Publication]:
    """The next ``count`` publications of ``sub``."""
    out: list[Publication] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            out.append(await anext(sub))
    return out


async def readyz(node: NodeProc) -> int:
    """The status of the node's ``GET /readyz``."""
    assert node.admin is not None
    reader, writer = await asyncio.open_connection(*node.admin)
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: hubbub\r\nConnection: close\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), WAIT)
    finally:
        writer.close()
    return int(status_line.split()[1])


async def eventually(check: Callable[[], Any], timeout: float = WAIT) -> None:
    """Poll the (async) ``check`` until it is true."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.05)


async def clients(stack: AsyncExitStack, *urls: str | list[str], **kwargs: Any) -> list[Client]:
    out = []
    for url in urls:
        out.append(await stack.enter_async_context(Client(url, **kwargs)))
    return out


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as exits:
        yield exits


# -- delivery ----------------------------------------------------------------------


async def test_exactly_once_across_nodes_both_transports_one_order(
    redis_server: RedisProc, node_factory: NodeFactory, stack: AsyncExitStack
) -> None:
    nodes = start_cluster(node_factory, [redis_server.url])
    channels = [f"chat:room-{i}" for i in range(8)] + [f"feed:{i}" for i in range(4)]
    per_publisher = 8
    subscribers = await clients(
        stack,
        *(n.tcp_url for n in nodes),
        *(n.ws_url for n in nodes),
    )
    subscribers += await clients(stack, nodes[0].ws_url, encoding="json")
    subs = {(i, ch): await c.subscribe(ch) for i, c in enumerate(subscribers) for ch in channels}
    publishers = await clients(stack, *(n.tcp_url for n in nodes))

    async def publish_all(index: int, pub: Client) -> None:
        for seq in range(per_publisher):
            for ch in channels:
                await pub.publish(ch, {"node": index, "seq": seq})

    await asyncio.gather(*(publish_all(i, p) for i, p in enumerate(publishers)))
    total = per_publisher * len(publishers)
    orders: dict[str, list[tuple[int, int]]] = {}
    for (_, ch), sub in subs.items():
        got = await take(sub, total)
        seen = [(p.data["node"], p.data["seq"]) for p in got]
        assert sorted(seen) == sorted((n, s) for n in range(3) for s in range(per_publisher))
        for node in range(3):  # each publisher's own order is kept
            assert [s for n, s in seen if n == node] == list(range(per_publisher))
        # Every subscriber, on every node and transport, sees one order.
        assert orders.setdefault(ch, seen) == seen
        if ch.startswith("chat:"):
            assert [p.offset for p in got] == list(range(1, total + 1))
        else:
            assert {p.offset for p in got} == {None}
    await asyncio.sleep(0.2)
    assert all(sub.pending == 0 for sub in subs.values())  # nothing twice


async def test_history_and_recovery_across_nodes(
    redis_server: RedisProc, node_factory: NodeFactory, stack: AsyncExitStack
) -> None:
    nodes = start_cluster(node_factory, [redis_server.url])
    channel = "chat:recovery"
    publisher, first = await clients(stack, nodes[0].tcp_url, nodes[1].ws_url)
    sub = await first.subscribe(channel)
    for i in range(5):
        await publisher.publish(channel, i)
    await take(sub, 5)
    position = sub.position
    assert position is not None and position.offset == 5
    await first.close()
    for i in range(5, 12):
        await publisher.publish(channel, i)
    # A new session on a third node picks up exactly where the first left off.
    (later,) = await clients(stack, nodes[2].tcp_url)
    resumed = await later.subscribe(channel, recover=True, since=position)
    assert resumed.recovered is True
    missed = await take(resumed, 7)
    assert [p.data for p in missed] == list(range(5, 12))
    assert [p.offset for p in missed] == list(range(6, 13))
    await publisher.publish(channel, "live")
    (live,) = await take(resumed, 1)
    assert (live.data, live.offset) == ("live", 13)
    history = await later.history(channel, limit=3)
    assert [p.data for p in history.publications] == [10, 11, "live"]
    assert history.position == StreamPosition(13, position.epoch)
    stale = await later.subscribe("chat:other", recover=True, since=StreamPosition(3, "gone"))
    assert stale.recovered is False


async def test_presence_and_join_leave_across_nodes(
    redis_server: RedisProc, node_factory: NodeFactory, stack: AsyncExitStack
) -> None:
    nodes = start_cluster(node_factory, [redis_server.url])
    channel = "chat:presence"
    alice, bob, carol = await clients(stack, nodes[0].tcp_url, nodes[1].ws_url, nodes[2].tcp_url)
    events: list[ChannelEvent] = []
    await alice.subscribe(channel, on_event=events.append)
    await bob.subscribe(channel)
    await eventually(lambda: any(e.kind == "join" for e in events))
    assert [(e.kind, e.client) for e in events] == [("join", bob.client_id)]
    present = await carol.presence(channel)
    assert set(present) == {alice.client_id, bob.client_id}
    await bob.unsubscribe(channel)
    await eventually(lambda: any(e.kind == "leave" for e in events))
    assert [(e.kind, e.client) for e in events] == [
        ("join", bob.client_id),
        ("leave", bob.client_id),
    ]
    assert set(await carol.presence(channel)) == {alice.client_id}


async def test_two_shards(
    redis_factory: Callable[[], RedisProc], node_factory: NodeFactory, stack: AsyncExitStack
) -> None:
    servers = [redis_factory(), redis_factory()]
    urls = [s.url for s in servers]
    nodes = start_cluster(node_factory, urls)
    channels = [f"chat:sharded-{i}" for i in range(16)]
    owners = [shard_of(ch, 2) for ch in channels]
    assert set(owners) == {0, 1}
    subscriber, publisher = await clients(stack, nodes[0].ws_url, nodes[2].tcp_url)
    subs = [await subscriber.subscribe(ch) for ch in channels]
    for i, ch in enumerate(channels):
        assert await publisher.publish(ch, i) == 1
    for i, sub in enumerate(subs):
        (pub,) = await take(sub, 1)
        assert (pub.data, pub.offset) == (i, 1)
    raw = [aioredis.Redis.from_url(url) for url in urls]
    try:
        for ch, owner in zip(channels, owners, strict=True):
            assert [await r.exists(Keys().stream(ch)) for r in raw] == [owner == 0, owner == 1]
    finally:
        for r in raw:
            await r.aclose()


# -- faults ------------------------------------------------------------------------


async def test_redis_restart_during_a_publish_stream(
    redis_server: RedisProc, node_factory: NodeFactory, stack: AsyncExitStack
) -> None:
    nodes = start_cluster(node_factory, [redis_server.url], count=2)
    channel = "chat:outage"
    events: list[ChannelEvent] = []
    subscriber, publisher = await clients(stack, nodes[1].ws_url, nodes[0].tcp_url)
    sub = await subscriber.subscribe(channel, on_event=events.append)
    for i in range(20):
        await publisher.publish(channel, ("before", i))
    before = await take(sub, 20)
    assert [p.offset for p in before] == list(range(1, 21))

    refused = 0
    acked: list[tuple[int, int]] = []  # (seq, offset) of publications after the restart
    restarted = asyncio.Event()

    async def stream() -> None:
        nonlocal refused
        seq = 0
        while len(acked) < 30:
            seq += 1
            try:
                offset = await publisher.publish(channel, ("during", seq))
            except ReplyError as exc:
                assert exc.code == 503, exc
                refused += 1
            else:
                if restarted.is_set():
                    assert offset is not None
                    acked.append((seq, offset))
            await asyncio.sleep(0.01)

    streaming = asyncio.ensure_future(stream())
    redis_server.kill()
    for node in nodes:
        await eventually(partial(_status_is, node, 503))
    await eventually(lambda: refused > 0)
    redis_server.start()  # same port, empty
    restarted.set()
    for node in nodes:
        await eventually(partial(_status_is, node, 200))
    async with asyncio.timeout(WAIT):
        await streaming
    assert refused > 0
    # The clients stayed connected through the outage.
    assert subscriber.reconnects == 0 and publisher.reconnects == 0 and subscriber.connected
    # The subscriber was told it may have missed publications (lag → recovery → the
    # history is gone with the old Redis: a reset), then receives the stream again:
    # a run of consecutive offsets of the new history up to the last one acked.
    await eventually(lambda: any(e.kind == "reset" for e in events))
    last_seq, last_offset = acked[-1]
    received: list[Publication] = []
    async with asyncio.timeout(WAIT):
        while not received or received[-1].data != ["during", last_seq]:
            received.append(await anext(sub))
    after = [p for p in received if p.data[0] == "during" and p.data[1] >= acked[0][0]]
    assert after, "nothing delivered after Redis came back"
    offsets = [p.offset for p in after]
    assert offsets[0] is not None
    assert offsets == list(range(offsets[0], last_offset + 1))
    # Everything acked after the subscriber's node subscribed again is in that run.
    delivered = {p.data[1] for p in after}
    first_delivered = min(delivered)
    assert [s for s, _ in acked if s >= first_delivered] == sorted(delivered)


async def _status_is(node: NodeProc, status: int) -> bool:
    return await readyz(node) == status


async def test_sigkilled_node_clients_recover_on_another_node(
    redis_server: RedisProc, node_factory: NodeFactory, stack: AsyncExitStack
) -> None:
    nodes = start_cluster(node_factory, [redis_server.url])
    channel = "chat:failover"
    total = 150
    (subscriber,) = await clients(stack, [nodes[0].tcp_url, nodes[1].tcp_url], backoff_base=0.05)
    (publisher,) = await clients(stack, nodes[2].ws_url)
    sub = await subscriber.subscribe(channel)
    assert subscriber.info["node"] == nodes[0].node_id

    async def stream() -> None:
        for i in range(total):
            await publisher.publish(channel, i)
            await asyncio.sleep(0.005)

    streaming = asyncio.ensure_future(stream())
    await take(sub, 20)
    nodes[0].proc.send_signal(signal.SIGKILL)
    nodes[0].proc.wait(WAIT)
    async with asyncio.timeout(WAIT):
        await streaming
    rest = await take(sub, total - 20)
    assert subscriber.info["node"] == nodes[1].node_id  # moved
    assert subscriber.reconnects == 1
    assert [p.data for p in rest] == list(range(20, total))
    assert [p.offset for p in rest] == list(range(21, total + 1))
    assert sub.recovered is True
    await asyncio.sleep(0.2)
    assert sub.pending == 0


async def http_get(node: NodeProc, path: str, key: str | None = None) -> tuple[int, Any]:
    """GET ``path`` on the node's admin listener: (status, JSON-decoded or text body)."""
    assert node.admin is not None
    reader, writer = await asyncio.open_connection(*node.admin)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: hubbub\r\n{auth}Connection: close\r\n\r\n".encode()
        )
        response = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    if b"application/json" not in head.lower():
        return int(head.split()[1]), body.decode()
    return int(head.split()[1]), json.loads(body)


async def test_api_nodes_lists_the_live_nodes(
    redis_server: RedisProc, node_factory: NodeFactory
) -> None:
    config = CONFIG + '\n[auth]\napi_key = "secret"\n'
    nodes = [
        node_factory(config, redis=[redis_server.url], args=["--node-id", f"node-{i}"])
        for i in range(3)
    ]
    status, body = await http_get(nodes[0], "/api/nodes", "secret")
    assert status == 200, body
    assert body["node"] == "node-0"
    assert [n["node"] for n in body["nodes"]] == ["node-0", "node-1", "node-2"]
    assert all(n["shards"][0]["up"] for n in body["nodes"])
    for entry, proc in zip(body["nodes"], nodes, strict=True):
        assert entry["address"]["tcp"] == f"{proc.tcp[0]}:{proc.tcp[1]}", entry
        assert entry["address"]["ws"] == f"{proc.ws[0]}:{proc.ws[1]}", entry
        assert entry["connections"] == 0 and entry["subscriptions"] == 0, entry
        assert 0 <= entry["uptime"] < 60, entry
    assert (await http_get(nodes[0], "/api/nodes"))[0] == 401
    nodes[2].stop()  # a clean stop leaves the registry
    _, body = await http_get(nodes[1], "/api/nodes", "secret")
    assert [n["node"] for n in body["nodes"]] == ["node-0", "node-1"]


async def test_node_ids_agree_and_shard_metrics_are_exported(
    node_factory: NodeFactory, redis_factory: Callable[[], RedisProc]
) -> None:
    """Without --node-id the node and its broker share one random id, and
    /metrics shows each shard's health and pub/sub connection."""
    shards = [redis_factory(), redis_factory()]
    config = '[auth]\napi_key = "secret"\n'
    node = node_factory(config, redis=[r.url for r in shards])
    _, body = await http_get(node, "/api/nodes", "secret")
    assert [n["node"] for n in body["nodes"]] == [node.node_id]
    status, text = await http_get(node, "/metrics")
    assert status == 200
    for metric in ("hubbub_broker_shard_up", "hubbub_broker_pubsub_connected"):
        lines = [ln for ln in text.splitlines() if ln.startswith(metric + "{")]
        assert len(lines) == 2 and all(ln.endswith(" 1.0") for ln in lines), lines
    assert "hubbub_broker_pubsub_reconnects_total{" in text
    assert "hubbub_broker_reader_restarts_total{" in text
