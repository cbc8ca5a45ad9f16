"""The node's side of the limits, in-process with real loopback sockets:
connection counting, the slow-consumer policy per namespace, reload, and a
disconnect on a transport that is already gone.

Each test runs on uvloop, as ``hubbub serve`` does (its transports behave
differently from asyncio's on closed sockets).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import uvloop

from hubbub.cluster.memory import MemoryBroker
from hubbub.protocol.codec import decode_msgpack, encode_msgpack
from hubbub.protocol.codes import DisconnectCode
from hubbub.protocol.frames import FrameDecoder, encode_frame
from hubbub.server.config import Config, from_mapping
from hubbub.server.node import Node


def _config(**tables: dict[str, object]) -> Config:
    base: dict[str, dict[str, object]] = {
        "server": {"tcp": "127.0.0.1:0", "ws": "", "admin": ""},
    }
    for name, table in tables.items():
        base[name] = {**base.get(name, {}), **table}
    return from_mapping(base, "test")


def _run(config: Config, body: Callable[[Node], Awaitable[None]]) -> None:
    """Start a node with ``config`` on uvloop, run ``body``, stop the node."""

    async def main() -> None:
        node = Node(config, MemoryBroker())
        await node.start()
        try:
            await asyncio.wait_for(body(node), 10)
        finally:
            await node.stop()

    uvloop.run(main())


async def _open(node: Node) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*node.addresses["tcp"])


async def _first_message(reader: asyncio.StreamReader) -> dict[str, object]:
    decoder = FrameDecoder(2**31)
    while True:
        data = await reader.read(65536)
        assert data, "closed without a message"
        frames = decoder.feed(data)
        if frames:
            return decode_msgpack(frames[0])


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


def test_counts_follow_connections_and_refused_ones_take_no_place() -> None:
    async def body(node: Node) -> None:
        _, first = await _open(node)
        await _until(lambda: node.admission.counted == 1)
        reader, second = await _open(node)
        message = await _first_message(reader)
        assert message["code"] == DisconnectCode.CONNECTION_LIMIT
        assert node.admission.counted == 1 and node.admission.per_ip == {"127.0.0.1": 1}
        first.close()
        second.close()
        await _until(lambda: not node.connections)
        assert node.admission.counted == 0 and node.admission.per_ip == {}

    _run(_config(limits={"max_connections": 1}), body)


def test_slow_consumer_policy_per_namespace_and_after_reload() -> None:
    async def body(node: Node) -> None:
        assert node.settings.slow_consumer_policy("feed:a") == "drop"
        assert node.settings.slow_consumer_policy("chat:a") == "disconnect"
        assert node.settings.slow_consumer_policy("lobby") == "disconnect"
        node.reload(_config(limits={"slow_consumer": "drop"}, namespaces={"feed": {}}))
        assert node.settings.slow_consumer_policy("feed:a") == "drop"
        assert node.settings.slow_consumer_policy("chat:a") == "drop"

    config = _config(
        limits={"slow_consumer": "disconnect"}, namespaces={"feed": {"slow_consumer": "drop"}}
    )
    _run(config, body)


def test_reload_reconfigures_the_bucket_of_every_connection() -> None:
    async def body(node: Node) -> None:
        reader, writer = await _open(node)
        writer.write(encode_frame(encode_msgpack({"op": "connect", "id": 1})))
        assert "ok" in await _first_message(reader)
        (conn,) = node.connections
        assert (conn.limiter.rate, conn.limiter.burst) == (100.0, 200.0)
        plan = node.reload(_config(limits={"messages_per_second": 5.0, "message_burst": 3}))
        assert set(plan.changed) == {"limits.messages_per_second", "limits.message_burst"}
        assert (conn.limiter.rate, conn.limiter.burst) == (5.0, 3.0)
        assert conn.limiter.tokens <= 3.0
        writer.close()

    _run(_config(), body)


def test_disconnect_after_the_transport_died_is_harmless() -> None:
    async def body(node: Node) -> None:
        _, writer = await _open(node)
        await _until(lambda: len(node.connections) == 1)
        (conn,) = node.connections
        conn.transport.abort()
        await asyncio.sleep(0)  # the transport is closed; the read loop has not run yet
        assert conn.transport.is_closing() and conn.writable
        conn.disconnect(DisconnectCode.SLOW_CONSUMER)  # must not raise
        await _until(lambda: not node.connections)
        writer.close()

    _run(_config(), body)


def test_a_dead_connection_does_not_stop_the_flush_of_the_others() -> None:
    async def body(node: Node) -> None:
        _, dead_writer = await _open(node)
        await _until(lambda: len(node.connections) == 1)
        (dead,) = node.connections
        reader, writer = await _open(node)
        await _until(lambda: len(node.connections) == 2)
        (alive,) = [c for c in node.connections if c is not dead]
        dead.transport.abort()
        await asyncio.sleep(0)  # closed; its read loop has not run yet
        dead.outbox.send({"push": "ping"})  # both queued for this iteration's flush,
        alive.outbox.send({"push": "ping"})  # the dead one first, and the flush runs
        node.outboxes.flush()  # before the dead one's read loop notices
        assert await asyncio.wait_for(_first_message(reader), 2) == {"push": "ping"}
        writer.close()
        dead_writer.close()

    _run(_config(), body)


def test_a_slow_consumer_cut_during_fan_out_does_not_cost_the_others() -> None:
    """The 3002 happens inside the hub's loop over the channel's subscribers:
    the others after it must still get the publication."""

    async def body(node: Node) -> None:
        clients = []
        for _ in range(3):
            reader, writer = await _open(node)
            writer.write(encode_frame(encode_msgpack({"op": "connect", "id": 1})))
            writer.write(encode_frame(encode_msgpack({"op": "subscribe", "id": 2, "channel": "c"})))
            decoder = FrameDecoder(2**31)
            got: list[dict[str, object]] = []
            while len(got) < 2:
                got += [decode_msgpack(p) for p in decoder.feed(await reader.read(65536))]
            clients.append((reader, writer, decoder))
        slow = next(iter(node.hub.channels["c"].groups[0]))  # the first in fan-out order
        slow.outbox.room = 0  # as if its buffer were full
        await node.broker.publish("c", "hello", options=node.settings.channel_options("c"))
        for reader, _, decoder in clients[1:]:
            (message,) = decoder.feed(await reader.read(65536))
            assert decode_msgpack(message)["data"] == "hello"
        await _until(lambda: node.hub.subscriber_count("c") == 2)  # the slow one left
        for _, writer, _ in clients:
            writer.close()

    _run(_config(), body)


def test_stop_is_idempotent() -> None:
    async def body(node: Node) -> None:
        await node.stop()
        await node.stop()
        await asyncio.wait_for(node.wait_stopped(), 1)

    _run(_config(), body)
