"""hubbub nodes on highly available Redis, end to end: a Sentinel group and a
Redis Cluster as real processes (tests/redis_ha.py), ``hubbub serve`` nodes
given nothing but the URL, clients of both transports.

What must hold through a failover (docs/clustering.md "Failures"): every
publication is delivered or refused with 503, none is acknowledged and then
lost; the nodes say they are not ready while no primary is known; delivery
resumes by itself and subscribers, told of the gap with ``lag``, recover.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial

import pytest

from hubbub.client import ChannelEvent, Client, Publication, ReplyError, Subscription
from hubbub.cluster.redis_cluster import slot_of
from hubbub.cluster.redis_layout import SlotKeys
from tests.e2e.test_cluster import (
    CONFIG,
    WAIT,
    NodeFactory,
    clients,
    eventually,
    http_get,
    readyz,
    take,
)
from tests.procs import NodeProc, start_node
from tests.redis_ha import ClusterGroup, SentinelGroup

#: The cluster nodes' config: the chat namespace and an API key for /api/nodes.
CLUSTER_CONFIG = CONFIG + '\n[auth]\napi_key = "secret"\n'


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as exits:
        yield exits


async def _status_is(node: NodeProc, status: int) -> bool:
    return await readyz(node) == status


@dataclass
class Stream:
    """A publisher sending ``(tag, seq)`` on one channel as fast as it is
    answered: what was acknowledged (seq → offset) and how often it got 503."""

    publisher: Client
    channel: str
    tag: str
    acked: dict[int, int] = field(default_factory=dict)
    refused: int = 0
    seq: int = 0

    async def run(self, until: asyncio.Event, pause: float = 0.005) -> None:
        while not until.is_set():
            self.seq += 1
            try:
                offset = await self.publisher.publish(self.channel, [self.tag, self.seq])
            except ReplyError as exc:
                assert exc.code == 503, exc  # refused, never another error
                self.refused += 1
            else:
                assert offset is not None
                self.acked[self.seq] = offset
            await asyncio.sleep(pause)


async def receive_until(sub: Subscription, last: list[object]) -> list[Publication]:
    """Publications of ``sub`` up to and including the one whose data is ``last``."""
    out: list[Publication] = []
    async with asyncio.timeout(WAIT):
        while not out or out[-1].data != last:
            out.append(await anext(sub))
    return out


def check_nothing_acked_was_lost(got: list[Publication], stream: Stream) -> None:
    """Each acknowledged publication arrived (live or recovered), once, in
    offset order; what arrived besides was at most the refused ones (a 503 for
    a command already sent means "unknown")."""
    mine = [p for p in got if p.data[0] == stream.tag]
    seqs = [p.data[1] for p in mine]
    assert len(seqs) == len(set(seqs)), "a publication arrived twice"
    offsets = [p.offset for p in mine]
    assert offsets == sorted(offsets) and None not in offsets
    missing = sorted(set(stream.acked) - set(seqs))
    assert not missing, f"acknowledged, never delivered: {missing}"
    assert len(set(seqs) - set(stream.acked)) <= stream.refused


# -- Sentinel ----------------------------------------------------------------------


async def test_sentinel_failover_under_a_publish_stream(
    redis_sentinel: SentinelGroup, node_factory: NodeFactory, stack: AsyncExitStack
) -> None:
    redis_sentinel.heal()  # two replicas, whatever an earlier test killed
    nodes = [node_factory(CONFIG, redis=[redis_sentinel.url]) for _ in range(2)]
    channel = "chat:sentinel-failover"
    events: dict[int, list[ChannelEvent]] = {0: [], 1: []}
    subscribers = await clients(stack, nodes[0].ws_url, nodes[1].tcp_url)
    subs = [
        await c.subscribe(channel, on_event=events[i].append) for i, c in enumerate(subscribers)
    ]
    publishers = await clients(stack, nodes[0].tcp_url, nodes[1].ws_url)
    streams = [Stream(p, channel, f"p{i}") for i, p in enumerate(publishers)]
    stop = asyncio.Event()
    running = [asyncio.ensure_future(s.run(stop)) for s in streams]
    await eventually(lambda: all(len(s.acked) >= 20 for s in streams))

    old = redis_sentinel.primary()
    old.kill()
    for node in nodes:  # no primary known: not ready, publications refused
        await eventually(partial(_status_is, node, 503))
    await eventually(lambda: all(s.refused > 0 for s in streams))
    for node in nodes:  # the sentinels promoted a replica: ready again
        await eventually(partial(_status_is, node, 200), timeout=30.0)
    assert redis_sentinel.primary_port() != old.port
    after = {id(s): len(s.acked) for s in streams}
    await eventually(lambda: all(len(s.acked) >= after[id(s)] + 20 for s in streams))
    stop.set()
    await asyncio.gather(*running)

    for i, sub in enumerate(subs):
        got: list[Publication] = []
        for stream in streams:
            last = [stream.tag, max(stream.acked)]
            if last not in [p.data for p in got]:
                got += await receive_until(sub, last)
        for stream in streams:
            check_nothing_acked_was_lost(got, stream)
        # Told of the gap, recovered from the history the new primary kept.
        assert any(e.kind == "lag" for e in events[i]), events[i]
        assert not any(e.kind == "reset" for e in events[i]), events[i]
    assert all(c.reconnects == 0 for c in subscribers + publishers)


# -- Redis Cluster -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_nodes(redis_cluster: ClusterGroup) -> Iterator[list[NodeProc]]:
    """Three hubbub nodes on the session's Redis Cluster, given only its URL."""
    nodes = [start_node(CLUSTER_CONFIG, redis=[redis_cluster.url]) for _ in range(3)]
    yield nodes
    for node in nodes:
        node.stop()


def channels_over_all_primaries(prefix: str, count: int) -> list[str]:
    """``count`` channel names whose slots spread over the whole slot space."""
    names = [f"{prefix}-{i}" for i in range(count)]
    slots = sorted(slot_of(n) for n in names)
    assert slots[0] < 5461 and slots[-1] > 10922  # every primary's range has some
    return names


async def test_cluster_exactly_once_history_recovery_presence(
    redis_cluster: ClusterGroup, cluster_nodes: list[NodeProc], stack: AsyncExitStack
) -> None:
    nodes = cluster_nodes
    channels = channels_over_all_primaries("chat:all-slots", 48)
    per_publisher = 5
    subscribers = await clients(stack, nodes[0].ws_url, nodes[1].tcp_url, nodes[2].ws_url)
    subs = {(i, ch): await c.subscribe(ch) for i, c in enumerate(subscribers) for ch in channels}
    publishers = await clients(stack, *(n.tcp_url for n in nodes))

    async def publish_all(index: int, pub: Client) -> None:
        for seq in range(per_publisher):
            await asyncio.gather(*(pub.publish(ch, [index, seq]) for ch in channels))

    await asyncio.gather(*(publish_all(i, p) for i, p in enumerate(publishers)))
    total = per_publisher * len(publishers)
    orders: dict[str, list[list[int]]] = {}
    for (_, ch), sub in subs.items():
        got = await take(sub, total)
        seen = [p.data for p in got]
        assert sorted(map(tuple, seen)) == [(n, s) for n in range(3) for s in range(5)]
        assert [p.offset for p in got] == list(range(1, total + 1))
        assert orders.setdefault(ch, seen) == seen  # one order on every node
    await asyncio.sleep(0.2)
    assert all(sub.pending == 0 for sub in subs.values())  # nothing twice

    # History and recovery across nodes: a session that left node 0 resumes on node 2.
    channel = channels[0]
    first = subs[(0, channel)]
    position = first.position
    assert position is not None and position.offset == total
    await subscribers[0].unsubscribe(channel)
    for i in range(4):
        await publishers[1].publish(channel, ["later", i])
    (later,) = await clients(stack, nodes[2].tcp_url)
    resumed = await later.subscribe(channel, recover=True, since=position)
    assert resumed.recovered is True
    assert [p.data for p in await take(resumed, 4)] == [["later", i] for i in range(4)]
    history = await later.history(channel, limit=2)
    assert [p.data for p in history.publications] == [["later", 2], ["later", 3]]
    assert history.position.offset == total + 4 and history.position.epoch == position.epoch

    # Presence and join/leave across nodes, on a channel of each primary.
    for ch in (channels[1], channels[-1]):
        events: list[ChannelEvent] = []
        await subscribers[0].unsubscribe(ch)
        await subscribers[0].subscribe(ch, on_event=events.append)
        await subscribers[1].unsubscribe(ch)
        await subscribers[1].subscribe(ch)
        await eventually(lambda ev=events: any(e.kind == "join" for e in ev))  # type: ignore[misc]
        present = await later.presence(ch)
        assert {subscribers[0].client_id, subscribers[1].client_id} <= set(present)

    # /api/nodes lists the three nodes (the registry lives in one slot).
    _, body = await http_get(nodes[0], "/api/nodes", "secret")
    assert sorted(n["node"] for n in body["nodes"]) == sorted(n.node_id for n in nodes)
    assert all(n["shards"] and all(s["up"] for s in n["shards"]) for n in body["nodes"])


async def test_cluster_primary_sigkilled_under_load(
    redis_cluster: ClusterGroup, cluster_nodes: list[NodeProc], stack: AsyncExitStack
) -> None:
    redis_cluster.heal()
    nodes = cluster_nodes
    channels = channels_over_all_primaries("chat:failover", 12)
    subscribers = await clients(stack, *(n.ws_url for n in nodes))
    subs = [[await c.subscribe(ch) for ch in channels] for c in subscribers]
    publishers = await clients(stack, *(n.tcp_url for n in nodes))
    streams = [Stream(publishers[i % 3], ch, f"s{i}") for i, ch in enumerate(channels)]
    stop = asyncio.Event()
    running = [asyncio.ensure_future(s.run(stop, pause=0.02)) for s in streams]
    await eventually(lambda: all(len(s.acked) >= 5 for s in streams))

    victim = redis_cluster.primaries()[0]
    victim.kill()
    # The channels of the dead primary are refused until its replica took over.
    await eventually(lambda: any(s.refused > 0 for s in streams), timeout=30.0)
    for node in nodes:
        await eventually(partial(_status_is, node, 200), timeout=30.0)
    # The promoted replica has no replica of its own: with min_replicas=auto (the
    # default) it acknowledges alone, so every channel goes on without the dead node.
    after = {id(s): len(s.acked) for s in streams}
    await eventually(lambda: all(len(s.acked) >= after[id(s)] + 5 for s in streams))
    stop.set()
    await asyncio.gather(*running)
    assert any(s.refused == 0 for s in streams)  # the other primaries' channels kept going

    for per_client in subs:
        for sub, stream in zip(per_client, streams, strict=True):
            got = await receive_until(sub, [stream.tag, max(stream.acked)])
            check_nothing_acked_was_lost(got, stream)
    assert all(c.reconnects == 0 for c in subscribers + publishers)


async def test_cluster_reshard_under_load(
    redis_cluster: ClusterGroup, cluster_nodes: list[NodeProc], stack: AsyncExitStack
) -> None:
    """``redis-cli --cluster reshard`` moves a slot with its keys to another
    primary: the moved channel's subscribers get ``lag``, recover, and follow it."""
    redis_cluster.heal()
    nodes = cluster_nodes
    source, target = redis_cluster.primary_ids()[:2]
    slot = redis_cluster.first_slot(source)
    moving = next(f"chat:moving-{i}" for i in range(200_000) if slot_of(f"chat:moving-{i}") == slot)
    staying = next(
        f"chat:staying-{i}" for i in range(200_000) if slot_of(f"chat:staying-{i}") != slot
    )
    events: list[list[ChannelEvent]] = [[], [], []]
    subscribers = await clients(stack, nodes[0].ws_url, nodes[1].tcp_url, nodes[2].ws_url)
    subs = [
        [await c.subscribe(ch, on_event=events[i].append) for ch in (moving, staying)]
        for i, c in enumerate(subscribers)
    ]
    publishers = await clients(stack, nodes[0].tcp_url, nodes[2].tcp_url)
    streams = [Stream(publishers[0], moving, "moving"), Stream(publishers[1], staying, "staying")]
    stop = asyncio.Event()
    running = [asyncio.ensure_future(s.run(stop, pause=0.01)) for s in streams]
    await eventually(lambda: all(len(s.acked) >= 10 for s in streams))

    await asyncio.to_thread(redis_cluster.reshard, source, target, 1)
    assert redis_cluster.first_slot(source) != slot
    after = len(streams[0].acked)
    await eventually(lambda: len(streams[0].acked) >= after + 10)
    stop.set()
    await asyncio.gather(*running)

    for i, per_client in enumerate(subs):
        for sub, stream in zip(per_client, streams, strict=True):
            got = await receive_until(sub, [stream.tag, max(stream.acked)])
            check_nothing_acked_was_lost(got, stream)
        # The moved channel's subscribers were told, the other channel's were not.
        assert any(e.kind == "lag" and e.channel == moving for e in events[i]), events[i]
        assert not any(e.kind == "lag" and e.channel == staying for e in events[i]), events[i]
    # The moved channel is subscribed on its new primary now.
    assert SlotKeys().pubsub(moving).decode() in redis_cluster.shard_channels(target)
    assert all(c.reconnects == 0 for c in subscribers + publishers)
