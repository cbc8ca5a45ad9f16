"""The asyncio client: one connection at a time, commands, pushes, reconnects.

Commands get increasing ids and wait for the reply with the same id
(PROTOCOL.md §2). One reader task per connection dispatches replies and pushes;
one supervisor task notices the end of a connection and, when allowed,
reconnects (the server's ``after``, else exponential backoff with full jitter),
sends ``connect`` again and re-subscribes every subscription with recovery.

Commands issued while a reconnect is under way wait for it (within the
timeout); commands in flight when a connection drops raise
:class:`~hubbub.client.exceptions.Disconnected` (a publish may or may not have happened).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from hubbub.client.exceptions import NOT_CONNECTED, Disconnected, ReplyError, ReplyTimeout
from hubbub.client.recovery import RETRY_RECOVERY, reported_position, subscribe_command
from hubbub.client.subscription import ChannelEvent, Publication, Subscription
from hubbub.client.transport import DEFAULT_MAX_FRAME, Transport, open_transport
from hubbub.protocol.backoff import backoff_delay
from hubbub.protocol.codec import Encoding
from hubbub.protocol.codes import ErrorCode
from hubbub.protocol.exceptions import ProtocolViolation
from hubbub.protocol.messages import MAX_ID, StreamPosition

log = logging.getLogger("hubbub.client")

#: Reply codes after which a reconnect attempt is simply retried later.
_RETRY_CODES = frozenset({ErrorCode.RATE_LIMITED, ErrorCode.INTERNAL, ErrorCode.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class HistoryResult:
    """A ``history`` reply: publications (oldest first) and the current position."""

    publications: list[Publication]
    position: StreamPosition | None


class Client:
    """A hubbub client over TCP (``tcp://host:port``) or WebSocket (``ws://host:port/ws``).

    ``url`` may be a list: the first that answers is used, and reconnects go
    round-robin through them (a cluster without a load balancer). ``encoding``
    ("msgpack" or "json") applies to WebSocket; TCP is always msgpack.
    ``timeout`` bounds every command and connection attempt, in seconds.
    Errors of fire-and-forget commands (``error`` pushes) are kept in
    :attr:`errors` (the last 1000) and passed to ``on_error``.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | None = None,
        name: str = "hubbub-python",
        version: str | None = None,
        encoding: str = "msgpack",
        reconnect: bool = True,
        timeout: float = 10.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        backoff_base: float = 0.1,
        backoff_cap: float = 10.0,
        on_error: Callable[[ReplyError], None] | None = None,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("at least one url is needed")
        if encoding not in ("msgpack", "json"):
            raise ValueError(f"encoding must be 'msgpack' or 'json', not {encoding!r}")
        self.token = token
        self.name = name
        self.version = version
        self.encoding = Encoding.MSGPACK if encoding == "msgpack" else Encoding.JSON
        self.reconnect = reconnect
        self.timeout = timeout
        self.max_frame = max_frame
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.on_error = on_error
        #: The ok map of the last ``connect`` reply (client, node, ping, limits).
        self.info: dict[str, Any] = {}
        #: How the last connection ended (code None: no reason given).
        self.last_disconnect: Disconnected | None = None
        #: ``error`` pushes received (failures of commands sent without an id).
        self.errors: deque[ReplyError] = deque(maxlen=1000)
        #: Successful reconnects so far.
        self.reconnects = 0
        self._url_index = 0
        self._transport: Transport | None = None
        self._reader: asyncio.Task[Disconnected] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._last_id = 0
        self._subs: dict[str, Subscription] = {}
        self._connected = False
        self._wakeup = asyncio.Event()  # set while connected, and once final
        self._final: Disconnected | None = None  # set once closed for good
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_rx = 0.0
        self._connect_lock = asyncio.Lock()

    # -- lifecycle --------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def closed(self) -> bool:
        """True after :meth:`close` or a disconnect without reconnect."""
        return self._final is not None

    @property
    def client_id(self) -> str | None:
        return self.info.get("client")

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """The current subscriptions by channel (a copy)."""
        return dict(self._subs)

    async def connect(self) -> dict[str, Any]:
        """Connect (each url once, in order) and return the ``connect`` ok map.

        Raises the last connection error, or :class:`ReplyError` when the server
        refuses ``connect`` (e.g. 401). Does nothing when already connected.
        """
        async with self._connect_lock:
            if self._final is not None:
                raise self._final
            if self._supervisor is not None:  # already connected, or reconnecting
                async with asyncio.timeout(self.timeout):
                    await self._ready()
                return self.info
            return await self._connect_first()

    async def _connect_first(self) -> dict[str, Any]:
        error: BaseException | None = None
        for _ in self.urls:
            url = self.urls[self._url_index]
            try:
                await self._open(url)
            except ReplyError as exc:
                if exc.code not in _RETRY_CODES:
                    raise
                error = exc
            except (OSError, TimeoutError, ProtocolViolation) as exc:
                error = exc
            except Disconnected as exc:
                if not exc.reconnect:
                    raise
                error = exc
            except Exception as exc:  # websockets handshake errors and the like
                error = exc
            else:
                self._supervisor = self._spawn(self._supervise())
                return self.info
            self._url_index = (self._url_index + 1) % len(self.urls)
        assert error is not None
        raise error

    async def close(self) -> None:
        """Close the connection and stop reconnecting; iterators finish. Idempotent."""
        if self._final is not None and not self._tasks:
            return
        if self._final is None:
            self._final = Disconnected(None, "client closed", reconnect=False)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._shutdown(self._final, clean=True)

    # -- commands ---------------------------------------------------------------

    async def subscribe(
        self,
        channel: str,
        *,
        recover: bool = False,
        since: StreamPosition | None = None,
        maxsize: int = 0,
        on_event: Callable[[ChannelEvent], None] | None = None,
    ) -> Subscription:
        """Subscribe to ``channel``; see :class:`Subscription` for the queue and events.

        With ``recover`` and a ``since`` position (saved from an earlier session),
        missed publications come first; check ``sub.recovered``.
        """
        if channel in self._subs:
            raise ReplyError(ErrorCode.CONFLICT, "already subscribed", data={"local": True})
        sub = Subscription(
            self, channel, recover=recover, since=since, maxsize=maxsize, on_event=on_event
        )
        self._subs[channel] = sub
        try:
            await self._subscribe(sub)
        except BaseException as exc:
            if self._subs.get(channel) is sub:
                del self._subs[channel]
            sub._finish(exc if isinstance(exc, Exception) else None)
            raise
        return sub

    async def unsubscribe(self, channel: str) -> None:
        """Leave ``channel``; its iterator ends. A no-op on the server while disconnected."""
        sub = self._subs.pop(channel, None)
        if sub is not None:
            sub._finish()
        if not self._connected:
            if sub is None:
                raise ReplyError(ErrorCode.CONFLICT, "not subscribed", data={"local": True})
            return  # the next connection simply does not re-subscribe it
        with contextlib.suppress(Disconnected):
            await self._call({"op": "unsubscribe", "channel": channel})

    async def publish(self, channel: str, data: Any) -> int | None:
        """Publish and wait for the reply; the offset on channels with history."""
        ok = await self._call({"op": "publish", "channel": channel, "data": data})
        offset = ok.get("offset")
        return offset if isinstance(offset, int) else None

    def publish_nowait(self, channel: str, data: Any) -> None:
        """Publish without an id (fire-and-forget): a failure arrives as an ``error`` push.

        Raises :class:`Disconnected` when not connected. Use :meth:`drain` for
        flow control when publishing in a loop.
        """
        self._send({"op": "publish", "channel": channel, "data": data})

    async def presence(self, channel: str) -> dict[str, Any]:
        """Who is subscribed: client id -> ``{"user": ..., "info": ...}``."""
        ok = await self._call({"op": "presence", "channel": channel})
        clients = ok.get("clients")
        return clients if isinstance(clients, dict) else {}

    async def history(
        self, channel: str, *, since: StreamPosition | None = None, limit: int | None = None
    ) -> HistoryResult:
        """Read history: with ``since`` the first ``limit`` after it, else the last ``limit``.

        Raises :class:`ReplyError` 410 when ``since`` is no longer in history.
        """
        return await self._history(channel, since, limit)

    async def _history(
        self,
        channel: str,
        since: StreamPosition | None,
        limit: int | None,
        transport: Transport | None = None,
    ) -> HistoryResult:
        message: dict[str, Any] = {"op": "history", "channel": channel}
        if since is not None:
            message["since"] = since.to_wire()
        if limit is not None:
            message["limit"] = limit
        ok = await self._call(message, transport=transport)
        pubs = [
            Publication.from_wire(entry, channel)
            for entry in ok.get("publications") or ()
            if isinstance(entry, dict)
        ]
        return HistoryResult(pubs, reported_position(ok))

    async def ping(self) -> None:
        """Round trip to the server."""
        await self._call({"op": "ping"})

    async def refresh(self, token: str) -> int | None:
        """Replace the connection token (also used for later reconnects); returns ``expires``."""
        ok = await self._call({"op": "refresh", "token": token})
        self.token = token
        expires = ok.get("expires")
        return expires if isinstance(expires, int) else None

    async def drain(self) -> None:
        """Wait until queued messages are handed to the OS (after many publish_nowait)."""
        if self._transport is not None:
            with contextlib.suppress(Disconnected):
                await self._transport.drain()

    # -- requests ---------------------------------------------------------------

    async def _ready(self) -> None:
        while not self._connected:
            if self._final is not None:
                raise self._final
            if self._supervisor is None:
                raise Disconnected(None, "not connected: call connect() first", reconnect=False)
            await self._wakeup.wait()

    async def _call(
        self,
        message: dict[str, Any],
        *,
        transport: Transport | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send a command with a new id and return its ok map.

        Without ``transport`` it waits for the connection to be ready; the
        handshake passes the transport it is opening.
        """
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                if transport is None:
                    await self._ready()
                    transport = self._transport
                    assert transport is not None
                self._last_id = cid = self._last_id % (MAX_ID - 1) + 1
                message["id"] = cid
                future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                self._pending[cid] = future
                try:
                    transport.send(message)
                    return await future
                finally:
                    self._pending.pop(cid, None)
        except TimeoutError:
            raise ReplyTimeout(f"no reply to {message.get('op')!r} in time") from None

    def _send(self, message: dict[str, Any]) -> None:
        """Send a command without an id."""
        transport = self._transport
        if transport is None or not self._connected:
            raise self._final or Disconnected(None, NOT_CONNECTED)
        transport.send(message)

    async def _subscribe(self, sub: Subscription, transport: Transport | None = None) -> None:
        """Send ``subscribe`` for ``sub`` and apply the reply, recovery included.

        A re-subscribe asks for recovery from the last position; its live
        publications are held (see :meth:`_open`) until the reply is applied.
        """
        again = sub.state == "subscribed"
        asked = sub.recover or again
        kept = sub.position
        message = subscribe_command(sub.channel, recover=asked, since=kept)
        ok = await self._call(message, transport=transport)
        if self._subs.get(sub.channel) is not sub:
            return
        if again and kept is not None and ok.get("recovered") is False:
            # Gone, or more than one reply holds (protocol-additions.md "Sizes and
            # paging"): history pages, and answers 410 when it is gone indeed.
            sub._recovering = True
            self._spawn(self._recover_gap(sub, refusal=ok))
            return
        sub._apply_subscribe(ok, asked_recovery=asked and kept is not None)

    # -- connections ------------------------------------------------------------

    async def _open(self, url: str) -> None:
        """Open a transport to ``url``, ``connect``, start reading; then re-subscribe."""
        transport = await open_transport(
            url, encoding=self.encoding, max_frame=self.max_frame, timeout=self.timeout
        )
        reader = self._spawn(self._read(transport))
        try:
            message: dict[str, Any] = {"op": "connect", "client": {"name": self.name}}
            if self.version is not None:
                message["client"]["version"] = self.version
            if self.token is not None:
                message["token"] = self.token
            info = await self._call(message, transport=transport)
            if reader.done():  # the server closed right after its reply
                raise reader.result()
        except BaseException:
            reader.cancel()
            await transport.close()
            with contextlib.suppress(BaseException):
                await reader
            raise
        self.info = info
        limits = info.get("limits")
        if isinstance(limits, dict) and isinstance(limits.get("max_frame"), int):
            transport.max_send = limits["max_frame"]
        self._transport = transport
        self._reader = reader
        self._connected = True
        self._wakeup.set()
        self._arm_watchdog(transport)
        for sub in list(self._subs.values()):
            if sub.state == "subscribed":
                sub._hold()
                self._spawn(self._resubscribe(sub, transport))

    async def _resubscribe(self, sub: Subscription, transport: Transport) -> None:
        """Re-subscribe after a reconnect with ``recover`` and ``since``."""
        while self._transport is transport and self._subs.get(sub.channel) is sub:
            try:
                await self._subscribe(sub, transport)
                return
            except ReplyError as exc:
                if exc.code == ErrorCode.RATE_LIMITED:
                    await asyncio.sleep((exc.retry_after or 100) / 1000)
                    continue
                if exc.code in _RETRY_CODES:
                    await asyncio.sleep(backoff_delay(1, self.backoff_base, self.backoff_cap))
                    continue
                log.warning("re-subscribe to %s failed: %s", sub.channel, exc)
                if self._subs.get(sub.channel) is sub:
                    del self._subs[sub.channel]
                sub._finish(exc)
                return
            except Disconnected:
                return  # this connection is gone; the next one re-subscribes
            except ReplyTimeout:
                log.info("no reply to re-subscribe %s: dropping the connection", sub.channel)
                transport.abort()
                return

    async def _supervise(self) -> None:
        """Wait for each connection to end; reconnect while allowed."""
        while True:
            assert self._reader is not None
            info = await self._reader
            if self._final is not None:
                return
            if not (self.reconnect and info.reconnect):
                self._final = info
                transport, self._transport = self._transport, None
                if transport is not None:
                    await transport.close()
                self._shutdown(info, clean=False)
                return
            await self._reconnect(info)
            if self._final is not None:
                return

    async def _reconnect(self, info: Disconnected) -> None:
        """Reconnect attempts until one succeeds or the server says stop."""
        delay = (
            info.after / 1000
            if info.after is not None
            else backoff_delay(0, self.backoff_base, self.backoff_cap)
        )
        attempt = 0
        while True:
            await asyncio.sleep(delay)
            attempt += 1
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap)
            self._url_index = (self._url_index + 1) % len(self.urls)
            url = self.urls[self._url_index]
            try:
                await self._open(url)
            except ReplyError as exc:
                if exc.code not in _RETRY_CODES:
                    final = Disconnected(None, f"connect refused: {exc}", reconnect=False)
                    self._final = final
                    self._shutdown(final, clean=False)
                    return
                if exc.retry_after is not None:
                    delay = exc.retry_after / 1000
            except Disconnected as exc:
                if not exc.reconnect:
                    self._final = exc
                    self._shutdown(exc, clean=False)
                    return
                if exc.after is not None:
                    delay = exc.after / 1000
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, timeout, handshake error, bad bytes
                log.debug("reconnect to %s failed: %r", url, exc)
            else:
                self.reconnects += 1
                return

    async def _read(self, transport: Transport) -> Disconnected:
        """The reader task of one connection; returns how it ended."""
        try:
            info = await self._read_messages(transport)
        except asyncio.CancelledError:  # close(), or a handshake given up
            self._lost(transport, self._final or Disconnected(None, "connection closed"))
            raise
        self.last_disconnect = info
        self._lost(transport, info)
        if self._final is None:
            await transport.close()
        return info

    async def _read_messages(self, transport: Transport) -> Disconnected:
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = await transport.recv()
                self._last_rx = loop.time()
                for message in batch:
                    end = self._dispatch(transport, message)
                    if end is not None:
                        return end
        except Disconnected as exc:
            return exc
        except ProtocolViolation as exc:
            return Disconnected(None, f"bad message from the server: {exc}")

    def _lost(self, transport: Transport, info: Disconnected) -> None:
        """A connection ended: fail in-flight commands, pause subscriptions."""
        if self._transport is not transport and self._transport is not None:
            return  # an older connection (or a handshake that did not finish)
        self._connected = False
        self._wakeup.clear()
        self._transport = None
        self._fail_pending(info)
        for sub in self._subs.values():
            sub._drop_held()

    def _shutdown(self, final: Disconnected, *, clean: bool) -> None:
        """Closed for good: fail whatever waits, end every iterator."""
        self._connected = False
        self._wakeup.set()
        self._fail_pending(final)
        subs, self._subs = self._subs, {}
        for sub in subs.values():
            sub._finish(None if clean else final)

    def _fail_pending(self, info: Disconnected) -> None:
        """No connection any more: stop the watchdog, fail the commands in flight."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(info)

    def _arm_watchdog(self, transport: Transport) -> None:
        """Treat the connection as dead when nothing arrives for ping + timeout (§3)."""
        ping = self.info.get("ping")
        if not isinstance(ping, int | float) or ping <= 0:
            return
        loop = asyncio.get_running_loop()
        limit = ping + self.timeout
        self._last_rx = loop.time()

        def check() -> None:
            if self._transport is not transport:
                return
            idle = loop.time() - self._last_rx
            if idle >= limit:
                log.info("no traffic for %.1f s: reconnecting", idle)
                self._watchdog = None
                transport.abort()  # recv() ends: reconnect as for a lost connection
                return
            self._watchdog = loop.call_later(limit - idle, check)

        self._watchdog = loop.call_later(limit, check)

    # -- pushes -----------------------------------------------------------------

    def _dispatch(self, transport: Transport, message: dict[str, Any]) -> Disconnected | None:
        """Handle one received map; a ``disconnect`` push is returned."""
        cid = message.get("id")
        if cid is not None:
            future = self._pending.pop(cid, None)
            if future is not None and not future.done():
                if "error" in message:
                    future.set_exception(ReplyError.from_wire(message["error"]))
                else:
                    ok = message.get("ok")
                    future.set_result(ok if isinstance(ok, dict) else {})
            return None
        push = message.get("push")
        channel = message.get("channel")
        sub = self._subs.get(channel) if isinstance(channel, str) else None
        if push == "pub":
            if sub is not None and isinstance(channel, str):
                sub._deliver(Publication.from_wire(message, channel))
        elif push == "ping":
            with contextlib.suppress(Disconnected, ReplyError):
                transport.send({"op": "pong"})
        elif push in ("join", "leave"):
            if sub is not None and isinstance(channel, str):
                sub._event(ChannelEvent(push, channel, message.get("client"), message.get("user")))
        elif push == "lag":
            if sub is not None and isinstance(channel, str):
                self._on_lag(sub, message.get("dropped"))
        elif push == "unsubscribe":
            if sub is not None and isinstance(channel, str):
                self._on_unsubscribed(sub, message)
        elif push == "error":
            error = ReplyError.from_wire(message)
            self.errors.append(error)
            if self.on_error is not None:
                try:
                    self.on_error(error)
                except Exception:
                    log.exception("on_error callback failed")
        elif push == "disconnect":
            return Disconnected.from_push(message)
        # Unknown pushes are ignored: the protocol may add some (PROTOCOL.md intro).
        return None

    def _on_unsubscribed(self, sub: Subscription, message: dict[str, Any]) -> None:
        """The server ended ``sub`` (a ``refresh`` whose token no longer allows
        it): its iterator raises the reason, and no reconnect re-subscribes it."""
        if self._subs.get(sub.channel) is sub:
            del self._subs[sub.channel]
        code = message.get("code")
        reason = str(message.get("reason", ""))
        sub._finish(ReplyError(code if isinstance(code, int) else 0, reason, None, message))

    def _on_lag(self, sub: Subscription, dropped: Any) -> None:
        count = dropped if isinstance(dropped, int) else 0
        sub.lagged += count
        sub._event(ChannelEvent("lag", sub.channel, dropped=count))
        if (
            sub.position is not None
            and sub.state == "subscribed"
            and not sub._recovering
            and not sub._holding
        ):
            sub._recovering = True
            sub._hold()
            self._spawn(self._recover_gap(sub))

    async def _recover_gap(self, sub: Subscription, refusal: dict[str, Any] | None = None) -> None:
        """After a ``lag``, or a re-subscribe answered ``recovered: false``
        (``refusal``: gone, or more than one reply holds): read history from the
        last position, then release the live ones held.

        Pages until the history is read up to the position it reported, so the
        gap is filled even when the server caps the page size. When it cannot
        be read (410: gone) the app reloads: a "reset" event, and after a
        ``refusal`` the position that reply gave.
        """
        transport = self._transport
        pubs: list[Publication] = []
        reset = False
        top: StreamPosition | None = None
        if transport is None:
            sub._recovering = False
            return
        try:
            pubs, top = await self._read_gap(sub, transport)
        except ReplyError as exc:
            # 410, or a refusal that retrying cannot change: what was missed is
            # not in history for us, so the app reloads (a "reset" event).
            reset = True
            if exc.code != ErrorCode.GONE:
                log.warning("recovery of %s failed: %s", sub.channel, exc)
        except Disconnected:
            return  # the re-subscribe of the next connection recovers
        except ReplyTimeout:
            log.info("no reply to history of %s: dropping the connection", sub.channel)
            transport.abort()  # the re-subscribe of the next connection recovers
            return
        finally:
            sub._recovering = False
        if self._transport is not transport or self._subs.get(sub.channel) is not sub:
            return
        if reset and refusal is not None:
            held, sub._held = sub._held, []  # live ones after the reply: kept
            sub._apply_subscribe(refusal, asked_recovery=True)
            for pub in held:
                sub._feed(pub)
            return
        for pub in pubs:
            sub._feed(pub)
        sub._set_position(top)
        if reset:
            sub.recovered = False
            sub._event(ChannelEvent("reset", sub.channel))
        elif refusal is not None:
            sub.recovered = True
        sub._release()

    async def _read_gap(
        self, sub: Subscription, transport: Transport
    ) -> tuple[list[Publication], StreamPosition | None]:
        """History from ``sub``'s position up to the position it reports, page by
        page (the server caps a page at ``max_frame``), and that position.

        503 (the broker is back but not yet ready), 429 and 500 are tried again:
        the gap must still be filled. Raises :class:`ReplyError` for the other
        codes (410: gone), :class:`Disconnected`, :class:`ReplyTimeout`.
        """
        pubs: list[Publication] = []
        top: StreamPosition | None = None
        attempt = 0
        position = sub.position
        while position is not None:
            try:
                page = await self._history(sub.channel, position, None, transport)
            except ReplyError as exc:
                if exc.code not in RETRY_RECOVERY or self._transport is not transport:
                    raise
                log.info("history of %s to fill a gap: %s, retrying", sub.channel, exc)
                delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap)
                if exc.retry_after:
                    delay = max(delay, exc.retry_after / 1000)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            pubs.extend(page.publications)
            top = page.position
            last = page.publications[-1].offset if page.publications else None
            if top is None or last is None or last >= top.offset:
                break
            position = StreamPosition(last, top.epoch)
        return pubs, top

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
