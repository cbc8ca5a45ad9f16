"""The Redis Cluster engine: ``redis+cluster://H1:P1[,H2:P2...]``, sharded pub/sub.

Everything of a channel lives in the channel's slot: the keys carry the hash
tag ``{<channel>}`` and so does its sharded pub/sub channel
(:class:`~cluster.redis_layout.SlotKeys`), so the publish script (history
append + ``SPUBLISH``) runs on the one primary that owns the slot, and the
message is sent only to that primary's subscribers (and replicas), not
broadcast over the whole cluster as a classic PUBLISH is.

The node learns the slot map with ``CLUSTER SLOTS`` from the URL's nodes (any
one suffices; the others it learns from the map), and holds per primary what a
shard has (:class:`~cluster.redis_shard.Shard`: a pipelined command
connection, a health check, and here a sharded pub/sub connection,
:class:`~cluster.redis_spubsub.ShardedSubscriber`). Commands go through a
:class:`Route` per slot, which follows ``MOVED`` (the map is updated and
refreshed) and ``ASK`` (``ASKING`` + the command on the importing primary).

The map is refreshed every :attr:`ClusterBroker.refresh_interval` seconds, at
once on a ``MOVED`` or when a primary let a channel go, and every
:attr:`ClusterBroker.refresh_retry` seconds while a slot has no reachable
primary (a failover in progress). After each refresh, every subscribed
channel whose slot is now owned by another primary is subscribed there
(``on_gap`` to its subscribers once confirmed, so they recover from history,
which moved with the slot) and dropped from the old one; primaries that own
nothing any more are closed. While a slot has no reachable primary, its
channels' commands are refused with 503 and ``healthy`` is False (``/readyz``).

The delivery probe (:mod:`cluster.redis_probe`) of a sharded pub/sub
connection must reach that primary's subscribers: an ``SPUBLISH`` goes only to
the connections of the primary owning the channel's slot. So after each
refresh every primary gets a probe channel ``<prefix>:probe:<node>.<random>:{<tag>}``
whose tag hashes to a slot it owns (kept while it owns it), published with
``SPUBLISH`` on that primary's own command connection. A ``MOVED``/``ASK`` to a
probe (the slot left or is leaving) drops that channel and refreshes the map;
a new one in another slot follows. A primary that owns no slot (one being
emptied) is not probed; its subscriber is not connected unless channels are
still being moved off it.

A publication is acknowledged once ``WAIT`` says one replica of the slot's
primary holds it, so the replica that takes over a failed primary holds every
acknowledged publication (``?min_replicas=auto``, the default: while the
primary has a replica; the replica promoted after its primary died has none
and acknowledges alone until one joins it; ``1`` refuses then, ``0`` never waits).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError

from hubbub import log
from hubbub.cluster.broker import BrokerHandler
from hubbub.cluster.exceptions import BrokerUnavailable, SlotMoved
from hubbub.cluster.redis import RedisBroker
from hubbub.cluster.redis_conn import (
    AUTO_REPLICAS,
    Replication,
    Supervised,
    close_quietly,
    connect,
    connection_factory,
    describe,
    pack,
    split_hosts_url,
    split_replication,
)
from hubbub.cluster.redis_layout import SlotKeys
from hubbub.cluster.redis_scripts import ALL_SHARDED, PUBLISH_SHARDED
from hubbub.cluster.redis_shard import Commands, Shard
from hubbub.cluster.redis_spubsub import ShardedSubscriber

SCHEME = "redis+cluster"
SLOTS = REDIS_CLUSTER_HASH_SLOTS
Address = tuple[str, int]
_CLUSTER_SLOTS = pack(b"CLUSTER", b"SLOTS")


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """What a ``redis+cluster://`` URL names: nodes to ask for the slot map."""

    seeds: tuple[Address, ...]
    username: str | None = None
    password: str | None = None
    #: Replicas of a slot's primary a publication must reach (``?min_replicas=``).
    replication: Replication = AUTO_REPLICAS


def parse_cluster_url(url: str) -> ClusterTarget:
    """Parse ``redis+cluster://[[user]:password@]H1:P1[,H2:P2...][?min_replicas=N
    &replica_timeout_ms=MS]``; ``ValueError`` if bad."""
    url, replication = split_replication(url, AUTO_REPLICAS)
    url_parts = split_hosts_url(url, SCHEME)
    if url_parts.path:
        raise ValueError(f"{SCHEME}: a cluster has one database, no path: {url!r}")
    return ClusterTarget(url_parts.hosts, url_parts.username, url_parts.password, replication)


@lru_cache(maxsize=65536)
def slot_of(channel: str) -> int:
    """The slot of every key of ``channel`` (its hash tag is the channel name)."""
    return key_slot(channel.encode())


def parse_slots(reply: Any, asked: str) -> tuple[list[tuple[int, int, Address]], list[Address]]:
    """``CLUSTER SLOTS``: (first slot, last slot, primary) ranges and every node
    named (replicas too). An empty host means the node that was asked."""
    ranges = []
    nodes: list[Address] = []
    for entry in reply:
        first, last = int(entry[0]), int(entry[1])
        addresses = [((n[0].decode() or asked), int(n[1])) for n in entry[2:]]
        ranges.append((first, last, addresses[0]))
        nodes += addresses
    return ranges, nodes


class ClusterShard(Shard):
    """One cluster primary: commands, health, sharded pub/sub."""

    subscriber_class = ShardedSubscriber
    scripts = ALL_SHARDED
    probe_command = b"SPUBLISH"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._probe_tags = 0

    def first_probe_channel(self) -> bytes | None:
        """None until :meth:`place_probe` puts one in a slot the map says is ours."""
        return self.subscriber.probe_channel

    def place_probe(self, owners: Sequence[Shard | None]) -> None:
        """Keep the probe channel in a slot this primary owns (none: not probed)."""
        subscriber = self.subscriber
        if not subscriber.probe.enabled:
            return
        current = subscriber.probe_channel
        if current is not None and owners[key_slot(current)] is self:
            return
        subscriber.set_probe_channel(self._probe_channel_in(owners))

    def _probe_channel_in(self, owners: Sequence[Shard | None]) -> bytes | None:
        owned = sum(1 for owner in owners if owner is self)
        if not owned:
            return None
        while True:  # a tag lands in an owned slot with odds owned/SLOTS per try
            self._probe_tags += 1
            rch = self.keys.probe(f"{self.probe_name}:{{{self._probe_tags:x}}}")
            if owners[key_slot(rch)] is self:
                return rch

    def probe_failed(self, exc: Exception) -> None:
        if isinstance(exc, AskError):  # MOVED or ASK: the slot is (being) given away
            self.subscriber.set_probe_channel(None)
            self.sharded.on_moved([])  # refresh the map: a new probe channel follows

    @property
    def healthy(self) -> bool:
        """Reachable, and the sharded pub/sub connection open if one is needed."""
        return self.up and (self.subscriber.connected or not self.subscriber.needed)

    @property
    def sharded(self) -> ShardedSubscriber:
        subscriber = self.subscriber
        assert isinstance(subscriber, ShardedSubscriber)
        return subscriber


class Route(Commands):
    """The commands of one slot's keys, sent to the primary that owns the slot now."""

    __slots__ = ("_broker", "slot")

    def __init__(self, broker: ClusterBroker, slot: int) -> None:
        self._broker = broker
        self.slot = slot

    @property
    def label(self) -> str:
        shard = self._broker.owner(self.slot)
        return f"slot {self.slot}" if shard is None else shard.label

    @property
    def up(self) -> bool:
        shard = self._broker.owner(self.slot)
        return shard is not None and shard.up

    async def execute(self, command: bytes, *, replicated: bool = False) -> Any:
        broker = self._broker
        for _ in range(broker.max_redirects):
            shard = broker.owner(self.slot)
            if shard is None:
                broker.wake()
                raise BrokerUnavailable("redis cluster: no primary serves the channel's slot")
            try:
                return await shard.execute(command, replicated=replicated)
            except MovedError as exc:  # not run there: safe to send again
                await broker.moved(exc.slot_id, (exc.host, exc.port))
            except AskError as exc:  # the slot is moving and the keys already went
                target = await broker.shard_at((exc.host, exc.port))
                try:
                    return await target.execute(command, replicated=replicated, asking=True)
                except MovedError as again:
                    await broker.moved(again.slot_id, (again.host, again.port))
            except ClusterDownError as exc:
                broker.wake()
                raise BrokerUnavailable(f"redis: {exc}") from exc
        raise BrokerUnavailable("redis cluster: the channel's slot keeps moving")


class ClusterBroker(RedisBroker):
    """The broker of hubbub nodes sharing one Redis Cluster."""

    name = "redis-cluster"
    keys_class = SlotKeys
    publish_command = b"SPUBLISH"
    publish_script = PUBLISH_SHARDED

    #: Seconds between slot map refreshes while every slot is served.
    refresh_interval: float = 5.0
    #: Seconds between refreshes while a slot has no reachable primary.
    refresh_retry: float = 0.25
    #: Redirects (MOVED, ASK) one command or subscribe follows before a 503.
    max_redirects: int = 5

    def __init__(
        self,
        url: str,
        *,
        node_id: str,
        prefix: str = "hubbub",
        probe_interval: float = 1.0,
        probe_timeout: float = 3.0,
    ) -> None:
        self.target = parse_cluster_url(url)
        self._owners: list[Shard | None] = [None] * SLOTS
        self._covered = False
        self._primaries: dict[Address, ClusterShard] = {}
        self._starting: dict[Address, asyncio.Task[None]] = {}
        self._known: list[Address] = list(self.target.seeds)
        self._routes: dict[int, Route] = {}
        self._homes: dict[str, ClusterShard] = {}  # subscribed channel -> its primary
        self._homeless: set[str] = set()  # let go by their primary, to subscribe again
        self._subscribing: set[str] = set()
        self._handler: BrokerHandler | None = None
        self._refresh_lock = asyncio.Lock()
        self._refreshes = 0
        self._wake = asyncio.Event()
        self._shard_ids = itertools.count()
        super().__init__(
            [url],
            node_id=node_id,
            prefix=prefix,
            probe_interval=probe_interval,
            probe_timeout=probe_timeout,
        )
        self.topology = Supervised("redis-cluster-topology", self._watch)

    def _make_shards(self, urls: list[str]) -> list[Shard]:
        return []  # the primaries are learned from the slot map at start

    def _registry_backend(self) -> Route:
        return self.route(key_slot(self.keys.nodes().encode()))

    # -- lifecycle -------------------------------------------------------------

    async def _start_backends(self, handler: BrokerHandler) -> None:
        self._handler = handler
        if not await self.refresh():
            log.warning("redis_down", shard=SCHEME, reason="no cluster node answered")
        self.topology.start()

    async def close(self) -> None:
        await self.topology.stop()
        for task in list(self._starting.values()):
            await asyncio.gather(task, return_exceptions=True)
        await super().close()

    @property
    def healthy(self) -> bool:
        return not self._closed and self._covered and all(s.healthy for s in self.shards)

    # -- where things are ------------------------------------------------------

    def owner(self, slot: int) -> Shard | None:
        """The primary serving ``slot`` as far as this node knows."""
        return self._owners[slot]

    def route(self, slot: int) -> Route:
        route = self._routes.get(slot)
        if route is None:
            route = self._routes[slot] = Route(self, slot)
        return route

    def backend_for(self, channel: str) -> Route:
        return self.route(slot_of(channel))

    def shard_for(self, channel: str) -> Shard:
        """The primary that owns ``channel``'s slot now; 503 when none is known."""
        shard = self._owners[slot_of(channel)]
        if shard is None:
            raise BrokerUnavailable("redis cluster: no primary serves the channel's slot")
        return shard

    def wake(self) -> None:
        """Refresh the slot map soon."""
        self._wake.set()

    async def shard_at(self, address: Address) -> ClusterShard:
        """The primary at ``address``, connected (made and started when new)."""
        shard = self._primaries.get(address)
        if shard is None:
            assert self._handler is not None, "start the broker first"
            host, port = address
            auth = ""
            if self.target.password is not None or self.target.username:
                auth = f"{quote(self.target.username or '')}:{quote(self.target.password or '')}@"
            shard = self._shard(
                f"c{next(self._shard_ids)}",
                f"redis://{auth}{host}:{port}/0?{self.target.replication.query}",
                ClusterShard,
            )
            shard.sharded.on_moved = self._on_moved
            self._primaries[address] = shard
            starting = asyncio.get_running_loop().create_task(shard.start(self._handler))
            self._starting[address] = starting
            starting.add_done_callback(lambda _: self._starting.pop(address, None))
            self.shards = list(self._primaries.values())
        task = self._starting.get(address)
        if task is not None:
            await asyncio.shield(task)
        return shard

    async def moved(self, slot: int, address: Address) -> None:
        """A ``MOVED``: ``slot`` is served at ``address`` now; refresh the rest soon."""
        self._owners[slot] = await self.shard_at(address)
        self.wake()

    # -- the slot map ----------------------------------------------------------

    async def refresh(self) -> bool:
        """Read the slot map and move subscriptions to their primaries; False
        when no node answered (what is known stays)."""
        seen = self._refreshes
        async with self._refresh_lock:
            if self._refreshes != seen:
                return True  # refreshed while we waited
            reply, asked = await self._fetch_slots()
            if reply is None:
                return False
            ranges, nodes = parse_slots(reply, asked)
            owners: list[Shard | None] = [None] * SLOTS
            for first, last, address in ranges:
                owners[first : last + 1] = [await self.shard_at(address)] * (last - first + 1)
            self._owners = owners
            self._covered = all(owner is not None for owner in owners)
            self._known = list(dict.fromkeys([*self.target.seeds, *nodes]))
            self._refreshes += 1
            for primary in self._primaries.values():
                primary.place_probe(owners)
            self._reconcile()
            await self._retire()
            return True

    async def _fetch_slots(self) -> tuple[Any, str]:
        """``CLUSTER SLOTS`` from a primary that is up, else from any node known."""
        for address, shard in list(self._primaries.items()):
            if shard.up:
                try:
                    async with asyncio.timeout(Shard.health_timeout):
                        return await shard.execute(_CLUSTER_SLOTS), address[0]
                except Exception:
                    continue
        for address in self._known:
            host, port = address
            conn = connection_factory(
                f"redis://{host}:{port}/0",
                client_name=f"hubbub-{self.node_id}-topology",
                socket_timeout=Shard.health_timeout,
            )()
            if self.target.password is not None:
                conn.username, conn.password = self.target.username, self.target.password
            try:
                await connect(conn, Shard.health_timeout)
                await conn.send_packed_command(_CLUSTER_SLOTS, check_health=False)
                return await conn.read_response(), host
            except Exception as exc:
                log.info(
                    "redis_cluster_node_unreachable", node=f"{host}:{port}", error=describe(exc)
                )
            finally:
                await close_quietly(conn)
        return None, ""

    def _reconcile(self) -> None:
        """Subscribe each channel on the primary that owns its slot now."""
        owners = self._owners
        for channel, home in list(self._homes.items()):
            if channel in self._subscribing:
                continue  # its subscribe follows the slot itself
            owner = owners[slot_of(channel)]
            if owner is None or (owner is home and channel not in self._homeless):
                continue
            assert isinstance(owner, ClusterShard)
            if owner is not home:
                home.sharded.release(channel)
                log.info("redis_channel_moved", channel=channel, old=home.label, new=owner.label)
            self._homes[channel] = owner
            self._homeless.discard(channel)
            owner.sharded.adopt(channel)

    async def _retire(self) -> None:
        """Close the primaries that own no slot and hold no subscription."""
        used = set(self._owners) | set(self._homes.values())
        for address, shard in list(self._primaries.items()):
            if shard not in used and address not in self._starting:
                del self._primaries[address]
                await shard.close()
        self.shards = list(self._primaries.values())

    def _on_moved(self, channels: list[str]) -> None:
        self._homeless.update(c for c in channels if c in self._homes)
        self.wake()

    def _settled(self) -> bool:
        return self._covered and not self._homeless and all(s.up for s in self.shards)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            try:
                async with asyncio.timeout(self.refresh_retry):
                    await self._wake.wait()
            except TimeoutError:
                pass
            now = loop.time()
            if self._wake.is_set() or not self._settled() or now - last >= self.refresh_interval:
                self._wake.clear()
                last = now
                await self.refresh()

    # -- delivery --------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        slot = slot_of(channel)
        self._subscribing.add(channel)
        try:
            for _ in range(self.max_redirects):
                shard = self._owners[slot]
                if shard is None:
                    self.wake()
                    raise BrokerUnavailable("redis cluster: no primary serves the channel's slot")
                assert isinstance(shard, ClusterShard)
                self._homes[channel] = shard
                self._homeless.discard(channel)
                try:
                    await shard.subscriber.subscribe(channel)
                    return
                except SlotMoved:
                    await self.refresh()
            raise BrokerUnavailable("redis cluster: the channel's slot keeps moving")
        except BaseException:
            self._homes.pop(channel, None)
            raise
        finally:
            self._subscribing.discard(channel)

    async def unsubscribe(self, channel: str) -> None:
        home = self._homes.pop(channel, None)
        self._homeless.discard(channel)
        if home is not None:
            await home.subscriber.unsubscribe(channel)
