"""The lean fast path: one asyncio ``Protocol`` per socket, no task or future per message.

One load-test worker must take in 100,000+ publications a second and one
benchmark core a thousand subscribers' 200,000, so this path skips what
:class:`~hubbub.client.Client` does per message (a reader task, futures, a
queue per subscription): bytes go through the client's Sans-I/O framing
(:mod:`hubbub.client.wire`, TCP or WebSocket with ``hubbub.v1.msgpack``),
each ``pub`` is decoded and handed straight to ``on_pub`` (or, undecoded, to
``raw`` first), and replies resolve callbacks by id.

A :class:`LeanSession` outlives its sockets: when one is lost it reconnects
(the server's ``after``, else :func:`~hubbub.protocol.backoff.backoff_delay`),
going round the hosts, and re-subscribes every channel with recovery from the
last position (:mod:`hubbub.client.recovery`; a refusal that passes, such as
503 while the node's broker is back but not ready, is tried again). A ``lag``
push, or a recovery answered ``recovered: false`` (gone, or too much for one
reply), makes it read the gap with ``history`` page by page, live publications
of that channel held back meanwhile; 410 there means the history is gone and
is reported as a refused recovery. Subscribe replies are applied as they are
read, in order with the publications behind them. What happens on the way (errors,
disconnects, recoveries, reconnect times) goes to a :class:`Listener`; the
errors raised are the client's (:mod:`hubbub.client.exceptions`).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import msgpack

from hubbub.client.exceptions import (
    NOT_CONNECTED,
    Disconnected,
    ReplyError,
    ReplyTimeout,
    connect_reason,
)
from hubbub.client.recovery import (
    EMPTY_EPOCH_MARK,
    RETRY_RECOVERY,
    moves_on,
    reported_position,
    subscribe_command,
)
from hubbub.client.wire import Endpoint, Framing
from hubbub.protocol.backoff import backoff_delay
from hubbub.protocol.codec import encode_msgpack
from hubbub.protocol.codes import ErrorCode
from hubbub.protocol.exceptions import ProtocolViolation
from hubbub.protocol.messages import StreamPosition
from hubbub.protocol.wsclient import WebSocketError

_unpackb = msgpack.unpackb
_monotonic = time.monotonic

#: Reconnect delays: full jitter from 0.1 s, capped at 5 s.
BACKOFF_BASE, BACKOFF_CAP = 0.1, 5.0

#: A pending request's callback: the reply map (None: the connection was lost) and the time.
Callback = Callable[[dict[str, Any] | None, float], None]
#: The hot path: a publication's channel, its decoded ``data`` and the arrival time.
OnPub = Callable[[str, Any, float], None]
#: Sees each message's msgpack bytes before they are decoded; True: handled, skip it.
Raw = Callable[[bytes, float], bool]


class Listener:
    """What a :class:`LeanSession` reports besides publications; every method a no-op here.

    The load tester counts these (``hubbub.loadtest.users.session``).
    """

    def error(self, key: str) -> None:
        """Something went wrong that is worth counting, as a short key."""

    def up(self) -> None:
        """A connection is open (the first, or a new one after a loss)."""

    def lost(self, reason: str | None) -> None:
        """The connection ended; ``reason`` is the disconnect or close code, ``"lost"``
        or ``"silent"`` (None: closed by us)."""

    def subscribed(self, channel: str, now: float) -> None:
        """A subscribe (or re-subscribe) to ``channel`` was confirmed at ``now``."""

    def left(self, channel: str, now: float) -> None:
        """The session unsubscribed from ``channel``."""

    def recovered(self, count: int) -> None:
        """A re-subscribe brought ``count`` missed publications from history."""

    def recovery_refused(self, channel: str) -> None:
        """A re-subscribe to ``channel`` found its position gone (``recovered:
        false``): the client must reload what it missed."""

    def lagged(self, dropped: int) -> None:
        """The server skipped ``dropped`` publications for this slow client (``lag``)."""

    def presence(self) -> None:
        """A join or leave push arrived."""

    def reconnecting(self, since: float) -> None:
        """The connection was lost at ``since``; reconnect attempts begin."""

    def reconnected(self, since: float, now: float) -> None:
        """Connected and re-subscribed again at ``now``."""

    def reconnect_over(self) -> None:
        """The reconnect attempts ended (back, or the session closed)."""


_QUIET = Listener()


class _Channel:
    """A subscribed channel: the position of the last publication handed on, for
    recovery; while a gap is filled from ``history``, the live publications held."""

    __slots__ = ("again", "epoch", "gone", "held", "offset", "recover")

    def __init__(self, recover: bool) -> None:
        self.recover = recover
        self.offset: int | None = None
        self.epoch: str | None = None
        #: Live ``pub`` messages kept back while a gap is read from history (else None).
        self.held: list[dict[str, Any]] | None = None
        #: A ``lag`` arrived while the gap was being read: read again once done.
        self.again = False
        #: The history after the position is gone (410), the client was told: the
        #: next epoch is no news. The position is kept, so a recovery from it
        #: before then is refused again rather than skipped.
        self.gone = False

    def position(self) -> StreamPosition | None:
        if self.offset is None or self.epoch is None:
            return None
        return StreamPosition(self.offset, self.epoch)


class _Wire(asyncio.Protocol):
    """One socket: framing in and out, replies by id, everything else to the session."""

    def __init__(self, session: LeanSession, framing: Framing) -> None:
        self.session = session
        self.framing = framing
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._opening = True
        self.pending: dict[int, Callback] = {}
        self.close_code: int | None = None
        self.slow: tuple[float, int] | None = None
        #: When something last arrived (monotonic), for the dead-peer check.
        self.last_rx = _monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        opening = self.framing.opening()
        if opening:
            self.transport.write(opening)  # type: ignore[union-attr]
        self._check_open()
        if self.session.slow is not None:
            self.read_slowly(self.session.slow)

    def _check_open(self) -> None:
        if self._opening and self.framing.open:
            self._opening = False
            self.opened.set_result(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(self.framing.frame(encode_msgpack(message)))

    def send_many(self, messages: list[dict[str, Any]]) -> None:
        assert self.transport is not None
        frame = self.framing.frame
        self.transport.write(b"".join([frame(encode_msgpack(m)) for m in messages]))

    def data_received(self, data: bytes) -> None:
        self.last_rx = now = _monotonic()
        session = self.session
        framing = self.framing
        opening = self._opening
        try:
            frames = framing.feed(data)
            if opening:
                self._check_open()
            raw = session.raw
            pub = session._on_pub
            for frame in frames:
                if raw is not None and raw(frame, now):
                    continue
                message = _unpackb(frame)
                if message.get("push") == "pub":
                    pub(message, now)
                else:
                    self._dispatch(message, now)
        except WebSocketError as exc:
            if not self.opened.done():
                self.opened.set_exception(exc)
            session.listener.error("protocol websocket")
            self.abort()
            return
        except (ProtocolViolation, ValueError, TypeError, AttributeError) as exc:
            session.listener.error(f"protocol {type(exc).__name__}")
            self.abort()
            return
        if framing.replies:
            self._write_replies()
        if framing.closed:
            self.close_code = framing.close_code
            self.close()
            return
        if self.slow is not None and not (opening and not frames):
            self._read_slowly()  # (not while the WebSocket upgrade is under way)

    def _write_replies(self) -> None:
        """Pongs and the close reply the framing asked for."""
        assert self.transport is not None
        for reply in self.framing.replies:
            self.transport.write(reply)
        self.framing.replies.clear()

    def _dispatch(self, message: dict[str, Any], now: float) -> None:
        cid = message.get("id")
        if cid is not None:
            callback = self.pending.pop(cid, None)
            if callback is not None:
                callback(message, now)
        else:
            self.session._push(self, message, now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed while opening"))
        now = _monotonic()
        pending, self.pending = self.pending, {}
        for callback in pending.values():
            callback(None, now)
        self.session._wire_lost(self)

    def read_slowly(self, slow: tuple[float, int]) -> None:
        """From now on pause ``slow[0]`` s after each read, with SO_RCVBUF ``slow[1]``."""
        self.slow = slow
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, slow[1])

    def _read_slowly(self) -> None:
        """A slow consumer: stop reading for a while after each chunk."""
        assert self.transport is not None and self.slow is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(self.slow[0], self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class LeanSession:
    """A connection on the fast path, kept up across reconnects (see the module doc).

    ``urls`` are ``tcp://HOST:PORT`` or ``ws://HOST:PORT/ws``; the first
    connection goes to ``urls[first % len(urls)]``, reconnects round the
    others. ``on_pub`` gets every publication, ``raw`` (when set) each
    message's bytes first; ``listener`` hears the rest.
    """

    def __init__(
        self,
        urls: list[str],
        first: int = 0,
        *,
        on_pub: OnPub | None = None,
        raw: Raw | None = None,
        listener: Listener = _QUIET,
        local_addr: tuple[str, int] | None = None,
        timeout: float = 10.0,
        reconnect: bool = True,
        name: str = "hubbub-loadtest",
    ) -> None:
        self.endpoints = [Endpoint.parse(u) for u in urls]
        self.index = first % len(self.endpoints)
        self.on_pub = on_pub
        self.raw = raw
        self.listener = listener
        self.local_addr = local_addr
        self.timeout = timeout
        self.reconnect = reconnect
        #: (pause seconds after each read, SO_RCVBUF bytes) once reading slowly.
        self.slow: tuple[float, int] | None = None
        self.name = name
        self.wire: _Wire | None = None
        self.info: dict[str, Any] = {}
        self.subs: dict[str, _Channel] = {}
        self.closing = False
        #: Set once the session gave up (a disconnect without reconnect).
        self.dead = False
        self._last_id = 0
        self._disconnect: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        #: The reads of gaps from history under way.
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connected(self) -> bool:
        return self.wire is not None

    # -- connecting -------------------------------------------------------------

    async def connect(self) -> dict[str, Any]:
        """The first connection; returns the ``connect`` ok map.

        Raises the ``OSError``/``TimeoutError``/``WebSocketError`` of the
        attempt, :class:`ReplyError` when ``connect`` is refused, or
        :class:`Disconnected` when the server closed meanwhile.
        """
        await self._open()
        return self.info

    async def _open(self) -> None:
        endpoint = self.endpoints[self.index]
        loop = asyncio.get_running_loop()
        self._disconnect = None
        wire: _Wire | None = None
        try:
            async with asyncio.timeout(self.timeout):
                family, address = endpoint.address
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.setblocking(False)
                    if self.local_addr is not None:
                        sock.bind(self.local_addr)
                    await loop.sock_connect(sock, address)
                except BaseException:
                    sock.close()
                    raise
                _, wire = await loop.create_connection(
                    lambda: _Wire(self, endpoint.framing()), sock=sock
                )
                await wire.opened
                reply = await self._call(wire, {"op": "connect", "client": {"name": self.name}})
        except BaseException:
            if wire is not None:
                wire.abort()
            raise
        error = reply.get("error")
        if error is not None:
            wire.close()
            raise ReplyError.from_wire(error)
        ok = reply.get("ok")
        self.info = ok if isinstance(ok, dict) else {}
        self._disconnect = None
        self.wire = wire
        self.listener.up()

    def _call(
        self,
        wire: _Wire,
        message: dict[str, Any],
        apply: Callable[[dict[str, Any], float], None] | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        """Send a command with an id on ``wire``; the future gets the reply map,
        after ``apply`` (when given) saw it as it was read."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def done(reply: dict[str, Any] | None, now: float) -> None:
            if future.done():
                return
            if reply is None:
                future.set_exception(self._lost_error(wire))
                return
            if apply is not None:
                apply(reply, now)
            future.set_result(reply)

        self._last_id += 1
        message["id"] = self._last_id
        wire.pending[self._last_id] = done
        wire.send(message)
        return future

    # -- commands ---------------------------------------------------------------

    def send(self, message: dict[str, Any], callback: Callback | None = None) -> None:
        """Send a command; with ``callback`` it gets an id and the callback its reply.

        Raises :class:`Disconnected` while there is no connection.
        """
        wire = self.wire
        if wire is None:
            raise Disconnected(None, NOT_CONNECTED)
        if callback is not None:
            self._last_id += 1
            message["id"] = self._last_id
            wire.pending[self._last_id] = callback
        wire.send(message)

    def send_batch(self, messages: list[dict[str, Any]], callback: Callback) -> None:
        """Send commands with ids in one write; ``callback`` gets each reply.

        Raises :class:`Disconnected` while there is no connection.
        """
        wire = self.wire
        if wire is None:
            raise Disconnected(None, NOT_CONNECTED)
        pending = wire.pending
        for message in messages:
            self._last_id += 1
            message["id"] = self._last_id
            pending[self._last_id] = callback
        wire.send_many(messages)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a command and return its ok map.

        Raises :class:`ReplyError` on an error reply, :class:`ReplyTimeout`, or
        :class:`Disconnected` (not connected, or lost before the reply).
        """
        wire = self.wire
        if wire is None:
            raise Disconnected(None, NOT_CONNECTED)
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._call(wire, message)
        except TimeoutError:
            raise ReplyTimeout(f"no reply to {message.get('op')!r} in time") from None
        error = reply.get("error")
        if error is not None:
            raise ReplyError.from_wire(error)
        ok = reply.get("ok")
        return ok if isinstance(ok, dict) else {}

    async def subscribe(self, channel: str, recover: bool = False) -> dict[str, Any]:
        """Subscribe (``on_pub`` counts from the reply's arrival); returns the ok map.

        Raises as :meth:`request` does.
        """
        wire = self.wire
        if wire is None:
            raise Disconnected(None, NOT_CONNECTED)
        sub = _Channel(recover)
        future = self._subscribe_on(wire, channel, sub, subscribe_command(channel, recover=recover))
        try:
            async with asyncio.timeout(self.timeout):
                reply = await future
        except TimeoutError:
            raise ReplyTimeout("no reply to 'subscribe' in time") from None
        error = reply.get("error")
        if error is not None:
            raise ReplyError.from_wire(error)
        ok = reply.get("ok")
        return ok if isinstance(ok, dict) else {}

    def _subscribe_on(
        self, wire: _Wire, channel: str, sub: _Channel, message: dict[str, Any]
    ) -> asyncio.Future[dict[str, Any]]:
        """Send ``subscribe``; its ok reply is applied to ``sub`` as it is read, in
        order with the publications around it (a ``pub`` right behind the reply
        in the same read must find the position the reply gave)."""
        asked = "since" in message

        def apply(reply: dict[str, Any], now: float) -> None:
            ok = reply.get("ok")
            if reply.get("error") is None and wire is self.wire:
                if not asked:
                    self.subs[channel] = sub
                if self.subs.get(channel) is sub:
                    self._apply_subscribe(
                        channel, sub, ok if isinstance(ok, dict) else {}, now, asked=asked
                    )

        return self._call(wire, message, apply)

    async def unsubscribe(self, channel: str) -> None:
        self.subs.pop(channel, None)
        self.listener.left(channel, _monotonic())
        await self.request({"op": "unsubscribe", "channel": channel})

    def _apply_subscribe(
        self, channel: str, sub: _Channel, ok: dict[str, Any], now: float, *, asked: bool
    ) -> None:
        listener = self.listener
        listener.subscribed(channel, now)
        reported = reported_position(ok)
        if asked and ok.get("recovered") is False:
            if reported is None:
                listener.recovery_refused(channel)
                return
            # Gone, or more than one reply holds (protocol-additions.md "Sizes
            # and paging"): read it from history, which pages and answers 410
            # when it is gone indeed; live publications wait meanwhile.
            self._fill(channel, sub, reported.offset)
            return
        pubs = [p for p in ok.get("publications") or () if isinstance(p, dict)]
        if asked and pubs:
            listener.recovered(len(pubs))
        for pub in pubs:
            self._hand_on(channel, sub, pub, now)
        if reported is not None and moves_on(sub.position(), reported):
            sub.offset, sub.epoch = reported.offset, reported.epoch

    # -- what the server sends --------------------------------------------------

    def _on_pub(self, message: dict[str, Any], now: float) -> None:
        """A live ``pub`` (the hot path: :meth:`_hand_on` inlined)."""
        channel = message.get("channel")
        offset = message.get("offset")
        if offset is not None:
            sub = self.subs.get(channel)  # type: ignore[arg-type]
            if sub is not None:
                if sub.held is not None:
                    sub.held.append(message)
                    return
                epoch = message.get("epoch")
                if epoch != sub.epoch and epoch is not None:
                    self._new_epoch(channel, sub, epoch)  # type: ignore[arg-type]
                sub.offset = offset
        on_pub = self.on_pub
        if on_pub is not None:
            on_pub(channel, message.get("data"), now)  # type: ignore[arg-type]

    def _hand_on(self, channel: str, sub: _Channel, pub: dict[str, Any], now: float) -> None:
        """Hand on a publication with an offset and move the position to it."""
        offset, epoch = pub.get("offset"), pub.get("epoch")
        if epoch != sub.epoch and epoch is not None:
            self._new_epoch(channel, sub, epoch)
        if isinstance(offset, int):
            sub.offset = offset
        on_pub = self.on_pub
        if on_pub is not None:
            on_pub(channel, pub.get("data"), now)

    def _new_epoch(self, channel: str, sub: _Channel, epoch: str) -> None:
        """A publication of another epoch than the position's: the history
        restarted, what came before it is gone and the client reloads
        (PROTOCOL.md §3) — unless the position was an empty one (its history
        had not begun: protocol-additions.md "History positions")."""
        if sub.gone:
            sub.gone = False
        elif sub.epoch is not None and not sub.epoch.startswith(EMPTY_EPOCH_MARK):
            self.listener.recovery_refused(channel)
        sub.epoch = epoch

    # -- filling a gap from history ---------------------------------------------

    def _fill(self, channel: str, sub: _Channel, top: int | None = None) -> None:
        """Read what ``sub`` missed from ``history`` (after a ``lag``, or a
        recovery refused), holding live publications back until it is read up
        to ``top`` (None: the position the history reports)."""
        if sub.held is not None:
            sub.again = True  # a read is under way; it reads once more at its end
            return
        sub.held = []
        wire = self.wire
        if wire is not None:
            self._tasks.add(
                task := asyncio.get_running_loop().create_task(
                    self._read_gap(wire, channel, sub, top)
                )
            )
            task.add_done_callback(self._tasks.discard)

    async def _read_gap(self, wire: _Wire, channel: str, sub: _Channel, top: int | None) -> None:
        attempt = 0
        while wire is self.wire and self.subs.get(channel) is sub:
            since = sub.position()
            if since is None:
                break
            message = {"op": "history", "channel": channel, "since": since.to_wire()}
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await self._call(wire, message)
            except TimeoutError:
                wire.abort()  # the next connection's re-subscribe recovers
                return
            except Disconnected:
                return
            if wire is not self.wire or self.subs.get(channel) is not sub:
                return
            error = reply.get("error")
            if error is not None:
                code = error.get("code") if isinstance(error, dict) else error
                if code in RETRY_RECOVERY:
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                if code == ErrorCode.GONE:
                    self.listener.recovery_refused(channel)
                    sub.gone = True
                else:
                    self.listener.error(f"history {code}")
                break
            ok = reply.get("ok")
            ok = ok if isinstance(ok, dict) else {}
            pubs = [p for p in ok.get("publications") or () if isinstance(p, dict)]
            now = _monotonic()
            fresh = [p for p in pubs if self._new(sub, p)]
            if fresh:
                self.listener.recovered(len(fresh))
            for pub in fresh:
                self._hand_on(channel, sub, pub, now)
            reported = reported_position(ok)
            goal = top if top is not None else (reported.offset if reported else None)
            done = not pubs or goal is None or (sub.offset or 0) >= goal
            if done and sub.again:
                sub.again, top = False, None
                continue
            if done:
                if reported is not None and moves_on(sub.position(), reported):
                    sub.offset, sub.epoch = reported.offset, reported.epoch
                break
        self._release(channel, sub)

    @staticmethod
    def _new(sub: _Channel, pub: dict[str, Any]) -> bool:
        """Whether ``pub`` lies beyond the position handed on (not an overlap)."""
        offset, epoch = pub.get("offset"), pub.get("epoch")
        return not (
            isinstance(offset, int)
            and sub.offset is not None
            and offset <= sub.offset
            and (epoch is None or epoch == sub.epoch)
        )

    def _release(self, channel: str, sub: _Channel) -> None:
        """Hand on the live publications held during the read, the overlap skipped."""
        held, sub.held, sub.again = sub.held or [], None, False
        now = _monotonic()
        for pub in held:
            if self._new(sub, pub):
                self._hand_on(channel, sub, pub, now)

    def _push(self, wire: _Wire, message: dict[str, Any], now: float) -> None:
        push = message.get("push")
        if push == "ping":
            wire.send({"op": "pong"})
        elif push == "disconnect":
            self._disconnect = message
        elif push == "lag":
            dropped = message.get("dropped")
            self.listener.lagged(dropped if isinstance(dropped, int) else 0)
            channel = message.get("channel")
            sub = self.subs.get(channel)  # type: ignore[arg-type]
            if sub is not None and sub.position() is not None:
                self._fill(channel, sub)  # type: ignore[arg-type]
        elif push == "error":
            self.listener.error(f"{message.get('op', 'push')} {message.get('code')}")
        elif push in ("join", "leave"):
            self.listener.presence()

    # -- losing and regaining the connection ------------------------------------

    def _lost_reason(self, wire: _Wire) -> str:
        if self._disconnect is not None:
            return str(self._disconnect.get("code"))
        return str(wire.close_code) if wire.close_code is not None else "lost"

    def _lost_error(self, wire: _Wire) -> Disconnected:
        """How a request waiting on ``wire`` ends when the connection goes: the
        disconnect (or close) code if any, the report key of :meth:`_lost_reason`."""
        info = Disconnected.from_push(self._disconnect or {})
        code = info.code if info.code is not None else wire.close_code
        return Disconnected(code, self._lost_reason(wire), info.reconnect, info.after)

    def _wire_lost(self, wire: _Wire) -> None:
        if wire is not self.wire:
            return  # a connection attempt that did not finish
        self.wire = None
        for sub in self.subs.values():
            sub.held, sub.again = None, False  # the re-subscribe recovers them
        if self.closing:
            self.listener.lost(None)
            return
        self.listener.lost(self._lost_reason(wire))
        info = Disconnected.from_push(self._disconnect or {})
        if not (self.reconnect and info.reconnect):
            self.dead = True
            return
        delay = info.after / 1000 if info.after is not None else self._backoff(0)
        self._task = asyncio.get_running_loop().create_task(self._reconnect(delay))

    @staticmethod
    def _backoff(attempt: int) -> float:
        return backoff_delay(attempt, BACKOFF_BASE, BACKOFF_CAP)

    async def _reconnect(self, delay: float) -> None:
        listener = self.listener
        down_since = _monotonic()
        listener.reconnecting(down_since)
        attempt = 0
        try:
            while not self.closing:
                await asyncio.sleep(delay)
                attempt += 1
                delay = self._backoff(attempt)
                self.index = (self.index + 1) % len(self.endpoints)
                try:
                    await self._open()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    listener.error(f"reconnect {connect_reason(exc)}")
                    continue
                if await self._resubscribe():
                    listener.reconnected(down_since, _monotonic())
                    return
                # The new connection failed while re-subscribing: try again.
        finally:
            listener.reconnect_over()

    async def _resubscribe(self) -> bool:
        """Re-subscribe every channel with recovery; False when the connection went away.

        A refusal that passes (503: the node's broker is not back yet, 429, 500)
        is tried again after a backoff: a channel is never left unsubscribed.
        """
        wire = self.wire
        todo = list(self.subs.items())
        attempt = 0
        while todo and wire is not None:
            waits = []
            for channel, sub in todo:
                message = subscribe_command(channel, recover=True, since=sub.position())
                waits.append((channel, sub, self._subscribe_on(wire, channel, sub, message)))
            todo = []
            for channel, sub, future in waits:
                try:
                    async with asyncio.timeout(self.timeout):
                        reply = await future
                except (Disconnected, TimeoutError):
                    wire.abort()
                    return False
                error = reply.get("error")
                if error is None:
                    continue
                code = error.get("code") if isinstance(error, dict) else error
                self.listener.error(f"resubscribe {code}")
                if code in RETRY_RECOVERY and self.subs.get(channel) is sub:
                    todo.append((channel, sub))
            if todo:
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                if self.wire is not wire:
                    return False
        return wire is not None and self.wire is wire

    def check_alive(self, now: float) -> None:
        """Drop a connection silent for longer than the server's ping interval plus
        the timeout (a dead peer sends no FIN): the session then reconnects."""
        wire = self.wire
        ping = self.info.get("ping")
        if wire is None or wire.slow is not None or not isinstance(ping, int | float) or ping <= 0:
            return
        if now - wire.last_rx > ping + self.timeout:
            self.listener.error("connection silent")
            self._disconnect = {"code": "silent"}
            wire.abort()

    def read_slowly(self, pause: float, rcvbuf: int) -> None:
        """Become a slow consumer: after each read stop reading for ``pause`` seconds,
        with a socket receive buffer of ``rcvbuf`` bytes (also after reconnects)."""
        self.slow = (pause, rcvbuf)
        if self.wire is not None:
            self.wire.read_slowly(self.slow)

    def abort(self) -> None:
        """Drop the connection at once, as a dead peer would (it then reconnects)."""
        if self.wire is not None:
            self.wire.abort()

    async def close(self) -> None:
        """Close for good (not counted as a disconnect)."""
        self.closing = True
        if self._task is not None:
            self._task.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.wire is not None:
            self.wire.close()
