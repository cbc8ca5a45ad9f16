"""Channel → local subscribers, and the fan-out of publications to them.

The hub is the node's :class:`~cluster.broker.BrokerHandler`. It subscribes the
node to the broker on a channel's first local subscriber and unsubscribes on
its last (refcounted; broker calls of one channel are serialised by a lock, so
a subscribe racing an unsubscribe is safe).

Fan-out (DESIGN.md "The hot path"): subscribers are grouped by wire format;
each group gets the publication encoded once and the same bytes object, handed
to each subscriber's outbox (``server.outbox``); the loop neither awaits nor
allocates per subscriber. A channel whose namespace has a ``write_delay``
hands its publications to :meth:`Outbox.deliver_later` instead, which holds a
subscriber's output for up to that long so several publications share one
``send()``. A subscriber that is still
recovering (its subscribe awaits the broker) is *buffering*: publications are
kept for it and handed over, de-duplicated by offset, when it activates.

Exactly once after recovery (DESIGN.md "Clustering"): the history read that
gave the subscriber its position P and the live stream travel on different
broker connections, so publications at or below P may still arrive live after
the reply. A subscriber whose buffer held nothing above P is *catching up*: it
is kept out of the fan-out groups, and live publications of P's epoch at or
below P are dropped for it, until the first one above P (or of another epoch)
arrives and it joins its group. A gap reported while a subscriber buffers is
remembered and sent as ``lag`` right after its reply (PROTOCOL.md §3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hubbub import log
from hubbub.cluster.broker import Broker, ClientInfo, Publication
from hubbub.protocol.messages import push_join, push_lag, push_leave, push_pub
from hubbub.server.metrics import Stats
from hubbub.server.wire import Encoded

if TYPE_CHECKING:
    from hubbub.server.connection import Connection
    from hubbub.server.outbox import Outbox


#: In a buffering subscriber's list: the broker reported a gap meanwhile.
_GAP = None


class _Channel:
    __slots__ = (
        "buffering",
        "catching_up",
        "delay",
        "groups",
        "lock",
        "name",
        "refs",
        "subscribed",
    )

    def __init__(self, name: str, delay: float) -> None:
        self.name = name
        self.delay = delay  # write_delay of its namespace: seconds output may be held
        # One dict per wire format (server.wire.Format): subscriber -> its outbox,
        # insertion-ordered.
        self.groups: tuple[dict[Connection, Outbox], ...] = ({}, {}, {})
        self.buffering: dict[Connection, list[Publication | None]] = {}
        # Active subscribers not yet past their position: outbox, offset, epoch (None: any).
        self.catching_up: dict[Connection, tuple[Outbox, int, str | None]] = {}
        self.refs = 0  # local subscribers, active or buffering or on their way
        self.subscribed = False  # the broker confirmed the node's subscription
        self.lock = asyncio.Lock()


class Hub:
    """The node's channels and their local subscribers."""

    def __init__(
        self, broker: Broker, stats: Stats, write_delay: Callable[[str], float] = lambda _: 0.0
    ) -> None:
        self.broker = broker
        self.stats = stats
        self.write_delay = write_delay  # channel -> seconds (server.settings)
        self.channels: dict[str, _Channel] = {}

    # -- membership ------------------------------------------------------

    async def acquire(self, name: str) -> None:
        """Count one more local subscriber of ``name``; on the first, subscribe
        the node to the broker and return once it is confirmed."""
        ch = self.channels.get(name)
        if ch is None:
            ch = self.channels[name] = _Channel(name, self.write_delay(name))
        else:
            ch.delay = self.write_delay(name)  # follows a reload
        ch.refs += 1
        if ch.subscribed:
            return
        try:
            async with ch.lock:
                if not ch.subscribed:
                    await self.broker.subscribe(name)
                    ch.subscribed = True
        except BaseException:
            self._release_ref(ch)
            raise

    def buffer(self, conn: Connection, name: str) -> None:
        """Keep publications of ``name`` for ``conn`` until :meth:`activate`."""
        self.channels[name].buffering[conn] = []

    def activate(
        self,
        conn: Connection,
        name: str,
        after_offset: int | None = None,
        epoch: str | None = None,
    ) -> None:
        """Start delivering ``name`` to ``conn``; first hand over what was kept
        while it was buffering, skipping offsets up to ``after_offset`` (of
        ``epoch``; None: of any epoch). Until a publication above that position
        arrives, later ones at or below it are skipped too (exactly once)."""
        ch = self.channels[name]
        kept = ch.buffering.pop(conn, None) or ()
        box = conn.outbox
        passed = after_offset is None
        gap = False
        for pub in kept:
            if pub is _GAP:
                gap = True
            elif passed or _beyond(pub, after_offset, epoch):  # type: ignore[arg-type]
                passed = True
                box.deliver(Encoded(pub_message(pub)).get(box.fmt), name)
            else:
                self.stats.duplicates_skipped += 1
        if passed:
            ch.groups[box.fmt][conn] = box
        else:
            ch.catching_up[conn] = (box, after_offset, epoch)  # type: ignore[assignment]
        if gap:
            box.write(Encoded(push_lag(name, 0)).get(box.fmt))

    def release(self, conn: Connection, name: str) -> None:
        """Remove ``conn`` from ``name``; on the last subscriber the node
        unsubscribes from the broker in the background."""
        ch = self.channels.get(name)
        if ch is None:
            return
        ch.groups[conn.outbox.fmt].pop(conn, None)
        ch.buffering.pop(conn, None)
        ch.catching_up.pop(conn, None)
        self._release_ref(ch)

    def _release_ref(self, ch: _Channel) -> None:
        ch.refs -= 1
        if ch.refs == 0:
            asyncio.get_running_loop().create_task(self._unsubscribe(ch))

    async def _unsubscribe(self, ch: _Channel) -> None:
        async with ch.lock:
            if ch.refs > 0 or not ch.subscribed:
                if ch.refs == 0 and self.channels.get(ch.name) is ch:
                    del self.channels[ch.name]
                return
            # Cleared before the await: a subscriber arriving while UNSUBSCRIBE is
            # in flight must wait for the lock and subscribe again, not trust it.
            ch.subscribed = False
            try:
                await self.broker.unsubscribe(ch.name)
            except Exception:
                log.warning("broker_unsubscribe_failed", channel=ch.name)
            if ch.refs == 0 and self.channels.get(ch.name) is ch:
                del self.channels[ch.name]

    # -- BrokerHandler ---------------------------------------------------

    def on_publication(self, pub: Publication) -> None:
        ch = self.channels.get(pub.channel)
        self.stats.publications += 1
        if ch is None:
            return
        encoded: Encoded | None = None
        name = pub.channel
        delivered = 0
        delay = ch.delay
        for fmt, group in enumerate(ch.groups):
            if group:
                if encoded is None:
                    encoded = Encoded(pub_message(pub))
                data = encoded.get(fmt)
                if delay:
                    for box in group.values():
                        box.deliver_later(data, name, delay)
                else:
                    for box in group.values():
                        box.deliver(data, name)
                delivered += len(group)
        if ch.catching_up:
            delivered += self._catch_up(ch, pub)
        if ch.buffering:
            for kept in ch.buffering.values():
                kept.append(pub)
        self.stats.deliveries += delivered

    def _catch_up(self, ch: _Channel, pub: Publication) -> int:
        """Offer ``pub`` to the subscribers not yet past their position: skip
        it for those it does not pass; the others get it and join their group."""
        delivered = 0
        encoded: Encoded | None = None
        for conn, (box, offset, epoch) in list(ch.catching_up.items()):
            if not _beyond(pub, offset, epoch):
                self.stats.duplicates_skipped += 1
                continue
            del ch.catching_up[conn]
            if encoded is None:
                encoded = Encoded(pub_message(pub))
            if ch.delay:
                box.deliver_later(encoded.get(box.fmt), ch.name, ch.delay)
            else:
                box.deliver(encoded.get(box.fmt), ch.name)
            ch.groups[box.fmt][conn] = box
            delivered += 1
        return delivered

    def on_join(self, channel: str, info: ClientInfo) -> None:
        self._presence_event(channel, info, push_join(channel, info.client, info.user))

    def on_leave(self, channel: str, info: ClientInfo) -> None:
        self._presence_event(channel, info, push_leave(channel, info.client, info.user))

    def _presence_event(self, channel: str, info: ClientInfo, message: dict[str, object]) -> None:
        ch = self.channels.get(channel)
        if ch is None:
            return
        encoded = Encoded(message)
        for fmt, group in enumerate(ch.groups):
            if group:
                data = encoded.get(fmt)
                for conn, box in group.items():
                    if conn.client_id != info.client:
                        box.write(data)
        for conn, (box, _, _) in ch.catching_up.items():
            if conn.client_id != info.client:
                box.write(encoded.get(box.fmt))

    def on_gap(self, channel: str) -> None:
        """The broker may have lost publications: every subscriber gets ``lag``
        (PROTOCOL.md §3) and recovers from history; one still buffering gets it
        right after its subscribe reply."""
        ch = self.channels.get(channel)
        if ch is None:
            return
        encoded = Encoded(push_lag(channel, 0))
        for fmt, group in enumerate(ch.groups):
            if group:
                data = encoded.get(fmt)
                for box in group.values():
                    box.write(data)
        for box, _, _ in ch.catching_up.values():
            box.write(encoded.get(box.fmt))
        for kept in ch.buffering.values():
            kept.append(_GAP)

    # -- introspection ---------------------------------------------------

    def subscriber_count(self, name: str) -> int:
        ch = self.channels.get(name)
        return 0 if ch is None else sum(len(g) for g in ch.groups) + len(ch.catching_up)


def _beyond(pub: Publication, offset: int, epoch: str | None) -> bool:
    """Whether ``pub`` is past the position ``offset`` of ``epoch`` (None: any)."""
    return (
        pub.offset is None
        or pub.offset > offset
        or (epoch is not None and pub.epoch is not None and pub.epoch != epoch)
    )


def pub_message(pub: Publication) -> dict[str, Any]:
    """The ``pub`` push of one publication (PROTOCOL.md §3), for fan-out,
    recovery and history alike."""
    return push_pub(
        pub.channel, pub.data, pub.offset, pub.sender.sender() if pub.sender else None, pub.epoch
    )
