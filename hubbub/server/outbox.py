"""Output to clients: queue, flush, backpressure, the slow-consumer policy and ``lag``.

Each connection has an :class:`Outbox`. What is written to it is queued and
flushed once per event-loop iteration (:class:`Outboxes` schedules the flush
of every outbox that has output), so several messages share one ``send()``
(BENCHMARKS.md). What counts against ``outbound_buffer`` is what the kernel
has not taken (DESIGN.md "Backpressure"): a queue that reaches its budget
mid-iteration is judged by what its transport still holds after the last
flush, and only then does the slow-consumer policy apply — ``disconnect``
(3002) or ``drop`` and, once the client has caught up, a ``lag`` push
(PROTOCOL.md §3).

The hub's fan-out calls :meth:`Outbox.deliver` per subscriber: no await, no
allocation, the same ``bytes`` for every subscriber of a wire format.

``write_delay`` (docs/limits.md): publications of a namespace that has one go
through :meth:`Outbox.deliver_later`, which *holds* the outbox — it is flushed
by a timer up to that many seconds later rather than at the end of the
iteration — so that at high rates several publications share one ``send()``
(Centrifugo's ``write_delay``). Anything else written to a held outbox (a
reply, a push, a publication without a delay) releases it at the end of the
iteration as usual, and a held outbox about to exceed its budget is flushed
first: holding never makes a client look slow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hubbub.protocol.messages import push_lag
from hubbub.server.limits import Limits
from hubbub.server.metrics import Stats
from hubbub.server.session import Session
from hubbub.server.settings import Settings
from hubbub.server.wire import Format, encode_for


class Outboxes:
    """The node's side of output: one flush per outbox per loop iteration, and the
    outboxes that owe their client a ``lag`` push (policy ``drop``)."""

    __slots__ = (
        "_dirty",
        "_held",
        "_held_at",
        "_held_timer",
        "_loop",
        "_scheduled",
        "lagging",
        "limits",
        "settings",
        "stats",
    )

    def __init__(
        self, settings: Settings, limits: Limits, stats: Stats, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.stats = stats
        self.lagging: set[Outbox] = set()
        self._dirty: list[Outbox] = []
        self._scheduled = False
        self._loop = loop
        self._held: list[Outbox] = []  # outboxes waiting for the hold timer
        self._held_timer: asyncio.TimerHandle | None = None
        self._held_at = 0.0  # when the hold timer fires (loop time)

    def mark_dirty(self, box: Outbox) -> None:
        """``box`` has output: flush it at the end of this loop iteration."""
        self._dirty.append(box)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def hold(self, box: Outbox, delay: float) -> None:
        """``box`` has held output: flush it within ``delay`` seconds."""
        box.held = True
        self._held.append(box)
        at = self._loop.time() + delay
        timer = self._held_timer
        if timer is None or at < self._held_at:
            if timer is not None:
                timer.cancel()
            self._held_at = at
            self._held_timer = self._loop.call_at(at, self.flush_held)

    def flush_held(self) -> None:
        """The hold timer: flush every outbox still held."""
        self._held_timer = None
        held, self._held = self._held, []
        for box in held:
            if box.held:
                box.flush()

    def flush(self) -> None:
        """Flush every outbox that has output (scheduled by :meth:`mark_dirty`)."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for box in dirty:
            box.flush()

    def send_due_lag(self) -> None:
        """``lag`` to the clients that caught up since their last flush (the
        sweeper's share: a client that stopped receiving gets it here)."""
        if not self.lagging:
            return
        half = self.settings.limits.outbound_buffer // 2
        for box in list(self.lagging):
            if not box.dropped or not box.session.state.writable:
                self.lagging.discard(box)
            elif box.transport.get_write_buffer_size() <= half:
                self.lagging.discard(box)
                box.send_lag()


class Outbox:
    """One connection's output: the queue, its budget and what the policy dropped.

    ``on_slow`` is the connection's reaction to the ``disconnect`` policy (3002);
    ``session`` says whether the connection still takes output.
    """

    __slots__ = (
        "__weakref__",
        "dropped",
        "fmt",
        "held",
        "kind",
        "on_slow",
        "out",
        "room",
        "session",
        "shared",
        "size",
        "transport",
    )

    def __init__(
        self,
        shared: Outboxes,
        transport: asyncio.Transport,
        session: Session,
        kind: str,
        fmt: Format,
        on_slow: Callable[[], None],
    ) -> None:
        self.shared = shared
        self.transport = transport
        self.session = session
        self.kind = kind  # "tcp" or "ws", the metrics label
        self.fmt = fmt  # the wire format (a WebSocket's is set by its handshake)
        self.on_slow = on_slow
        self.out: list[bytes] = []
        self.size = 0  # bytes queued since the last flush
        self.room = shared.settings.limits.outbound_buffer  # budget left after the last flush
        self.dropped: dict[str, int] = {}  # channel -> publications skipped (policy drop)
        self.held = False  # output waits for the hold timer (write_delay), not this iteration

    def write(self, data: bytes) -> None:
        """Queue bytes for the transport; flushed once per loop iteration."""
        if not self.session.state.writable:
            return
        out = self.out
        if not out or self.held:
            self.held = False  # released: goes out at the end of this iteration
            self.shared.mark_dirty(self)
        out.append(data)
        self.size += len(data)

    def deliver(self, data: bytes, channel: str) -> None:
        """Queue one publication; applies the slow-consumer policy (never waits).

        A queue that would pass its budget is first flushed early, so the kernel
        takes what it can; only what the transport still holds then decides
        (a client that reads is never cut because several publications reached
        it in one loop iteration). Memory stays within ``outbound_buffer`` plus
        one publication."""
        if not self.session.state.writable:
            return
        size = self.size + len(data)
        if size > self.room:
            if self.out:
                self.flush()
            size = self.size + len(data)
            if size > self.room:
                self._overflow(channel)
                return
        out = self.out
        if not out or self.held:
            self.held = False
            self.shared.mark_dirty(self)
        out.append(data)
        self.size = size

    def deliver_later(self, data: bytes, channel: str, delay: float) -> None:
        """:meth:`deliver` for a namespace with a ``write_delay``: the outbox is
        held for up to ``delay`` seconds unless something else releases it."""
        if not self.session.state.writable:
            return
        size = self.size + len(data)
        if size > self.room and self.held:
            self.flush()  # what we held must not count as the client's slowness
            size = len(data)
        if size > self.room:
            self._overflow(channel)
            return
        out = self.out
        if not out:
            self.shared.hold(self, delay)
        out.append(data)
        self.size = size

    def send(self, message: dict[str, Any]) -> None:
        """Encode one reply or push for this connection's format and queue it."""
        self.write(encode_for(self.fmt, message))

    def flush(self) -> None:
        """Hand queued bytes to the transport in one write."""
        self.held = False
        out = self.out
        if not out or not self.session.state.writable:
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self.transport
        try:
            transport.write(data)
        except RuntimeError:
            # uvloop refuses writes once the peer is gone (asyncio ignores
            # them); the read loop will notice and close the connection.
            # Raising here would stop the flush of every other connection.
            self.size = 0
            return
        shared = self.shared
        shared.stats.bytes_out[self.kind] += len(data)
        backlog = transport.get_write_buffer_size()
        limit = shared.settings.limits.outbound_buffer
        self.size = 0
        self.room = limit - backlog
        if self.dropped and backlog <= limit // 2:
            self.send_lag()

    async def pace(self, writer: asyncio.StreamWriter) -> None:
        """Called by a transport before it reads on: when the client is not
        reading its replies (unread output over ``outbound_buffer``), flush and
        wait until the transport has written most of it (DESIGN.md
        "Backpressure"). The client's kernel window closes and it slows down;
        one that never reads is cut by the keepalive (3003), as none of its
        commands is processed meanwhile."""
        if not self.session.state.writable:
            return
        pending = self.size + self.transport.get_write_buffer_size()
        if pending > self.shared.settings.limits.outbound_buffer:
            self.flush()
            await writer.drain()

    def send_lag(self) -> None:
        """Tell the client what the drop policy skipped, once it has caught up."""
        dropped, self.dropped = self.dropped, {}
        for channel, count in dropped.items():
            self.send(push_lag(channel, count))

    def close(self) -> None:
        """The connection is gone: forget what is queued and any ``lag`` owed."""
        self.out.clear()
        self.shared.lagging.discard(self)

    def _overflow(self, channel: str) -> None:
        shared = self.shared
        shared.limits.hit("outbound_buffer")  # metric now, aggregated log line later
        if shared.settings.slow_consumer_policy(channel) == "drop":
            self.dropped[channel] = self.dropped.get(channel, 0) + 1
            shared.stats.dropped += 1
            shared.lagging.add(self)
            return
        self.on_slow()
