"""The Redis engine: nodes fan out through Redis pub/sub (DESIGN.md "Clustering").

How a publication travels: the publishing node runs one Lua script (EVALSHA,
one round trip, pipelined with every other command of the node) that, for a
namespace with history, appends the envelope to the channel's stream, bumps the
top offset and PUBLISHes the envelope with its offset and epoch; without
history it is a plain PUBLISH. Every node subscribed to the channel receives it
on its pub/sub connection, decodes it once and hands it to the hub, which fans
it out to its local subscribers. A node SUBSCRIBEs on a channel's first local
subscriber and UNSUBSCRIBEs on its last (the hub calls :meth:`subscribe` and
:meth:`unsubscribe` once per channel, serialised per channel).

Key layout: :mod:`cluster.redis_layout`. Scripts: :mod:`cluster.redis_scripts`.
Several URLs are shards: each channel, with all its keys and its pub/sub
channel, lives on the shard :func:`cluster.sharding.shard_of` picks (jump hash;
the URL order must be the same on every node). Failure behaviour (503 while a
shard is down, reconnects, gaps): :mod:`cluster.redis_shard` and
:mod:`cluster.redis_pubsub`. Presence: :mod:`cluster.redis_presence`; the
registry of live nodes (``GET /api/nodes``): :mod:`cluster.redis_nodes`. A
``redis+sentinel://`` URL is a shard whose primary is found through Sentinel
(:mod:`cluster.redis_sentinel`); a ``redis+cluster://`` URL is a Redis Cluster
with sharded pub/sub (:mod:`cluster.redis_cluster`, a subclass of this engine).
The whole story: ``docs/clustering.md``.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from hubbub.cluster.broker import (
    BackendState,
    Broker,
    BrokerHandler,
    ChannelOptions,
    ClientInfo,
    HistoryResult,
    Publication,
    Recovery,
)
from hubbub.cluster.redis_layout import JOIN, LEAVE, Keys, decode, encode_event, encode_publication
from hubbub.cluster.redis_layout import publication as make_publication
from hubbub.cluster.redis_nodes import NodeRegistry
from hubbub.cluster.redis_presence import Presence
from hubbub.cluster.redis_scripts import HISTORY, PUBLISH, Script
from hubbub.cluster.redis_shard import Backend, Shard
from hubbub.cluster.sharding import shard_of
from hubbub.protocol.exceptions import PositionGone
from hubbub.protocol.messages import StreamPosition

#: The instance part of this engine's empty epochs (``~r.<ms>``, cluster.broker).
EMPTY_INSTANCE = "r"

S = TypeVar("S", bound=Shard)


class RedisBroker(Broker):
    """The broker of a cluster: one or more Redis servers (shards) shared by every node."""

    name = "redis"
    pipelined = True

    #: Seconds :meth:`start` waits for the pub/sub connections before returning.
    start_timeout: float = 2.0
    #: The key layout, the publish command and script (a Redis Cluster's differ).
    keys_class: type[Keys] = Keys
    publish_command: bytes = b"PUBLISH"
    publish_script: Script = PUBLISH

    def __init__(
        self,
        urls: list[str],
        *,
        node_id: str,
        prefix: str = "hubbub",
        probe_interval: float = 1.0,
        probe_timeout: float = 3.0,
    ) -> None:
        if not urls:
            raise ValueError("the Redis engine needs at least one URL")
        self.node_id = node_id or secrets.token_hex(4)
        #: The delivery probe of every pub/sub connection (cluster.redis_probe).
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.keys = self.keys_class(prefix)
        self.shards = self._make_shards(urls)
        self.presence_store = Presence(self.keys, self.backend_for)
        self.registry = NodeRegistry(
            self.keys.nodes(), self._registry_backend(), self.node_id, self._node_info
        )
        # Epochs are only ever used for a history that does not exist yet: a
        # per-process random prefix and a counter make each one new.
        self._epoch_prefix = secrets.token_urlsafe(6)
        self._epochs = itertools.count(1)
        self._no_history = StreamPosition(0, secrets.token_urlsafe(6))
        self._started = False
        self._closed = False
        self._describe: Callable[[], dict[str, Any]] = dict

    # -- lifecycle -------------------------------------------------------------

    def _make_shards(self, urls: list[str]) -> list[Shard]:
        return [self._shard(i, url, Shard) for i, url in enumerate(urls)]

    def _shard(self, index: int | str, url: str, cls: type[S]) -> S:
        """A shard of this engine (``cls``: a Redis Cluster primary's is a subclass)."""
        return cls(
            index,
            url,
            self.keys,
            node_id=self.node_id,
            probe_interval=self.probe_interval,
            probe_timeout=self.probe_timeout,
        )

    def _registry_backend(self) -> Backend:
        """Where the registry of live nodes is kept: the first shard."""
        return self.shards[0]

    async def start(self, handler: BrokerHandler) -> None:
        if self._started:
            return
        self._started = True
        await self._start_backends(handler)
        await asyncio.gather(
            *(s.subscriber.wait_connected(self.start_timeout) for s in self.shards if s.up)
        )
        self.presence_store.heartbeat.start()
        if self.registry.backend.up:
            await self.registry.beat()
        self.registry.heartbeat.start()

    async def _start_backends(self, handler: BrokerHandler) -> None:
        await asyncio.gather(*(shard.start(handler) for shard in self.shards))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.presence_store.heartbeat.stop()
        await self.registry.heartbeat.stop()
        if self._started:
            await self.registry.leave()
        await asyncio.gather(*(shard.close() for shard in self.shards))

    @property
    def healthy(self) -> bool:
        return not self._closed and all(shard.healthy for shard in self.shards)

    @property
    def reader_restarts(self) -> int:
        """Pub/sub reader tasks that ended and were restarted (should stay 0)."""
        return sum(shard.subscriber.restarts for shard in self.shards)

    async def nodes(self) -> list[dict[str, Any]]:
        return await self.registry.nodes()

    async def describe_node(self, describe: Callable[[], dict[str, Any]]) -> None:
        self._describe = describe
        if self._started and not self._closed:  # report the addresses now, not in 5 s
            await self.registry.beat()

    def _node_info(self) -> dict[str, Any]:
        """What this node reports in the registry besides its id and times."""
        return {
            **self._describe(),
            "channels": sum(len(s.subscriber.wanted) for s in self.shards),
            "presence": len(self.presence_store.local),
            "shards": [{"shard": s.label, "up": s.up} for s in self.shards],
            "reader_restarts": self.reader_restarts,
        }

    async def settle(self, timeout: float) -> None:
        await asyncio.gather(*(shard.subscriber.settle(timeout) for shard in self.shards))

    def backends(self) -> list[BackendState]:
        return [
            BackendState(
                name=shard.label,
                up=shard.up,
                subscriber_connected=shard.subscriber.connected,
                reconnects=shard.subscriber.reconnects,
                reader_restarts=shard.subscriber.restarts,
                probe_misses=shard.subscriber.probe.misses,
            )
            for shard in self.shards
        ]

    def shard_for(self, channel: str) -> Shard:
        """The shard that owns ``channel``."""
        shards = self.shards
        if len(shards) == 1:
            return shards[0]
        return shards[shard_of(channel, len(shards))]

    def backend_for(self, channel: str) -> Backend:
        """Where the commands of ``channel``'s keys go: its shard (on a Redis
        Cluster, a route to whichever primary owns the slot now)."""
        return self.shard_for(channel)

    def _new_epoch(self) -> str:
        return f"{self._epoch_prefix}{next(self._epochs):x}"

    # -- delivery --------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        await self.shard_for(channel).subscriber.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.shard_for(channel).subscriber.unsubscribe(channel)

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        options: ChannelOptions,
        sender: ClientInfo | None = None,
    ) -> StreamPosition | None:
        shard = self.backend_for(channel)
        envelope = encode_publication(data, sender)
        keys = self.keys
        if options.history_size <= 0:
            await shard.call(self.publish_command, keys.pubsub(channel), envelope)
            return None
        reply = await shard.eval(
            self.publish_script,
            keys.history_keys(channel),
            (
                keys.pubsub(channel),
                envelope,
                options.history_size,
                _ms(options.history_ttl),
                self._new_epoch(),
            ),
            replicated=True,
        )
        return StreamPosition(reply[0], reply[1].decode())

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        await self.backend_for(channel).call(
            self.publish_command, self.keys.pubsub(channel), encode_event(JOIN, info)
        )

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        await self.backend_for(channel).call(
            self.publish_command, self.keys.pubsub(channel), encode_event(LEAVE, info)
        )

    # -- history ---------------------------------------------------------------

    async def history(
        self,
        channel: str,
        *,
        options: ChannelOptions,
        since: StreamPosition | None = None,
        limit: int | None = None,
    ) -> HistoryResult:
        if not options.has_history:
            return HistoryResult([], self._no_history)
        ok, pubs, position = await self._read(channel, options, since, limit)
        if not ok:
            raise PositionGone()
        return HistoryResult(pubs, position)

    async def recover(
        self, channel: str, since: StreamPosition, *, options: ChannelOptions
    ) -> Recovery:
        """One script call: the missed publications, or the current position."""
        if not options.has_history:
            return Recovery([], self._no_history, recovered=False)
        ok, pubs, position = await self._read(channel, options, since, None)
        return Recovery(pubs, position, recovered=ok)

    async def _read(
        self,
        channel: str,
        options: ChannelOptions,
        since: StreamPosition | None,
        limit: int | None,
    ) -> tuple[bool, list[Publication], StreamPosition]:
        reply = await self.backend_for(channel).eval(
            HISTORY,
            self.keys.history_keys(channel),
            (
                EMPTY_INSTANCE,
                _ms(options.history_ttl),
                options.history_size,
                "" if since is None else since.offset,
                "" if since is None else since.epoch,
                -1 if limit is None else max(0, limit),
            ),
        )
        top, epoch, ok, first = reply[0], reply[1].decode(), reply[2], reply[3]
        pubs = [
            make_publication(channel, decode(envelope), first + i, epoch)
            for i, envelope in enumerate(reply[4:])
        ]
        return bool(ok), pubs, StreamPosition(top, epoch)

    # -- presence --------------------------------------------------------------

    async def add_presence(self, channel: str, info: ClientInfo) -> None:
        await self.presence_store.add(channel, info)

    async def remove_presence(self, channel: str, client: str) -> None:
        await self.presence_store.remove(channel, client)

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        return await self.presence_store.get(channel)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
