"""One client connection above its transport: session, commands, output.

Both transports (``server.tcp``, ``server.ws``) feed decoded messages to
:meth:`Connection.handle` one at a time, awaiting each, so replies go out in
the order commands arrived (PROTOCOL.md §2) and a busy connection is not read
further (DESIGN.md "Backpressure").

Output is batched: :meth:`write` appends to a per-connection list and the node
flushes every connection that has output once per event-loop iteration, so
several messages share one ``send()`` (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from hubbub.cluster.broker import ChannelOptions, ClientInfo, Publication
from hubbub.protocol.codes import DisconnectCode, ErrorCode
from hubbub.protocol.errors import CommandError
from hubbub.protocol.messages import (
    Command,
    Connect,
    History,
    Ping,
    Pong,
    Presence,
    Publish,
    Refresh,
    Subscribe,
    Unsubscribe,
    parse_command,
    push_disconnect,
    push_error,
    push_lag,
    push_ping,
    push_pub,
    reply_error,
    reply_ok,
)
from hubbub.server import log
from hubbub.server.auth import ANONYMOUS, Identity
from hubbub.server.keepalive import Due, Timers
from hubbub.server.ratelimit import ABUSE, ADMIT, CommandLimiter
from hubbub.server.session import Session, State
from hubbub.server.wire import Format, encode_for

if TYPE_CHECKING:
    from websockets.server import ServerProtocol

    from hubbub.server.config import NamespaceConfig
    from hubbub.server.node import Node

Reply = dict[str, Any]


def _pub_wire(pub: Publication) -> dict[str, Any]:
    return push_pub(
        pub.channel, pub.data, pub.offset, pub.sender.sender() if pub.sender else None, pub.epoch
    )


class Connection:
    """A connected client, whatever its transport."""

    __slots__ = (
        "__weakref__",
        "client_id",
        "counted",
        "dropped",
        "fmt",
        "identity",
        "info",
        "kind",
        "limiter",
        "node",
        "out",
        "out_room",
        "out_size",
        "peer",
        "session",
        "subs",
        "timers",
        "transport",
        "writable",
        "ws",
    )

    def __init__(
        self, node: Node, transport: asyncio.Transport, kind: str, fmt: Format, peer: str
    ) -> None:
        self.node = node
        self.transport = transport
        self.kind = kind  # "tcp" or "ws", the metrics label
        self.fmt = fmt
        self.peer = peer
        self.ws: ServerProtocol | None = None  # the websockets Sans-I/O protocol, on WS
        self.session = Session()
        now = node.clock()
        self.timers = Timers(now, node.config.limits.handshake_timeout)
        self.client_id = ""
        self.identity: Identity = ANONYMOUS
        self.info: ClientInfo | None = None
        self.subs: dict[str, None] = {}
        self.out: list[bytes] = []
        self.out_size = 0
        self.out_room = node.config.limits.outbound_buffer
        self.dropped: dict[str, int] = {}
        self.writable = True
        limits = node.config.limits
        self.limiter = CommandLimiter(limits.messages_per_second, limits.message_burst, now)
        self.counted = False  # counts against max_connections (set by Node.accept)

    # -- output ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes for the transport; flushed once per loop iteration."""
        if not self.writable:
            return
        out = self.out
        if not out:
            self.node.mark_dirty(self)
        out.append(data)
        self.out_size += len(data)

    def deliver(self, data: bytes, channel: str) -> None:
        """Queue one publication; applies the slow-consumer policy (never waits)."""
        if not self.writable:
            return
        size = self.out_size + len(data)
        if size > self.out_room:
            self._overflow(channel)
            return
        out = self.out
        if not out:
            self.node.mark_dirty(self)
        out.append(data)
        self.out_size = size

    def send(self, message: dict[str, Any]) -> None:
        """Encode one reply or push for this connection's format and queue it."""
        self.write(encode_for(self.fmt, message))

    def flush(self) -> None:
        """Hand queued bytes to the transport in one write (called by the node)."""
        out = self.out
        if not out or not self.writable:
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport = self.transport
        try:
            transport.write(data)
        except RuntimeError:
            # uvloop refuses writes once the peer is gone (asyncio ignores
            # them); the read loop will notice and call closed(). Raising here
            # would stop the node's flush of every other connection.
            self.out_size = 0
            return
        self.node.stats.bytes_out[self.kind] += len(data)
        backlog = transport.get_write_buffer_size()
        limit = self.node.config.limits.outbound_buffer
        self.out_size = 0
        self.out_room = limit - backlog
        if self.dropped and backlog <= limit // 2:
            self.send_lag()

    async def pace(self, writer: asyncio.StreamWriter) -> None:
        """Called by a transport before it reads on: when the client is not
        reading its replies (unread output over ``outbound_buffer``), flush and
        wait until the transport has written most of it (DESIGN.md
        "Backpressure"). The client's kernel window closes and it slows down;
        one that never reads is cut by the keepalive (3003), as none of its
        commands is processed meanwhile."""
        if not self.writable:
            return
        pending = self.out_size + self.transport.get_write_buffer_size()
        if pending > self.node.config.limits.outbound_buffer:
            self.flush()
            await writer.drain()

    async def finish(self, reader: asyncio.StreamReader) -> None:
        """The transport's read loop ended: flush and close, or, after a
        :meth:`disconnect`, drop the client's input until it closes
        (:meth:`linger`); then leave every channel."""
        try:
            if self.writable:
                self.flush()
                self.transport.close()
            else:
                await self.linger(reader)
        finally:
            self.closed()

    def send_lag(self) -> None:
        """Tell the client what the drop policy skipped, once it has caught up."""
        dropped, self.dropped = self.dropped, {}
        for channel, count in dropped.items():
            self.send(push_lag(channel, count))

    def _overflow(self, channel: str) -> None:
        node = self.node
        policy = node.slow_consumer_policy(channel)
        node.limits.hit("outbound_buffer")  # metric now, aggregated log line later
        if policy == "drop":
            self.dropped[channel] = self.dropped.get(channel, 0) + 1
            node.stats.dropped += 1
            node.lagging.add(self)
            return
        log.debug("slow_consumer", client=self.client_id, peer=self.peer)
        self.disconnect(DisconnectCode.SLOW_CONSUMER, abort_after=1.0)

    # -- closing -----------------------------------------------------------

    def disconnect(
        self,
        code: DisconnectCode,
        reason: str | None = None,
        after: int | None = None,
        *,
        abort_after: float = 5.0,
    ) -> None:
        """Send the ``disconnect`` push (and a WebSocket close), then close.

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
        self.node.metrics.disconnects.labels(str(int(code))).inc()
        ws = self.ws
        if ws is None or ws.state.name == "OPEN":
            self.send(push_disconnect(code, reason, after))
        if ws is not None and ws.state.name == "OPEN":
            ws.send_close(int(code), (reason or "")[:120])
            for data in ws.data_to_send():
                if data:
                    self.write(data)
        self.session.to(State.CLOSING)
        self.flush()
        self.writable = False
        # Not now: this may run inside the hub's fan-out over a channel's
        # subscribers (a slow consumer), which must not change under it.
        loop = asyncio.get_running_loop()
        loop.call_soon(self._release_channels)
        transport = self.transport
        if not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
            if abort_after >= 0:
                loop.call_later(abort_after, transport.abort)
            return
        transport.close()
        if abort_after >= 0 and transport.get_write_buffer_size():
            loop.call_later(abort_after, transport.abort)

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
        self.writable = False
        self.out.clear()
        self._release_channels()
        self.node.forget(self)

    def _release_channels(self) -> None:
        node = self.node
        node.lagging.discard(self)
        for channel in self.subs:
            node.hub.release(self, channel)
            node.spawn(self._leave(channel))
        self.subs = {}

    async def _leave(self, channel: str) -> None:
        ns = self.node.namespace(channel)
        info = self.info
        if info is None:
            return
        if ns.presence:
            await self.node.broker.remove_presence(channel, info.client)
        if ns.join_leave:
            await self.node.broker.publish_leave(channel, info)

    # -- timers ------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Run the connection's timers (called by the node's sweeper)."""
        if not self.writable:
            return  # disconnected, flushing: no timers left
        limits = self.node.config.limits
        expires = self.identity.expires
        if expires is not None and expires <= time.time():
            self.node.limits.hit("token_expired")
            self.disconnect(DisconnectCode.UNAUTHORIZED, "token expired")
            return
        due = self.timers.poll(now, limits.ping_interval, limits.ping_timeout)
        if due is Due.NOTHING:
            return
        if due is Due.HANDSHAKE:
            self.node.limits.hit("handshake_timeout")
            self.disconnect(DisconnectCode.PROTOCOL_ERROR, "no connect in time")
        elif due is Due.STALE:
            self.node.limits.hit("ping_timeout")
            self.disconnect(DisconnectCode.STALE, abort_after=0.5)
        else:
            self.send(push_ping())

    # -- commands ----------------------------------------------------------

    async def handle(self, message: dict[str, Any]) -> None:
        """Handle one decoded message from the client."""
        started = time.perf_counter()
        try:
            command = parse_command(message)
        except CommandError as exc:
            if self.session.state is State.CONNECTING:
                self.disconnect(DisconnectCode.PROTOCOL_ERROR, exc.message)
                return
            bad_op = message.get("op")
            # Bounded metric label values, whatever the client sent as op.
            label = bad_op if isinstance(bad_op, str) and bad_op in _KNOWN_OPS else "unknown"
            verdict = self.limiter.check(self.node.clock())
            if verdict != ADMIT:
                self._refuse(verdict, exc.command_id, bad_op, label)
                return
            self._answer_error(exc.command_id, exc, bad_op)
            self.node.metrics.command(label, "400", 0.0)
            return
        self.timers.activity()
        op = _OPS[type(command)]
        if op != "pong":  # PROTOCOL.md §2: pong never counts against the limit
            verdict = self.limiter.check(self.node.clock())
            if verdict != ADMIT:
                self._refuse(verdict, command.id, op, op)
                return
        if self.session.state is not State.OPEN and op != "connect":
            if self.session.state is State.CONNECTING:
                self.disconnect(DisconnectCode.PROTOCOL_ERROR, "connect first")
            return
        handler = _HANDLERS[type(command)]
        result = "ok"
        try:
            ok = await handler(self, command)
            if command.id is not None and ok is not None:
                self.send(reply_ok(command.id, ok))
        except CommandError as exc:
            result = str(int(exc.code))
            self._answer_error(command.id, exc, op)
            if op == "connect" and self.session.state is State.CONNECTING:
                # A refused handshake ends the connection (PROTOCOL.md §5: 401 → 3005);
                # a second connect on an open session only gets its 400.
                code = (
                    DisconnectCode.UNAUTHORIZED
                    if exc.code == ErrorCode.UNAUTHORIZED
                    else DisconnectCode.PROTOCOL_ERROR
                )
                self.disconnect(code, exc.message)
        except Exception:
            result = "500"
            log.error("command_failed", exc_info=True, op=op, client=self.client_id)
            self._answer_error(command.id, CommandError(ErrorCode.INTERNAL, "internal error"), op)
        self.node.metrics.command(op, result, time.perf_counter() - started)

    def _refuse(self, verdict: int, command_id: int | None, op: Any, label: str) -> None:
        """A command the token bucket refused (PROTOCOL.md §2, §5): 429 with
        ``retry_after``, or the abuse rule's 3006 (server.ratelimit)."""
        node = self.node
        if verdict == ABUSE:
            node.limits.hit("rate_abuse")
            self.disconnect(DisconnectCode.RATE_LIMIT_ABUSE, after=self.limiter.refill_ms)
            return
        node.limits.hit("rate")
        exc = CommandError(ErrorCode.RATE_LIMITED, "rate limited", extra={"retry_after": verdict})
        self._answer_error(command_id, exc, op)
        node.metrics.command(label, "429", 0.0)

    def _answer_error(self, command_id: int | None, exc: CommandError, op: Any) -> None:
        if command_id is not None:
            self.send(reply_error(command_id, exc.code, exc.message, exc.extra))
        else:
            self.send(
                push_error(exc.code, exc.message, op if isinstance(op, str) else None, exc.extra)
            )

    async def _connect(self, cmd: Connect) -> Reply:
        if self.session.state is not State.CONNECTING:
            raise CommandError(ErrorCode.BAD_REQUEST, "already connected")
        node = self.node
        if node.draining:
            raise CommandError(ErrorCode.UNAVAILABLE, "node draining")
        self.identity = node.authenticator.authenticate(cmd.token, time.time())
        self.client_id = secrets.token_urlsafe(12)
        client_meta = None
        if cmd.client_name or cmd.client_version:
            client_meta = {"name": cmd.client_name, "version": cmd.client_version}
        self.info = ClientInfo(self.client_id, self.identity.user, client_meta)
        self.session.to(State.OPEN)
        self.timers.connected(node.clock(), node.config.limits.ping_interval)
        return {
            "client": self.client_id,
            "node": node.node_id,
            "ping": node.config.limits.ping_interval,
            "limits": node.public_limits(),
        }

    def _check_subscribe(self, channel: str, ns: NamespaceConfig) -> None:
        if self.identity.anonymous and not ns.anonymous:
            raise CommandError(ErrorCode.FORBIDDEN, "anonymous clients may not subscribe here")
        if not self.identity.may_subscribe(channel):
            raise CommandError(ErrorCode.FORBIDDEN, "token does not allow this channel")

    async def _subscribe(self, cmd: Subscribe) -> Reply:
        node = self.node
        channel = cmd.channel
        if channel in self.subs:
            raise CommandError(ErrorCode.CONFLICT, "already subscribed")
        if len(self.subs) >= node.config.limits.max_subscriptions:
            node.metrics.limited.labels("max_subscriptions").inc()
            raise CommandError(ErrorCode.FORBIDDEN, "max_subscriptions reached")
        ns = node.namespace(channel)
        self._check_subscribe(channel, ns)
        opts = node.channel_options(channel)
        self.subs[channel] = None  # reserved: a failure below gives it back
        hub = node.hub
        try:
            await hub.acquire(channel)
        except BaseException:
            self.subs.pop(channel, None)
            raise
        try:
            reply: Reply = {"channel": channel}
            after: int | None = None
            if opts.has_history:
                hub.buffer(self, channel)
                if cmd.recover and cmd.since is not None:
                    rec = await node.broker.recover(channel, cmd.since, options=opts)
                    reply["recovered"] = rec.recovered
                    reply["publications"] = [_pub_wire(p) for p in rec.publications]
                    position = rec.position
                else:
                    position = (await node.broker.history(channel, options=opts, limit=0)).position
                    if cmd.recover:
                        reply["recovered"] = False
                reply["offset"] = position.offset
                reply["epoch"] = position.epoch
                after = position.offset
            if ns.presence and self.info is not None:
                await node.broker.add_presence(channel, self.info)
        except BaseException:
            if channel in self.subs:  # else closed() already released it
                del self.subs[channel]
                hub.release(self, channel)
            raise
        if self.session.state is not State.OPEN:
            return reply  # closed while waiting: closed() released it
        # No await from here on: the reply goes out before any live publication.
        if cmd.id is not None:
            self.send(reply_ok(cmd.id, reply))
        hub.activate(self, channel, after)
        if ns.join_leave and self.info is not None:
            node.spawn(node.broker.publish_join(channel, self.info))
        return None  # type: ignore[return-value]  # already replied

    async def _unsubscribe(self, cmd: Unsubscribe) -> Reply:
        channel = cmd.channel
        if channel not in self.subs:
            raise CommandError(ErrorCode.CONFLICT, "not subscribed")
        del self.subs[channel]
        self.node.hub.release(self, channel)
        await self._leave(channel)
        return {}

    async def _publish(self, cmd: Publish) -> Reply:
        node = self.node
        channel = cmd.channel
        ns = node.namespace(channel)
        if not ns.client_publish:
            raise CommandError(ErrorCode.FORBIDDEN, "clients may not publish here")
        if not self.identity.may_publish(channel):
            raise CommandError(ErrorCode.FORBIDDEN, "token does not allow publishing here")
        if node.draining:
            raise CommandError(ErrorCode.UNAVAILABLE, "node draining")
        if ns.max_publication or ns.publish_rate:
            node.check_publication(channel, ns, cmd.data, client=True)
        position = await node.broker.publish(
            channel, cmd.data, options=node.channel_options(channel), sender=self.info
        )
        if position is None:
            return {}
        return {"offset": position.offset, "epoch": position.epoch}

    async def _presence(self, cmd: Presence) -> Reply:
        if not self.node.namespace(cmd.channel).presence:
            raise CommandError(ErrorCode.NOT_FOUND, "presence is not enabled for this namespace")
        self._check_subscribe(cmd.channel, self.node.namespace(cmd.channel))
        clients = await self.node.broker.presence(cmd.channel)
        return {"clients": {c: {"user": i.user, "info": i.info} for c, i in clients.items()}}

    async def _history(self, cmd: History) -> Reply:
        node = self.node
        opts: ChannelOptions = node.channel_options(cmd.channel)
        if not opts.has_history:
            raise CommandError(ErrorCode.NOT_FOUND, "history is not enabled for this namespace")
        self._check_subscribe(cmd.channel, node.namespace(cmd.channel))
        result = await node.broker.history(
            cmd.channel, options=opts, since=cmd.since, limit=cmd.limit
        )
        return {
            "publications": [_pub_wire(p) for p in result.publications],
            "offset": result.position.offset,
            "epoch": result.position.epoch,
        }

    async def _ping(self, cmd: Ping) -> Reply:
        return {}

    async def _pong(self, cmd: Pong) -> Reply:
        return {}

    async def _refresh(self, cmd: Refresh) -> Reply:
        identity = self.node.authenticator.verify(cmd.token, time.time())
        if not self.identity.anonymous and identity.user != self.identity.user:
            raise CommandError(ErrorCode.FORBIDDEN, "token is for another user")
        self.identity = identity
        return {"expires": identity.expires}


_HANDLERS: dict[type[Command], Callable[[Connection, Any], Awaitable[Reply]]] = {
    Connect: Connection._connect,
    Subscribe: Connection._subscribe,
    Unsubscribe: Connection._unsubscribe,
    Publish: Connection._publish,
    Presence: Connection._presence,
    History: Connection._history,
    Ping: Connection._ping,
    Pong: Connection._pong,
    Refresh: Connection._refresh,
}
_OPS: dict[type[Command], str] = {
    Connect: "connect",
    Subscribe: "subscribe",
    Unsubscribe: "unsubscribe",
    Publish: "publish",
    Presence: "presence",
    History: "history",
    Ping: "ping",
    Pong: "pong",
    Refresh: "refresh",
}
_KNOWN_OPS = frozenset(_OPS.values())
