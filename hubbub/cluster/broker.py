"""The ``Broker`` interface: how a node reaches every other node (DESIGN.md "Clustering").

A broker carries publications between nodes, keeps per-channel history (offset +
epoch) for recovery, and holds presence. Engines (``memory``, ``redis``) sit
behind this one interface and call back into the node through one
:class:`BrokerHandler`, after centrifuge's ``Broker``/``Node`` split.

Semantics every engine must honour (``tests/cluster/contract.py`` checks them):

- Offsets of a channel with history start at 1 and are consecutive; an empty
  history has position ``offset 0``. The epoch is a random string made with the
  history; when the history is lost or expires the epoch changes.
- History is created by the first publication only: reading a channel that
  has none (``history``, ``recover``, a subscribe's position) stores nothing,
  so no client can make a node or Redis hold state by reading. Such a read
  answers the *empty position* ``(0, "~<instance>.<ms>")`` (:func:`empty_epoch`):
  "nothing, as of this instant". Recovering from it succeeds with every
  publication when the history that exists now is the first one made since
  that instant and has kept its first publication: that holds when less than
  ``history_ttl`` has passed (a history made after it cannot have expired yet)
  and nothing was trimmed; otherwise the position is gone.
- ``subscribe`` returns only once the node will receive every publication made
  after it returns; publications of one channel arrive in one order.
- ``publish`` delivers to the handler of every subscribed node, the publishing
  node included, exactly once.
- History expires ``history_ttl`` seconds after the channel's last publication
  (the whole stream, as with a Redis stream's EXPIRE) and keeps at most
  ``history_size`` publications.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# The interface raises it; importable from here as well as from its tree.
from hubbub.cluster.exceptions import BrokerUnavailable as BrokerUnavailable
from hubbub.protocol.exceptions import PositionGone
from hubbub.protocol.messages import StreamPosition

#: The first character of an empty position's epoch; never in a real epoch.
EMPTY_EPOCH_MARK = "~"


def empty_epoch(instance: str, now_ms: int) -> str:
    """The epoch of the empty position read at ``now_ms`` (the engine's clock)."""
    return f"{EMPTY_EPOCH_MARK}{instance}.{now_ms}"


def is_empty_epoch(epoch: str) -> bool:
    return epoch.startswith(EMPTY_EPOCH_MARK)


def empty_since_ok(since: StreamPosition, instance: str, now_ms: int, ttl: float) -> bool:
    """Whether ``since``, an empty position, can still be recovered from at
    ``now_ms``: one of this engine's, at offset 0, read less than ``ttl``
    seconds ago (the contract above says why that bound is exact)."""
    head, _, stamp = since.epoch[len(EMPTY_EPOCH_MARK) :].rpartition(".")
    if since.offset != 0 or head != instance or not stamp.isdigit() or len(stamp) > 16:
        return False
    return 0 <= now_ms - int(stamp) < ttl * 1000


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who a client is: shown in presence, ``from`` and join/leave."""

    client: str
    user: str
    info: Any = None

    def sender(self) -> dict[str, str]:
        """The ``from`` field of a ``pub`` push."""
        return {"client": self.client, "user": self.user}


@dataclass(frozen=True, slots=True)
class Publication:
    """One publication as nodes receive it from the broker."""

    channel: str
    data: Any
    offset: int | None = None
    epoch: str | None = None
    sender: ClientInfo | None = None


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """What a channel's namespace asks of the broker."""

    history_size: int = 0
    history_ttl: float = 300.0
    presence: bool = False
    join_leave: bool = False

    @property
    def has_history(self) -> bool:
        return self.history_size > 0


@dataclass(frozen=True, slots=True)
class HistoryResult:
    """Publications read from history and the channel's current position."""

    publications: list[Publication]
    position: StreamPosition


@dataclass(frozen=True, slots=True)
class Recovery:
    """The outcome of recovering a subscriber from ``since``."""

    publications: list[Publication]
    position: StreamPosition
    recovered: bool


@dataclass(frozen=True, slots=True)
class BackendState:
    """One backend of an engine (a Redis shard), as metrics show it."""

    name: str
    up: bool
    subscriber_connected: bool
    reconnects: int
    reader_restarts: int
    #: Delivery probes that went missing (each dropped the pub/sub connection).
    probe_misses: int = 0


class BrokerHandler(Protocol):
    """What an engine calls on the node. Called on the event loop, never awaited."""

    def on_publication(self, pub: Publication) -> None:
        """A publication on a channel this node subscribed to."""

    def on_join(self, channel: str, info: ClientInfo) -> None:
        """A client joined ``channel`` (namespaces with ``join_leave``)."""

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        """A client left ``channel`` (namespaces with ``join_leave``)."""

    def on_gap(self, channel: str) -> None:
        """The node may have missed publications of ``channel`` (e.g. the
        engine's subscription connection broke); subscribers must be told."""


class Broker(ABC):
    """A broker engine. One instance per node; the node calls ``start`` first."""

    #: Short engine name for logs and metrics ("memory", "redis").
    name: str = "broker"
    #: Whether :meth:`publish` waits on a round trip to a backend. The node then
    #: keeps several of one connection's publishes in flight at once, in order
    #: (server.commands), so a backend sees them back to back and the node fans
    #: them out together; an engine that publishes synchronously gains nothing.
    pipelined: bool = False

    @abstractmethod
    async def start(self, handler: BrokerHandler) -> None:
        """Connect and begin delivering to ``handler``."""

    @abstractmethod
    async def close(self) -> None:
        """Release every connection and task. Idempotent."""

    @property
    @abstractmethod
    def healthy(self) -> bool:
        """Whether every backend is reachable now (``/readyz``)."""

    async def settle(self, timeout: float) -> None:
        """Return once every publication the backends accepted before the call
        has been handed to the handler (draining waits for it). Engines that
        deliver synchronously have nothing to wait for."""
        return None

    async def describe_node(self, describe: Callable[[], dict[str, Any]]) -> None:
        """Give the engine what the node reports about itself in a cluster
        registry (addresses, connections, subscriptions); called once the
        listeners are bound, and returns once the registry has it (so a node
        that says it is listening is listed with its addresses). Engines
        without a registry ignore it."""
        return None

    def backends(self) -> list[BackendState]:
        """The state of each backend for metrics; none for a single-process engine."""
        return []

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Start delivering ``channel``'s publications to this node.

        Returns once the subscription is confirmed. The node calls it once per
        channel, on the channel's first local subscriber.
        """

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel`` to this node (its last local subscriber left)."""

    @abstractmethod
    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        options: ChannelOptions,
        sender: ClientInfo | None = None,
    ) -> StreamPosition | None:
        """Publish to every subscribed node; append to history when it has one.

        Returns the publication's position in history (None without history).
        Raises :class:`BrokerUnavailable` when it cannot be done now.
        """

    @abstractmethod
    async def history(
        self,
        channel: str,
        *,
        options: ChannelOptions,
        since: StreamPosition | None = None,
        limit: int | None = None,
    ) -> HistoryResult:
        """Read history, oldest first.

        With ``since``: the first ``limit`` publications after it (all when
        ``limit`` is None); raises :class:`PositionGone` when ``since`` is no
        longer in history or its epoch is not the current one. Without: the
        last ``limit`` publications.
        """

    async def recover(
        self, channel: str, since: StreamPosition, *, options: ChannelOptions
    ) -> Recovery:
        """Publications missed since ``since``, or ``recovered=False`` and the
        current position when they are gone."""
        try:
            result = await self.history(channel, options=options, since=since)
        except PositionGone:
            result = await self.history(channel, options=options, limit=0)
            return Recovery([], result.position, recovered=False)
        return Recovery(result.publications, result.position, recovered=True)

    @abstractmethod
    async def add_presence(self, channel: str, info: ClientInfo) -> None:
        """Record ``info.client`` as present in ``channel``."""

    @abstractmethod
    async def remove_presence(self, channel: str, client: str) -> None:
        """Forget ``client`` in ``channel``'s presence."""

    @abstractmethod
    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        """Every client present in ``channel``, by client id."""

    @abstractmethod
    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        """Tell every subscribed node that ``info`` joined ``channel``."""

    @abstractmethod
    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        """Tell every subscribed node that ``info`` left ``channel``."""

    async def nodes(self) -> list[dict[str, Any]]:
        """The live nodes sharing this broker, each as it last reported itself
        (``node`` id, ``started``, ``updated``, ...). An engine without a
        registry (the in-memory one: a single node) knows none."""
        return []
