"""One client connection above its transport: its session state and lifecycle.

Both transports (``server.tcp``, ``server.ws``) build a :class:`Connection`
and feed its decoded messages to ``Commands.handle`` (``server.commands``);
its output goes through its :class:`~server.outbox.Outbox`. What is left here
is the connection's own life: who the client is, the session state (the one
place it changes is ``server.session``), the timers, and the way out —
:meth:`Connection.disconnect` (the transport's own goodbye, then a half-close
and a linger) and :meth:`Connection.closed`.

What a connection uses from the node is passed in as :class:`Services`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hubbub import log
from hubbub.cluster.broker import ClientInfo
from hubbub.protocol.codes import DisconnectCode
from hubbub.protocol.messages import push_ping
from hubbub.server.auth import ANONYMOUS, Identity
from hubbub.server.keepalive import Due, Timers
from hubbub.server.outbox import Outbox, Outboxes
from hubbub.server.ratelimit import CommandLimiter, TokenBucket
from hubbub.server.session import Session, State
from hubbub.server.wire import Format

if TYPE_CHECKING:
    from hubbub.server.admission import Admission
    from hubbub.server.commands import Commands
    from hubbub.server.limits import Limits
    from hubbub.server.metrics import Metrics, Stats
    from hubbub.server.settings import Settings

#: Seconds a connection whose read loop ended is kept reading (and dropping)
#: what its client still sends before it is aborted.
LINGER_ABORT = 5.0
#: A transport's last words before the close (``tcp.goodbye``, ``ws.goodbye``):
#: queue the ``disconnect`` push (and a WebSocket close frame) on the outbox.
Goodbye = Callable[[Outbox, DisconnectCode, "str | None", "int | None"], None]


@dataclass(frozen=True, slots=True)
class Services:
    """The node's parts a connection and its transport work with (built once by
    the node; a test builds its own around a fake transport)."""

    settings: Settings
    outboxes: Outboxes
    limits: Limits
    metrics: Metrics
    stats: Stats
    admission: Admission
    commands: Commands
    clock: Callable[[], float]
    #: Build and register a connection on a new transport (not yet admitted).
    accept: Callable[[asyncio.Transport, str, Format, Goodbye], Connection]
    #: The connection is gone: the node forgets it.
    forget: Callable[[Connection], None]


class Connection:
    """A connected client, whatever its transport."""

    __slots__ = (
        "__weakref__",
        "client_id",
        "control",
        "control_debt",
        "goodbye",
        "identity",
        "inflight",
        "info",
        "kind",
        "limiter",
        "outbox",
        "peer",
        "services",
        "session",
        "subs",
        "timers",
        "transport",
    )

    def __init__(
        self,
        services: Services,
        transport: asyncio.Transport,
        kind: str,
        fmt: Format,
        goodbye: Goodbye,
    ) -> None:
        self.services = services
        self.transport = transport
        self.kind = kind  # "tcp" or "ws", the metrics label
        peer = transport.get_extra_info("peername")
        #: The client's address: the peer's, or what a trusted proxy said
        #: (``server.proxies``), set by the transport before admission counts it.
        self.peer: str = peer[0] if peer else ""
        self.goodbye = goodbye
        self.session = Session()
        self.outbox = Outbox(services.outboxes, transport, self.session, kind, fmt, self._slow)
        now = services.clock()
        limits = services.settings.limits
        self.timers = Timers(now, limits.handshake_timeout)
        self.limiter = CommandLimiter(limits.messages_per_second, limits.message_burst, now)
        # Control messages (pong commands, WebSocket pings and pongs) never count
        # against the command bucket (PROTOCOL.md §2) but have a bucket of their
        # own, of the same size: past it the connection is not read for a while.
        self.control = TokenBucket(limits.messages_per_second, limits.message_burst, now)
        self.control_debt = 0.0
        self.client_id = ""
        self.identity: Identity = ANONYMOUS
        self.info: ClientInfo | None = None
        self.subs: dict[str, None] = {}
        #: Publishes still waiting on the broker, oldest first (server.commands).
        self.inflight: list[asyncio.Task[dict[str, Any] | None]] = []

    @property
    def writable(self) -> bool:
        """Whether the connection still takes output: read from the session state."""
        return self.session.state.writable

    def _slow(self) -> None:
        """The outbox overflowed under the ``disconnect`` policy."""
        log.debug("slow_consumer", client=self.client_id, peer=self.peer)
        self.disconnect(DisconnectCode.SLOW_CONSUMER, abort_after=1.0)

    # -- control budget ----------------------------------------------------

    def charge_control(self, count: int = 1) -> None:
        """``count`` control messages arrived; past the control budget the
        transport pauses reading (:meth:`throttle`) until it is paid back."""
        debt = self.control.charge(count, self.services.clock())
        if debt:
            if not self.control_debt:
                self.services.limits.hit("control")
            self.control_debt = debt

    async def throttle(self) -> None:
        """Called by a transport before it reads on: wait out a control debt (the
        client's kernel window closes, it slows down; keepalive still runs)."""
        debt, self.control_debt = self.control_debt, 0.0
        if debt:
            await asyncio.sleep(debt)

    # -- timers ------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Run the connection's timers (called by the node's sweeper)."""
        if not self.session.state.writable:
            return  # disconnected, flushing: no timers left
        limits = self.services.settings.limits
        expires = self.identity.expires
        if expires is not None and expires <= time.time():
            self.services.limits.hit("token_expired")
            self.disconnect(DisconnectCode.UNAUTHORIZED, "token expired")
            return
        due = self.timers.poll(now, limits.ping_interval, limits.ping_timeout)
        if due is Due.NOTHING:
            return
        if due is Due.HANDSHAKE:
            self.services.limits.hit("handshake_timeout")
            self.disconnect(DisconnectCode.PROTOCOL_ERROR, "no connect in time")
        elif due is Due.STALE:
            self.services.limits.hit("ping_timeout")
            self.disconnect(DisconnectCode.STALE, abort_after=0.5)
        else:
            self.outbox.send(push_ping())

    # -- closing -----------------------------------------------------------

    def disconnect(
        self,
        code: DisconnectCode,
        reason: str | None = None,
        after: int | None = None,
        *,
        abort_after: float = 5.0,
    ) -> None:
        """Send the transport's goodbye (the ``disconnect`` push, and on
        WebSocket a close frame), then close.

        On plain TCP (WebSocket included) the node half-closes: the FIN goes
        out after the queued bytes and the transport's read loop drops what the
        client still sends until it closes (:meth:`linger`). Closing with
        unread input would reset the connection, and a reset can destroy the
        disconnect push in the client's buffers (asyncio's StreamReader raises
        before returning buffered data), losing its ``after``. A client that
        does not read or does not close is aborted after ``abort_after``
        seconds (< 0: never; the drain's deadline does it). Over TLS, which
        cannot half-close, the transport closes once its buffer is flushed.
        The client leaves its channels in the next loop iteration.
        """
        state = self.session.state
        if state is State.CLOSING or state is State.CLOSED:
            return
        self.services.metrics.disconnects.labels(str(int(code))).inc()
        self.goodbye(self.outbox, code, reason, after)
        self.outbox.flush()
        self.session.to(State.CLOSING)
        # Not now: this may run inside the hub's fan-out over a channel's
        # subscribers (a slow consumer), which must not change under it.
        loop = asyncio.get_running_loop()
        loop.call_soon(self._release)
        transport = self.transport
        if not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
            if abort_after >= 0:
                loop.call_later(abort_after, transport.abort)
            return
        transport.close()
        if abort_after >= 0 and transport.get_write_buffer_size():
            loop.call_later(abort_after, transport.abort)

    async def finish(self, reader: asyncio.StreamReader) -> None:
        """The transport's read loop ended: half-close after what is queued
        (unless :meth:`disconnect` already did), drop the client's input until
        it closes (:meth:`linger`, aborted after a few seconds), then leave
        every channel."""
        try:
            if self.session.state.writable:
                # The loop ended on its own (EOF, a protocol's close, a refused
                # handshake): half-close after the queued bytes and linger too,
                # so unread input does not turn the close into a reset.
                self.outbox.flush()
                transport = self.transport
                if not transport.is_closing() and transport.can_write_eof():
                    transport.write_eof()
                    asyncio.get_running_loop().call_later(LINGER_ABORT, transport.abort)
                else:
                    transport.close()  # TLS cannot half-close
            await self.linger(reader)
        finally:
            self.closed()

    async def linger(self, reader: asyncio.StreamReader) -> None:
        """After :meth:`disconnect`: drop the client's input until it closes (or
        is aborted), then close, so the close is not a reset."""
        transport = self.transport
        if not transport.is_closing():
            try:
                while await reader.read(65536):
                    pass
            except (ConnectionError, OSError):
                pass
        transport.close()

    def closed(self) -> None:
        """The transport is gone: leave every channel and presence."""
        if self.session.state is State.CLOSED:
            return
        self.session.to(State.CLOSED)
        self._release()
        self.services.forget(self)

    def _release(self) -> None:
        self.outbox.close()
        self.services.commands.leave_all(self)
