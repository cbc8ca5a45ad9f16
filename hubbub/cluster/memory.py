"""The in-memory broker: a single node with no dependencies (DESIGN.md "Clustering").

Delivery is a direct call into the node's handler, in publish order. History is
a bounded deque per channel, created by its first publication, that expires as a
whole ``history_ttl`` seconds after the channel's last publication, as the Redis
engine's streams do; reads of a channel without one store nothing and answer the
empty position (cluster.broker). Expired streams are replaced lazily on
access and freed by a periodic sweep that pops a heap of deadlines, so its cost
follows the streams that are due, not the number of channels.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hubbub.cluster.broker import (
    Broker,
    BrokerHandler,
    ChannelOptions,
    ClientInfo,
    HistoryResult,
    Publication,
    empty_epoch,
    empty_since_ok,
    is_empty_epoch,
)
from hubbub.protocol.exceptions import PositionGone
from hubbub.protocol.messages import StreamPosition

log = logging.getLogger(__name__)


def _new_epoch() -> str:
    """A short random epoch: a client holding an old one cannot mistake a new stream."""
    return secrets.token_urlsafe(6)


@dataclass(eq=False, slots=True)
class _Stream:
    """One channel's history: epoch, top offset, deadline and the retained tail.

    Offsets are consecutive, so the deque holds offsets ``oldest..top``.
    """

    channel: str
    epoch: str
    expires_at: float
    publications: deque[Publication]
    top: int = 0

    @property
    def position(self) -> StreamPosition:
        return StreamPosition(self.top, self.epoch)

    @property
    def oldest(self) -> int:
        """Offset of the oldest retained publication (``top + 1`` when none is)."""
        return self.top - len(self.publications) + 1


class MemoryBroker(Broker):
    """Single-node engine: delivery, history and presence in this process's memory.

    ``clock`` (monotonic seconds) is injectable so history TTLs are tested
    without sleeping.
    """

    name = "memory"

    #: Seconds between sweeps of expired streams (the sweep is cheap when none is due).
    sweep_interval: float = 1.0

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._handler: BrokerHandler | None = None
        self._subscribed: set[str] = set()
        self._streams: dict[str, _Stream] = {}
        # (deadline, tiebreak, stream): at most one live entry per stream, with a
        # deadline no later than its expires_at (publishing only pushes it back).
        self._deadlines: list[tuple[float, int, _Stream]] = []
        self._tiebreak = itertools.count()
        self._presence: dict[str, dict[str, ClientInfo]] = {}
        # Channels without history all answer this position: stable, and free.
        self._no_history = StreamPosition(0, _new_epoch())
        # Names this process's empty positions: another process (a restart) has
        # lost whatever was published after them.
        self._instance = _new_epoch()
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="memory-broker-sweep")

    async def close(self) -> None:
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    @property
    def healthy(self) -> bool:
        return True

    # -- delivery ------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        options: ChannelOptions,
        sender: ClientInfo | None = None,
    ) -> StreamPosition | None:
        position: StreamPosition | None = None
        if options.has_history:
            now = self._clock()
            stream = self._stream(channel, options, now)
            stream.top += 1
            stream.expires_at = now + options.history_ttl
            pub = Publication(channel, data, stream.top, stream.epoch, sender)
            stream.publications.append(pub)
            position = stream.position
        else:
            pub = Publication(channel, data, sender=sender)
        if self._handler is not None and channel in self._subscribed:
            try:
                self._handler.on_publication(pub)
            except Exception:
                # The publication is stored; a fault in the node must not turn the
                # publish into an error (the Redis engine delivers detached too).
                log.exception("handler failed on a publication of %s", channel)
        return position

    async def publish_join(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None and channel in self._subscribed:
            self._handler.on_join(channel, info)

    async def publish_leave(self, channel: str, info: ClientInfo) -> None:
        if self._handler is not None and channel in self._subscribed:
            self._handler.on_leave(channel, info)

    # -- history -------------------------------------------------------------

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
        now = self._clock()
        stream = self._live(channel, options, now)
        if since is not None and is_empty_epoch(since.epoch):
            if not empty_since_ok(since, self._instance, int(now * 1000), options.history_ttl):
                raise PositionGone()
            if stream is not None:
                if stream.oldest != 1:
                    raise PositionGone()  # the first publications were trimmed
                since = StreamPosition(0, stream.epoch)
        if stream is None:
            if since is not None and not is_empty_epoch(since.epoch):
                raise PositionGone()
            empty = StreamPosition(0, empty_epoch(self._instance, int(now * 1000)))
            return HistoryResult([], empty)
        pubs = stream.publications
        if since is None:
            count = len(pubs) if limit is None else max(0, min(limit, len(pubs)))
            selected = list(itertools.islice(pubs, len(pubs) - count, None))
        else:
            # Gone: another epoch, a future offset, or publications after it trimmed.
            if since.epoch != stream.epoch or not stream.oldest - 1 <= since.offset <= stream.top:
                raise PositionGone()
            start = since.offset - stream.oldest + 1
            stop = None if limit is None else start + max(0, limit)
            selected = list(itertools.islice(pubs, start, stop))
        return HistoryResult(selected, stream.position)

    def _live(self, channel: str, options: ChannelOptions, now: float) -> _Stream | None:
        """The channel's stream unless it is absent or expired; creates nothing."""
        stream = self._streams.get(channel)
        if stream is None or stream.expires_at <= now:
            return None
        if stream.publications.maxlen != options.history_size:
            # The namespace's history_size changed: keep the newest that fit.
            stream.publications = deque(stream.publications, maxlen=options.history_size)
        return stream

    def _stream(self, channel: str, options: ChannelOptions, now: float) -> _Stream:
        """The channel's live stream for a publication; a fresh one (new epoch,
        offset 0) when absent or expired."""
        stream = self._live(channel, options, now)
        if stream is None:
            stream = _Stream(
                channel, _new_epoch(), now + options.history_ttl, deque(maxlen=options.history_size)
            )
            self._streams[channel] = stream
            self._schedule(stream)
        return stream

    def _schedule(self, stream: _Stream) -> None:
        heapq.heappush(self._deadlines, (stream.expires_at, next(self._tiebreak), stream))

    def sweep(self) -> int:
        """Free every stream expired by now and return how many; O(due * log n)."""
        now = self._clock()
        freed = 0
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, stream = heapq.heappop(self._deadlines)
            if self._streams.get(stream.channel) is not stream:
                continue  # already replaced on access after it expired
            if stream.expires_at <= now:
                del self._streams[stream.channel]
                freed += 1
            else:
                self._schedule(stream)  # published to since: look again at its new deadline
        return freed

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.sweep()

    # -- presence ------------------------------------------------------------

    async def add_presence(self, channel: str, info: ClientInfo) -> None:
        self._presence.setdefault(channel, {})[info.client] = info

    async def remove_presence(self, channel: str, client: str) -> None:
        clients = self._presence.get(channel)
        if clients is not None:
            clients.pop(client, None)
            if not clients:
                del self._presence[channel]

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        return dict(self._presence.get(channel, {}))
