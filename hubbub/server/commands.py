"""The client's commands (PROTOCOL.md §2): one handler per op, and the table of them.

:meth:`Commands.handle` takes one decoded message from a transport: it parses
it, passes it through the command rate limit (``pong`` never counts), checks
the session state (``connect`` first), runs the op's handler from
:data:`HANDLERS` and sends its reply or error. Transports await each message
before reading the next, so replies go out in the order commands arrived and a
busy connection is not read further (DESIGN.md "Backpressure").

One exception, for throughput: on a broker whose publish waits on a round trip
(``Broker.pipelined``, Redis), a ``publish`` runs as a task and the next
command is read at once, up to :data:`MAX_INFLIGHT` publishes per connection.
A publisher's commands then reach Redis back to back instead of one per round
trip, and their publications come back on the pub/sub connection together, so
one fan-out and one ``send()`` per subscriber carry several of them
(docs/decisions.md). Order is kept: a finished publish's reply waits for the
ones before it, and any other command, or any other reply, waits until every
publish in flight has answered.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from hubbub import log
from hubbub.cluster.broker import Broker, ClientInfo
from hubbub.protocol.codes import DisconnectCode, ErrorCode
from hubbub.protocol.exceptions import CommandError
from hubbub.protocol.messages import (
    Command,
    Connect,
    History,
    Ping,
    Pong,
    Presence,
    Publish,
    Refresh,
    StreamPosition,
    Subscribe,
    Unsubscribe,
    parse_command,
    push_error,
    push_unsubscribe,
    reply_error,
    reply_ok,
)
from hubbub.server.auth import Authenticator
from hubbub.server.config import NamespaceConfig
from hubbub.server.hub import Hub, pub_message
from hubbub.server.lifecycle import Lifecycle
from hubbub.server.limits import Limits
from hubbub.server.metrics import Metrics
from hubbub.server.ratelimit import ABUSE, ADMIT
from hubbub.server.session import State
from hubbub.server.settings import Settings
from hubbub.server.wire import Format, encode_for

#: Bytes of a reply that are not its list (id, keys, offset, epoch, ``more``),
#: kept free when a list is fitted into ``max_frame``.
REPLY_SLACK = 256


def fit(
    messages: list[dict[str, Any]], budget: int, fmt: Format, *, newest: bool = False
) -> tuple[list[dict[str, Any]], bool]:
    """As many of ``messages`` as fit in ``budget`` bytes encoded for ``fmt``
    (from the oldest on, or the newest back with ``newest``), and whether some
    were left out. Replies are bounded by ``max_frame`` this way (docs/limits.md)."""
    order = reversed(messages) if newest else iter(messages)
    kept: list[dict[str, Any]] = []
    used = 0
    for message in order:
        used += len(encode_for(fmt, message))
        if used > budget:
            break
        kept.append(message)
    if newest:
        kept.reverse()
    return kept, len(kept) < len(messages)


if TYPE_CHECKING:
    from hubbub.server.connection import Connection

#: Publishes of one connection in flight at once before it is read further.
MAX_INFLIGHT = 64

Reply = dict[str, Any]
#: A command's handler: the ``ok`` of its reply, or None when it replied itself.
Handler = Callable[["Commands", "Connection", Any], Awaitable[Reply | None]]


class Commands:
    """The handlers of the node's commands, with what they work on passed in."""

    def __init__(
        self,
        *,
        settings: Settings,
        hub: Hub,
        broker: Broker,
        limits: Limits,
        metrics: Metrics,
        authenticator: Authenticator,
        lifecycle: Lifecycle,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        node_id: str,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.broker = broker
        self.limits = limits
        self.metrics = metrics
        self.authenticator = authenticator  # replaced by a reload that changes [auth]
        self.lifecycle = lifecycle
        self.spawn = spawn
        self.node_id = node_id
        self.clock = clock

    # -- dispatch ----------------------------------------------------------

    async def handle(self, conn: Connection, message: dict[str, Any]) -> None:
        """Handle one decoded message from the client."""
        started = time.perf_counter()
        try:
            command = parse_command(message)
        except CommandError as exc:
            await self.settle(conn)
            self._unparsable(conn, message, exc)
            return
        conn.timers.activity()
        op = OPS[type(command)]
        if op != "pong":  # PROTOCOL.md §2: pong never counts against the limit
            verdict = self.limits.command(conn.limiter, self.clock())
            if verdict != ADMIT:
                await self.settle(conn)
                self._refuse(conn, verdict, command.id, op, op)
                return
        else:
            conn.charge_control()  # but against the control budget (server.connection)
        state = conn.session.state
        if state is not State.OPEN and op != "connect":
            if state is State.CONNECTING:
                conn.disconnect(DisconnectCode.PROTOCOL_ERROR, "connect first")
            return
        if self.broker.pipelined and isinstance(command, Publish):
            await self._pipeline(conn, command, started)
            return
        await self.settle(conn)
        result = "ok"
        try:
            ok = await HANDLERS[op](self, conn, command)
            if command.id is not None and ok is not None:
                conn.outbox.send(reply_ok(command.id, ok))
        except CommandError as exc:
            result = str(int(exc.code))
            self._answer_error(conn, command.id, exc, op)
            if op == "connect" and conn.session.state is State.CONNECTING:
                # A refused handshake ends the connection (PROTOCOL.md §5: 401 → 3005);
                # a second connect on an open session only gets its 400.
                code = (
                    DisconnectCode.UNAUTHORIZED
                    if exc.code == ErrorCode.UNAUTHORIZED
                    else DisconnectCode.PROTOCOL_ERROR
                )
                conn.disconnect(code, exc.message)
        except Exception:
            result = "500"
            log.error("command_failed", exc_info=True, op=op, client=conn.client_id)
            internal = CommandError(ErrorCode.INTERNAL, "internal error")
            self._answer_error(conn, command.id, internal, op)
        self.metrics.command(op, result, time.perf_counter() - started)

    # -- publishes in flight (Broker.pipelined) -------------------------------

    async def _pipeline(self, conn: Connection, cmd: Publish, started: float) -> None:
        """Start ``cmd`` and return without waiting for the broker, unless the
        connection already has :data:`MAX_INFLIGHT` publishes in flight."""
        inflight = conn.inflight
        if len(inflight) >= MAX_INFLIGHT:
            await asyncio.wait((inflight[0],))
            self._answer_inflight(conn)
        task = asyncio.get_running_loop().create_task(self._publish_reply(conn, cmd, started))
        inflight.append(task)
        task.add_done_callback(lambda _: self._answer_inflight(conn))

    async def _publish_reply(self, conn: Connection, cmd: Publish, started: float) -> Reply | None:
        """Run one publish; the message to answer it with (None: nothing to send)."""
        result = "ok"
        answer: Reply | None = None
        try:
            ok = await self.publish(conn, cmd)
            if cmd.id is not None:
                answer = reply_ok(cmd.id, ok)
        except CommandError as exc:
            result = str(int(exc.code))
            answer = self._error_message(cmd.id, exc, "publish")
        except Exception:
            result = "500"
            log.error("command_failed", exc_info=True, op="publish", client=conn.client_id)
            internal = CommandError(ErrorCode.INTERNAL, "internal error")
            answer = self._error_message(cmd.id, internal, "publish")
        self.metrics.command("publish", result, time.perf_counter() - started)
        return answer

    @staticmethod
    def _answer_inflight(conn: Connection) -> None:
        """Send the answers of the finished publishes at the head, in order."""
        inflight = conn.inflight
        while inflight and inflight[0].done():
            answer = inflight.pop(0).result()
            if answer is not None and conn.writable:
                conn.outbox.send(answer)

    async def settle(self, conn: Connection) -> None:
        """Wait until every publish in flight on ``conn`` has answered."""
        while conn.inflight:
            await asyncio.wait((conn.inflight[-1],))
            self._answer_inflight(conn)

    def _unparsable(self, conn: Connection, message: dict[str, Any], exc: CommandError) -> None:
        """A message that is not a valid command: 3004 before ``connect``, else a
        400 (which counts against the rate limit like any command)."""
        if conn.session.state is State.CONNECTING:
            conn.disconnect(DisconnectCode.PROTOCOL_ERROR, exc.message)
            return
        bad_op = message.get("op")
        # Bounded metric label values, whatever the client sent as op.
        label = bad_op if isinstance(bad_op, str) and bad_op in HANDLERS else "unknown"
        verdict = self.limits.command(conn.limiter, self.clock())
        if verdict != ADMIT:
            self._refuse(conn, verdict, exc.command_id, bad_op, label)
            return
        self._answer_error(conn, exc.command_id, exc, bad_op)
        self.metrics.command(label, "400", 0.0)

    def _refuse(
        self, conn: Connection, verdict: int, command_id: int | None, op: Any, label: str
    ) -> None:
        """A command the token bucket refused (PROTOCOL.md §2, §5): 429 with
        ``retry_after``, or the abuse rule's 3006 (server.ratelimit)."""
        if verdict == ABUSE:
            conn.disconnect(DisconnectCode.RATE_LIMIT_ABUSE, after=conn.limiter.refill_ms)
            return
        exc = CommandError(ErrorCode.RATE_LIMITED, "rate limited", extra={"retry_after": verdict})
        self._answer_error(conn, command_id, exc, op)
        self.metrics.command(label, "429", 0.0)

    @classmethod
    def _answer_error(
        cls, conn: Connection, command_id: int | None, exc: CommandError, op: Any
    ) -> None:
        conn.outbox.send(cls._error_message(command_id, exc, op))

    @staticmethod
    def _error_message(command_id: int | None, exc: CommandError, op: Any) -> Reply:
        """A failed command's reply, or its ``error`` push when it had no id."""
        if command_id is not None:
            return reply_error(command_id, exc.code, exc.message, exc.extra)
        op_name = op if isinstance(op, str) else None
        return push_error(exc.code, exc.message, op_name, exc.extra)

    # -- leaving -----------------------------------------------------------

    def leave_all(self, conn: Connection) -> None:
        """``conn`` is closing: leave every channel now, presence and ``leave``
        pushes in the background."""
        for channel in conn.subs:
            self.hub.release(conn, channel)
            self.spawn(self._leave(conn, channel))
        conn.subs = {}

    async def _leave(self, conn: Connection, channel: str) -> None:
        ns = self.settings.namespace(channel)
        info = conn.info
        if info is None:
            return
        if ns.presence:
            await self.broker.remove_presence(channel, info.client)
        if ns.join_leave:
            await self.broker.publish_leave(channel, info)

    # -- the handlers ------------------------------------------------------

    async def connect(self, conn: Connection, cmd: Connect) -> Reply:
        if conn.session.state is not State.CONNECTING:
            raise CommandError(ErrorCode.BAD_REQUEST, "already connected")
        if self.lifecycle.draining:
            raise CommandError(ErrorCode.UNAVAILABLE, "node draining")
        limit = self.settings.limits.max_client_name
        for field, value in (("name", cmd.client_name), ("version", cmd.client_version)):
            if value is not None and len(value.encode()) > limit:
                raise CommandError(
                    ErrorCode.BAD_REQUEST,
                    f"client {field} over {limit} bytes",
                    extra={"max_client_name": limit},
                )
        conn.identity = self.authenticator.authenticate(cmd.token, time.time())
        conn.client_id = secrets.token_urlsafe(12)
        client_meta = None
        if cmd.client_name or cmd.client_version:
            client_meta = {"name": cmd.client_name, "version": cmd.client_version}
        conn.info = ClientInfo(conn.client_id, conn.identity.user, client_meta)
        conn.session.to(State.OPEN)
        lim = self.settings.limits
        conn.timers.connected(self.clock(), lim.ping_interval)
        return {
            "client": conn.client_id,
            "node": self.node_id,
            "ping": lim.ping_interval,
            "limits": {
                "max_frame": lim.max_frame,
                "messages_per_second": lim.messages_per_second,
                "message_burst": lim.message_burst,
                "max_subscriptions": lim.max_subscriptions,
                "outbound_buffer": lim.outbound_buffer,
            },
        }

    @staticmethod
    def _check_subscribe(conn: Connection, channel: str, ns: NamespaceConfig) -> None:
        if conn.identity.anonymous and not ns.anonymous:
            raise CommandError(ErrorCode.FORBIDDEN, "anonymous clients may not subscribe here")
        if not conn.identity.may_subscribe(channel):
            raise CommandError(ErrorCode.FORBIDDEN, "token does not allow this channel")

    async def subscribe(self, conn: Connection, cmd: Subscribe) -> Reply | None:
        channel = cmd.channel
        if channel in conn.subs:
            raise CommandError(ErrorCode.CONFLICT, "already subscribed")
        self.limits.check_subscriptions(len(conn.subs))
        ns = self.settings.namespace(channel)
        self._check_subscribe(conn, channel, ns)
        conn.subs[channel] = None  # reserved: a failure below gives it back
        hub = self.hub
        try:
            await hub.acquire(channel)
        except BaseException:
            conn.subs.pop(channel, None)
            raise
        try:
            reply, position = await self._position(conn, cmd)
            if ns.presence and conn.info is not None:
                await self.broker.add_presence(channel, conn.info)
        except BaseException:
            if channel in conn.subs:  # else the close already released it
                del conn.subs[channel]
                hub.release(conn, channel)
            raise
        if conn.session.state is not State.OPEN:
            return reply  # closed while waiting: the close released it
        # No await from here on: the reply goes out before any live publication.
        if cmd.id is not None:
            conn.outbox.send(reply_ok(cmd.id, reply))
        if position is None:
            hub.activate(conn, channel)
        else:  # exactly once: nothing at or below the replied position again
            hub.activate(conn, channel, position.offset, position.epoch)
        if ns.join_leave and conn.info is not None:
            self.spawn(self.broker.publish_join(channel, conn.info))
        return None  # already replied

    async def _position(
        self, conn: Connection, cmd: Subscribe
    ) -> tuple[Reply, StreamPosition | None]:
        """A subscription's reply and the position live delivery starts after: with
        history, what was recovered and the stream position (PROTOCOL.md §4); the
        hub keeps live publications for ``conn`` meanwhile."""
        channel = cmd.channel
        reply: Reply = {"channel": channel}
        opts = self.settings.channel_options(channel)
        if not opts.has_history:
            return reply, None
        self.hub.buffer(conn, channel)
        if cmd.recover and cmd.since is not None:
            rec = await self.broker.recover(channel, cmd.since, options=opts)
            pubs = [pub_message(p) for p in rec.publications]
            budget = self.settings.limits.max_frame - REPLY_SLACK
            pubs, more = fit(pubs, budget, conn.outbox.fmt)
            # What missed does not fit in one reply: the client reloads (history pages).
            reply["recovered"] = rec.recovered and not more
            reply["publications"] = [] if more else pubs
            position = rec.position
        else:
            position = (await self.broker.history(channel, options=opts, limit=0)).position
            if cmd.recover:
                reply["recovered"] = False
        reply["offset"] = position.offset
        reply["epoch"] = position.epoch
        return reply, position

    async def unsubscribe(self, conn: Connection, cmd: Unsubscribe) -> Reply:
        channel = cmd.channel
        if channel not in conn.subs:
            raise CommandError(ErrorCode.CONFLICT, "not subscribed")
        del conn.subs[channel]
        self.hub.release(conn, channel)
        await self._leave(conn, channel)
        return {}

    async def publish(self, conn: Connection, cmd: Publish) -> Reply:
        channel = cmd.channel
        ns = self.settings.namespace(channel)
        if not ns.client_publish:
            raise CommandError(ErrorCode.FORBIDDEN, "clients may not publish here")
        if not conn.identity.may_publish(channel):
            raise CommandError(ErrorCode.FORBIDDEN, "token does not allow publishing here")
        if self.lifecycle.draining:
            raise CommandError(ErrorCode.UNAVAILABLE, "node draining")
        if ns.max_publication or ns.publish_rate:
            self.limits.check_publication(channel, ns, cmd.data, client=True, now=self.clock())
        position = await self.broker.publish(
            channel, cmd.data, options=self.settings.channel_options(channel), sender=conn.info
        )
        if position is None:
            return {}
        return {"offset": position.offset, "epoch": position.epoch}

    async def presence(self, conn: Connection, cmd: Presence) -> Reply:
        ns = self.settings.namespace(cmd.channel)
        if not ns.presence:
            raise CommandError(ErrorCode.NOT_FOUND, "presence is not enabled for this namespace")
        self._check_subscribe(conn, cmd.channel, ns)
        clients = await self.broker.presence(cmd.channel)
        listed = {c: {"user": i.user, "info": i.info} for c, i in clients.items()}
        reply = {"clients": listed}
        if len(encode_for(conn.outbox.fmt, reply)) > self.settings.limits.max_frame - REPLY_SLACK:
            self.limits.hit("reply_size")
            raise CommandError(
                ErrorCode.TOO_LARGE,
                "presence too large for one reply",
                extra={"clients": len(listed)},
            )
        return reply

    async def history(self, conn: Connection, cmd: History) -> Reply:
        opts = self.settings.channel_options(cmd.channel)
        if not opts.has_history:
            raise CommandError(ErrorCode.NOT_FOUND, "history is not enabled for this namespace")
        self._check_subscribe(conn, cmd.channel, self.settings.namespace(cmd.channel))
        result = await self.broker.history(
            cmd.channel, options=opts, since=cmd.since, limit=cmd.limit
        )
        pubs = [pub_message(p) for p in result.publications]
        budget = self.settings.limits.max_frame - REPLY_SLACK
        pubs, more = fit(pubs, budget, conn.outbox.fmt, newest=cmd.since is None)
        if more and not pubs:
            self.limits.hit("reply_size")
            raise CommandError(
                ErrorCode.TOO_LARGE,
                "a publication does not fit in one reply",
                extra={"max_frame": self.settings.limits.max_frame},
            )
        reply: Reply = {
            "publications": pubs,
            "offset": result.position.offset,
            "epoch": result.position.epoch,
        }
        if more:
            reply["more"] = True  # a page: ask again from the last (or first) offset
        return reply

    async def ping(self, conn: Connection, cmd: Ping) -> Reply:
        return {}

    async def pong(self, conn: Connection, cmd: Pong) -> Reply:
        return {}

    async def refresh(self, conn: Connection, cmd: Refresh) -> Reply:
        identity = self.authenticator.verify(cmd.token, time.time())
        if not conn.identity.anonymous and identity.user != conn.identity.user:
            raise CommandError(ErrorCode.FORBIDDEN, "token is for another user")
        conn.identity = identity
        self._recheck(conn)
        return {"expires": identity.expires}

    def _recheck(self, conn: Connection) -> None:
        """After a ``refresh``: every subscription the new token no longer allows
        ends, each with an ``unsubscribe`` push (403) before the reply."""
        for channel in list(conn.subs):
            try:
                self._check_subscribe(conn, channel, self.settings.namespace(channel))
            except CommandError as exc:
                del conn.subs[channel]
                self.hub.release(conn, channel)
                self.spawn(self._leave(conn, channel))
                conn.outbox.send(push_unsubscribe(channel, int(exc.code), exc.message))


#: Which op a parsed command is (``protocol.messages.parse_command`` builds them).
OPS: dict[type[Command], str] = {
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
#: op → its handler: every command a client may send (PROTOCOL.md §2).
HANDLERS: dict[str, Handler] = {
    "connect": Commands.connect,
    "subscribe": Commands.subscribe,
    "unsubscribe": Commands.unsubscribe,
    "publish": Commands.publish,
    "presence": Commands.presence,
    "history": Commands.history,
    "ping": Commands.ping,
    "pong": Commands.pong,
    "refresh": Commands.refresh,
}
