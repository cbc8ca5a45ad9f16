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
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial

import pytest

from hubbub.client import ChannelEvent, Client, Publication, ReplyError, Subscription
from tests.e2e.test_cluster import CONFIG, WAIT, NodeFactory, clients, eventually, readyz
from tests.procs import NodeProc
from tests.redis_ha import SentinelGroup


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
