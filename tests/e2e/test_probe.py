"""The end-to-end delivery probe (issue 11 item 7), over real nodes and a real
redis-server: a pub/sub connection that Redis kills, that Redis drops for its
output buffer, that hangs with a frozen Redis, or that goes deaf while the
health check stays green is found, reopened, its subscribers told ``lag``, and
delivery resumes. Probes are short here (0.2 s / 0.6 s) so the tests are fast.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.e2e.probes import metric
from tests.e2e.rawclient import TcpRaw, open_tcp
from tests.e2e.redisproxy import RedisProxy
from tests.e2e.test_cluster import CONFIG, WAIT, _status_is, eventually, readyz
from tests.procs import NodeProc, RedisProc

NodeFactory = Callable[..., NodeProc]

PROBE_INTERVAL = 0.2
PROBE_TIMEOUT = 0.6
PROBED = f"{CONFIG}\n[broker]\nprobe_interval = {PROBE_INTERVAL}\nprobe_timeout = {PROBE_TIMEOUT}\n"


@pytest.fixture
async def raw(redis_server: RedisProc) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def subscribed(node: NodeProc, channel: str) -> tuple[TcpRaw, TcpRaw, dict[str, Any]]:
    """A publisher and a subscriber of ``channel`` on ``node``, and the position
    the subscribe replied (the history exists: one publication first)."""
    publisher, subscriber = await open_tcp(node), await open_tcp(node)
    await publisher.ok("publish", channel=channel, data="first")
    reply = await subscriber.ok("subscribe", channel=channel)
    return publisher, subscriber, {"offset": reply["offset"], "epoch": reply["epoch"]}


async def recovers_and_flows(
    publisher: TcpRaw, subscriber: TcpRaw, channel: str, since: dict[str, Any], missed: list[Any]
) -> None:
    """The subscriber was told ``lag``; recovering from ``since`` brings exactly
    ``missed`` (published meanwhile); then live publications arrive again."""
    await subscriber.push("lag", channel=channel, timeout=WAIT)
    await subscriber.ok("unsubscribe", channel=channel)
    subscriber.pushes.clear()
    reply = await subscriber.ok("subscribe", channel=channel, recover=True, since=since)
    assert reply["recovered"] is True, reply
    assert [p["data"] for p in reply["publications"]] == missed
    await publisher.ok("publish", channel=channel, data="live")
    pub = await subscriber.push("pub", channel=channel, timeout=WAIT)
    assert pub["data"] == "live" and pub["offset"] == since["offset"] + len(missed) + 1


async def ready_within(node: NodeProc, status: int, start: float, bound: float) -> float:
    """Seconds from ``start`` (time.monotonic) until /readyz answers ``status``;
    fails past ``bound``."""
    while await readyz(node) != status:
        assert time.monotonic() - start < bound, f"/readyz not {status} within {bound}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def shard(url: str) -> str:
    """The shard label of the node's only shard (the metrics' ``shard``)."""
    return f"0:{url}"


async def test_client_kill_pubsub_reconnects_and_tells_lag(
    redis_server: RedisProc, raw: aioredis.Redis, node_factory: NodeFactory
) -> None:
    node = node_factory(PROBED, redis=[redis_server.url])
    channel = "chat:killed"
    publisher, subscriber, since = await subscribed(node, channel)
    killed = await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed >= 1
    await publisher.ok("publish", channel=channel, data="while-away")
    await recovers_and_flows(publisher, subscriber, channel, since, ["while-away"])
    assert metric(node, "hubbub_broker_pubsub_reconnects_total", shard=shard(redis_server.url)) >= 1
    await eventually(partial(_status_is, node, 200))


async def test_client_output_buffer_kill_under_a_burst(
    redis_server: RedisProc, raw: aioredis.Redis, node_factory: NodeFactory
) -> None:
    """Redis drops a pub/sub client whose output buffer passes the limit; a
    burst of 40 x 1 KB in one write is far past 1 KB (and its recovery fits in
    one reply of the default max_frame)."""
    node = node_factory(PROBED, redis=[redis_server.url])
    channel = "chat:burst"
    publisher, subscriber, since = await subscribed(node, channel)
    await raw.config_set("client-output-buffer-limit", "pubsub 1kb 1kb 0")
    try:
        burst = [[i, "x" * 1000] for i in range(40)]
        ids = []
        for data in burst:
            publisher.next_id += 1
            ids.append(publisher.next_id)
            await publisher.send(
                {"op": "publish", "id": publisher.next_id, "channel": channel, "data": data}
            )
        for cid in ids:
            assert "ok" in await publisher.reply(cid)
        await eventually(
            lambda: (
                metric(node, "hubbub_broker_pubsub_reconnects_total", shard=shard(redis_server.url))
                >= 1
            )
        )
    finally:
        await raw.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
    # What the subscriber got live before the kill is replayed by the recovery
    # too (it asks from before the burst): the client keeps the first of each.
    await recovers_and_flows(publisher, subscriber, channel, since, burst)


async def test_frozen_redis_readyz_503_then_200_and_delivery_resumes(
    redis_server: RedisProc, node_factory: NodeFactory
) -> None:
    """SIGSTOP: every connection stays open and nothing answers. The health
    check (or the probe, whichever is first) makes /readyz 503; after SIGCONT
    the node is ready again and a publication reaches the subscriber: live on
    a pub/sub connection that survived the freeze (Redis kept its output), or
    by recovery after ``lag`` when the probe had reopened it."""
    node = node_factory(PROBED, redis=[redis_server.url])
    channel = "chat:frozen"
    publisher, subscriber, since = await subscribed(node, channel)
    assert redis_server.proc is not None
    stopped = time.monotonic()
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        detected = await ready_within(node, 503, stopped, PROBE_TIMEOUT + 1.0)
        await asyncio.sleep(PROBE_TIMEOUT)
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    back = await ready_within(node, 200, resumed, WAIT)
    print(f"\nSIGSTOP: /readyz 503 after {detected:.2f}s; SIGCONT: 200 after {back:.2f}s")
    await publisher.ok("publish", channel=channel, data="after")
    async with asyncio.timeout(WAIT):
        while True:
            message = await subscriber.recv()
            if message.get("channel") != channel:
                continue
            if message.get("push") == "pub":
                assert message["data"] == "after" and message["offset"] == since["offset"] + 1
                break
            if message.get("push") == "lag":
                await subscriber.ok("unsubscribe", channel=channel)
                subscriber.pushes.clear()  # the live ones before it: recovery has them
                reply = await subscriber.ok("subscribe", channel=channel, recover=True, since=since)
                print("SIGSTOP: the probe had reopened the pub/sub connection (lag)")
                assert reply["recovered"] is True, reply
                if [p["data"] for p in reply["publications"]] == ["after"]:
                    break
                since = {"offset": reply["offset"], "epoch": reply["epoch"]}
    await publisher.ok("publish", channel=channel, data="live")
    assert (await subscriber.push("pub", channel=channel, timeout=WAIT))["data"] == "live"


async def test_deaf_pubsub_is_found_by_the_probe_while_health_stays_green(
    redis_server: RedisProc, node_factory: NodeFactory
) -> None:
    """The proxy drops what Redis sends on the pub/sub connection only (a
    half-open connection): no error, health PINGs answered, the node deaf."""
    proxy = RedisProxy(redis_server.port)
    await proxy.start()
    try:
        node = node_factory(PROBED, redis=[proxy.url])
        await eventually(partial(_status_is, node, 200))  # the proxy runs in this loop
        label = shard(proxy.url)
        channel = "chat:deaf"
        publisher, subscriber, since = await subscribed(node, channel)
        assert metric(node, "hubbub_broker_probe_misses_total", shard=label) == 0
        went_deaf = time.monotonic()
        proxy.sub_deaf = True
        detected = await ready_within(node, 503, went_deaf, PROBE_TIMEOUT + 1.0)
        assert metric(node, "hubbub_broker_probe_misses_total", shard=label) >= 1
        assert metric(node, "hubbub_broker_shard_up", shard=label) == 1  # health: green
        await publisher.ok("publish", channel=channel, data="unheard")
        await asyncio.sleep(PROBE_TIMEOUT)
        assert await readyz(node) == 503  # still deaf: every new connection is too
        healed = time.monotonic()
        proxy.sub_deaf = False
        back = await ready_within(node, 200, healed, WAIT)
        print(f"\ndeaf pub/sub: /readyz 503 after {detected:.2f}s; healed: 200 after {back:.2f}s")
        await recovers_and_flows(publisher, subscriber, channel, since, ["unheard"])
        node.stop()
    finally:
        await proxy.close()
