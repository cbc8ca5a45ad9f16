"""Delivery guarantees under churn (issue 11), end to end over real nodes and a
real redis-server: exactly once after recovery, ``lag`` only when recovery
will be accepted, and slow consumers judged by what the kernel did not take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from hubbub.protocol.codec import encode_msgpack
from hubbub.protocol.frames import encode_frame
from tests.e2e.probes import SlowTcp
from tests.e2e.rawclient import RawClient, TcpRaw, open_tcp
from tests.e2e.redisproxy import RedisProxy
from tests.e2e.test_cluster import CONFIG, _status_is, eventually
from tests.procs import NodeProc, RedisProc

NodeFactory = Callable[..., NodeProc]


async def publish_until(client: TcpRaw, channel: str, stop: asyncio.Event) -> int:
    """Publish as fast as the node answers, 64 commands of 256 bytes in flight;
    returns the count."""
    sent = 0
    pad = "x" * 256
    while not stop.is_set():
        ids = []
        for _ in range(64):
            client.next_id += 1
            ids.append(client.next_id)
            sent += 1
            await client.send(
                {"op": "publish", "id": client.next_id, "channel": channel, "data": [sent, pad]}
            )
        for cid in ids:
            reply = await client.reply(cid)
            assert "ok" in reply, reply
    return sent


def pub_offsets(messages: list[dict[str, Any]], channel: str) -> list[int]:
    return [m["offset"] for m in messages if m.get("push") == "pub" and m["channel"] == channel]


async def test_resubscribing_client_gets_no_duplicates_from_a_fast_publisher(
    redis_server: RedisProc, node_factory: NodeFactory
) -> None:
    """Issue 11 item 1: a client on one node recovers in a loop while the nodes
    publish as fast as they can; no offset is ever delivered twice. The
    subscriber node's pub/sub connection lags 20 ms behind its command
    connection (through a proxy), as it does on a loaded node."""
    proxy = RedisProxy(redis_server.port)
    await proxy.start()
    proxy.sub_delay = 0.02
    # A history the fast publisher does not outrun between rounds, and replies
    # large enough for what it publishes meanwhile (a recovery must fit in one).
    config = CONFIG.replace("history_size = 1000\n", "history_size = 200000\n").replace(
        "message_burst = 100000\n", "message_burst = 100000\nmax_frame = 16777216\n"
    )
    assert config.count("200000") == 1 and "max_frame" in config
    publisher_node = node_factory(config, redis=[redis_server.url])
    subscriber_node = node_factory(config, redis=[proxy.url])
    await eventually(partial(_status_is, subscriber_node, 200))  # the proxy ran only now
    channel = "chat:dup-probe"
    publishers = [await open_tcp(publisher_node), await open_tcp(subscriber_node)]
    client = await open_tcp(subscriber_node)
    await publishers[0].ok("publish", channel=channel, data="first")  # the history exists
    stop = asyncio.Event()
    publishing = asyncio.gather(*(publish_until(p, channel, stop) for p in publishers))
    try:
        first = await client.ok("subscribe", channel=channel)
        since = {"offset": first["offset"], "epoch": first["epoch"]}
        await client.ok("unsubscribe", channel=channel)
        client.pushes.clear()
        seen: list[int] = []
        for _ in range(40):
            reply = await client.ok("subscribe", channel=channel, recover=True, since=since)
            assert reply["recovered"] is True, (since, reply)
            await asyncio.sleep(0.005)
            await client.ok("unsubscribe", channel=channel)
            got = pub_offsets(reply["publications"], channel) + pub_offsets(
                list(client.pushes), channel
            )
            client.pushes.clear()
            assert len(got) == len(set(got)), f"duplicates after recovery: {got}"
            assert got == list(range(since["offset"] + 1, since["offset"] + 1 + len(got)))
            seen += got
            if got:
                since = {"offset": got[-1], "epoch": reply["epoch"]}
    finally:
        stop.set()
        await publishing
        await close_all(*publishers, client)
        subscriber_node.stop()
        await proxy.close()
    assert len(seen) > 500, "the publisher was too slow to exercise the race"


async def close_all(*clients: RawClient) -> None:
    for c in clients:
        await c.close()


async def test_lag_after_a_redis_restart_comes_when_recovery_is_accepted(
    redis_server: RedisProc, node_factory: NodeFactory
) -> None:
    """Issue 11 item 3: the ``lag`` a node sends once its pub/sub connection is
    back asks the client to recover; that recovery must not get 503."""
    node = node_factory(CONFIG, redis=[redis_server.url])
    clients = [await open_tcp(node) for _ in range(4)]
    channel = "chat:restart"
    positions = []
    for client in clients:
        reply = await client.ok("subscribe", channel=channel)
        positions.append({"offset": reply["offset"], "epoch": reply["epoch"]})
    for round_ in range(2):
        redis_server.kill()
        await eventually(partial(_status_is, node, 503))
        redis_server.start()
        for client, since in zip(clients, positions, strict=True):
            await client.push("lag", channel=channel, timeout=10)
            await client.ok("unsubscribe", channel=channel)
            reply = await client.request("subscribe", channel=channel, recover=True, since=since)
            assert "ok" in reply, f"round {round_}: recovery after lag refused: {reply}"
    await close_all(*clients)


# -- slow consumers: only what the kernel did not take counts ----------------------

BURSTY = """
[limits]
outbound_buffer = 262144
max_frame = 131072
messages_per_second = 100000
message_burst = 100000
"""


async def test_a_reading_subscriber_survives_bursts_a_stuck_one_is_cut(
    node_factory: NodeFactory,
) -> None:
    """Issue 11 item 2: 40 publications of 60 KB back to back reach a node
    with outbound_buffer = 256 KB within one loop iteration or a few; a
    subscriber reading as fast as it can must get them all (its queue is
    flushed to the kernel early, not counted whole), and a subscriber that
    reads nothing must still be cut with 3002."""
    node = node_factory(BURSTY)
    assert node.tcp is not None
    name = "burst"
    reader = await open_tcp(node)
    await reader.ok("subscribe", channel=name)
    stuck = SlowTcp(node.tcp, rcvbuf=4096)
    assert "ok" in stuck.request("connect")
    assert "ok" in stuck.request("subscribe", channel=name)
    publisher = await open_tcp(node)
    pad = "x" * 60_000
    rounds, per_round = 3, 40
    for r in range(rounds):
        burst = b"".join(
            encode_frame(encode_msgpack({"op": "publish", "channel": name, "data": [r, i, pad]}))
            for i in range(per_round)
        )
        await publisher.send_bytes(burst)
        got = []
        while len(got) < per_round:
            message = await reader.recv(timeout=15)
            assert message.get("push") != "disconnect", f"a reading client was cut: {message}"
            if message.get("push") == "pub":
                got.append(message["data"][:2])
        assert got == [[r, i] for i in range(per_round)]
    messages, _ = await asyncio.to_thread(stuck.read_all, 15)
    codes = [m["code"] for m in messages if m.get("push") == "disconnect"]
    assert codes == [3002], codes[-3:]
    stuck.close()
    await close_all(reader, publisher)
