"""A subscription: an async iterator of one channel's publications.

Publications go into a per-subscription queue in the order the server sent
them. Each one with an ``offset`` moves :attr:`Subscription.position`. While a
recovery is running (re-subscribe after a reconnect, ``history`` after a
``lag``), live publications are held back and released after the recovered
ones, so the iterator sees offsets in order.

Duplicates: a live publication at or below the position reported by the last
subscribe reply or history read (the "overlap": the server may deliver live what
it also returned from history) is skipped. An offset going back *beyond* that
overlap means the channel's stream restarted (history expired: new epoch, offsets
from 1 again; ``pub`` pushes carry no epoch): it is delivered and reported as a
``"reset"``. When a ``pub`` does carry an ``epoch``, it decides exactly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hubbub.client.recovery import moves_on, recovery_refused, reported_position
from hubbub.protocol.messages import StreamPosition

if TYPE_CHECKING:
    from hubbub.client.client import Client

log = logging.getLogger("hubbub.client")


@dataclass(frozen=True, slots=True)
class Publication:
    """One publication: ``sender`` is the push's ``from`` map (client, user) if any."""

    channel: str
    data: Any
    offset: int | None = None
    sender: dict[str, str] | None = None
    #: Only if the server adds it to ``pub`` pushes (PROTOCOL.md has no such field).
    epoch: str | None = None

    @classmethod
    def from_wire(cls, message: dict[str, Any], channel: str) -> Publication:
        """Build from a ``pub`` push (or an entry of ``publications``)."""
        offset = message.get("offset")
        sender = message.get("from")
        epoch = message.get("epoch")
        return cls(
            message.get("channel", channel),
            message.get("data"),
            offset if isinstance(offset, int) else None,
            sender if isinstance(sender, dict) else None,
            epoch if isinstance(epoch, str) else None,
        )


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """Something other than a publication happened on a subscribed channel.

    ``kind`` is ``"join"`` / ``"leave"`` (``client``, ``user`` set), ``"lag"``
    (``dropped`` publications were skipped by the server; a recovery from
    history follows when the channel has one) or ``"reset"`` (a recovery
    failed or the channel's history restarted: publications may be missing,
    reload the state).
    """

    kind: str
    channel: str
    client: str | None = None
    user: str | None = None
    dropped: int = 0


_END = object()


class Subscription:
    """The client's side of one subscribed channel; ``async for pub in sub``.

    The queue is unbounded by default. With ``maxsize`` > 0 it is bounded and a
    publication arriving when it is full is dropped and counted in
    :attr:`dropped` (the client never stops reading the connection for one slow
    consumer). Join/leave/lag/reset go to ``on_event`` (called on the event
    loop, must not block). Iteration ends after :meth:`unsubscribe` or
    ``Client.close()``, and raises :class:`~hubbub.client.exceptions.Disconnected` (or the
    :class:`~hubbub.client.exceptions.ReplyError` of a failed re-subscribe) when the
    subscription is lost for good; queued publications are delivered first.
    """

    def __init__(
        self,
        client: Client,
        channel: str,
        *,
        recover: bool = False,
        since: StreamPosition | None = None,
        maxsize: int = 0,
        on_event: Callable[[ChannelEvent], None] | None = None,
    ) -> None:
        self.client = client
        self.channel = channel
        #: Ask for recovery on the first subscribe (re-subscribes always do).
        self.recover = recover
        #: Last position seen (offset, epoch); None on channels without history.
        self.position: StreamPosition | None = since
        #: ``recovered`` of the last subscribe reply, if it had one. False means
        #: publications were missed: the app reloads its state (also a "reset" event).
        self.recovered: bool | None = None
        #: Publications the server skipped for this client (sum of ``lag`` pushes).
        self.lagged = 0
        #: Publications dropped locally because the bounded queue was full.
        self.dropped = 0
        self.on_event = on_event
        self.maxsize = maxsize
        self._items: deque[Publication] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._end: object = None  # None while open, _END when finished, or an exception
        #: "subscribing" until the first ok reply, then "subscribed"; "closed" at the end.
        self.state = "subscribing"
        self._holding = False
        self._held: list[Publication] = []
        self._recovering = False
        # Highest offset of the last subscribe reply / history read, until a
        # live publication passes it: offsets up to it are duplicates.
        self._overlap_top: int | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.channel!r} {self.state} position={self.position}>"

    # -- the app's side ---------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Publication:
        while not self._items:
            if self._end is not None:
                if isinstance(self._end, BaseException):
                    raise self._end
                raise StopAsyncIteration
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._items.popleft()

    def get_nowait(self) -> Publication | None:
        """The next queued publication, or None when the queue is empty."""
        return self._items.popleft() if self._items else None

    @property
    def pending(self) -> int:
        """Publications queued and not yet consumed."""
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self.state == "closed"

    async def unsubscribe(self) -> None:
        """Leave the channel; iteration ends once the queue is consumed."""
        await self.client.unsubscribe(self.channel)

    # -- the client's side ------------------------------------------------------

    def _deliver(self, pub: Publication) -> None:
        """A live ``pub`` push (held while a recovery is running)."""
        if self._holding:
            self._held.append(pub)
        else:
            self._feed(pub)

    def _feed(self, pub: Publication) -> None:
        """Queue ``pub`` unless its offset was already seen."""
        position = self.position
        if pub.offset is not None and position is not None:
            if position.offset == 0 and pub.offset == 1:
                # The first publication of a history that did not exist yet
                # (its epoch replaces the empty position's, protocol-additions).
                self.position = StreamPosition(1, pub.epoch or position.epoch)
            elif pub.epoch is not None and pub.epoch != position.epoch:
                self._restarted(pub.offset, pub.epoch)
            elif pub.offset > position.offset:
                self.position = StreamPosition(pub.offset, position.epoch)
                if self._overlap_top is not None and pub.offset > self._overlap_top:
                    self._overlap_top = None
            elif pub.epoch is not None or (
                self._overlap_top is not None and pub.offset <= self._overlap_top
            ):
                return  # a duplicate
            else:
                self._restarted(pub.offset, position.epoch)
        if self.maxsize and len(self._items) >= self.maxsize:
            self.dropped += 1
            return
        self._items.append(pub)
        self._wake()

    def _set_position(self, reported: StreamPosition | None) -> None:
        """The position a subscribe reply or history read reported."""
        if reported is not None:
            if moves_on(self.position, reported):
                self.position = reported
            self._overlap_top = reported.offset

    def _restarted(self, offset: int, epoch: str) -> None:
        # The old epoch is kept when unknown: the next re-subscribe then gets
        # ``recovered: false`` and the current position.
        self.position = StreamPosition(offset, epoch)
        self._overlap_top = None
        self.recovered = False
        self._event(ChannelEvent("reset", self.channel))

    def _hold(self) -> None:
        """Start holding live publications back (a recovery begins)."""
        self._holding = True
        self._held = []

    def _release(self) -> None:
        """Stop holding: feed the held publications after the recovered ones."""
        held, self._held = self._held, []
        self._holding = False
        for pub in held:
            self._feed(pub)

    def _drop_held(self) -> None:
        """The connection died during a recovery; the next one recovers them."""
        self._held = []
        self._holding = False
        self._recovering = False

    def _apply_subscribe(self, ok: dict[str, Any], *, asked_recovery: bool) -> None:
        """Apply a subscribe reply: recovered publications, position, reset."""
        reported = reported_position(ok)
        recovered = ok.get("recovered")
        self.recovered = recovered if isinstance(recovered, bool) else None
        if recovery_refused(ok, asked=asked_recovery):
            # PROTOCOL.md §3: `since` is gone; the reply holds the current position.
            self._held = []
            self.position = None
            self._set_position(reported)
            self._event(ChannelEvent("reset", self.channel))
        else:
            if not asked_recovery:
                self.position = None  # a fresh subscribe starts at the reply's position
            for entry in ok.get("publications") or ():
                if isinstance(entry, dict):
                    self._feed(Publication.from_wire(entry, self.channel))
            self._set_position(reported)
        self.state = "subscribed"
        self._release()

    def _event(self, event: ChannelEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            log.exception("on_event callback of %s failed", self.channel)

    def _finish(self, exc: BaseException | None = None) -> None:
        """End iteration (cleanly, or with ``exc`` once the queue is consumed)."""
        if self._end is not None:
            return
        self.state = "closed"
        self._held = []
        self._holding = False
        self._end = exc if exc is not None else _END
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
