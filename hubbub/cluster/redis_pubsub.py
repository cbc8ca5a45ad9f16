"""One shard's pub/sub connection: SUBSCRIBE on demand, decode, fan in, reconnect.

The node holds one pub/sub connection per shard. :meth:`Subscriber.subscribe`
returns only once Redis confirmed the SUBSCRIBE (a publication made after that
reaches the node); :meth:`Subscriber.unsubscribe` stops delivery at once and
sends UNSUBSCRIBE without waiting. Confirmations are matched by counting the
SUBSCRIBEs sent for each channel on the current connection, so a subscribe,
unsubscribe, subscribe sequence in flight resolves only on the last reply.

The reader task runs forever under :class:`~cluster.redis_conn.Supervised`: a
lost connection is reopened with capped exponential backoff plus jitter (cut
short when the shard's health check sees Redis again), every channel that still
has local subscribers is SUBSCRIBEd again, and each of those gets
``on_gap`` once confirmed, since publications may have been missed meanwhile
(held back until the health check sees the shard up, so that the recovery the
gap starts is not refused: behind Sentinel the reader may reach the new
primary first); meanwhile the channel's publications of the same history are
not delivered, since one would move the subscribers' position past the gap
their recovery must fill (they come from history with the rest). While connected,
consecutive offsets are checked per channel (offset + epoch of the last
publication seen) and a jump is reported with ``on_gap`` too.

Whether the connection still hears anything is the delivery probe's question
(:mod:`cluster.redis_probe`): each connection also SUBSCRIBEs the node's probe
channel, :meth:`Subscriber.probe_check` drops one whose probe is overdue, and
a probe that comes back is taken aside before any routing or offset check.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from hubbub import log
from hubbub.cluster.broker import BrokerHandler
from hubbub.cluster.exceptions import BrokerUnavailable
from hubbub.cluster.redis_conn import (
    ConnectionFactory,
    Supervised,
    Writer,
    backoff,
    close_quietly,
    connect,
    describe,
    pack,
)
from hubbub.cluster.redis_layout import JOIN, LEAVE, Keys, decode, member_of, publication
from hubbub.cluster.redis_probe import Probe
from hubbub.protocol.exceptions import ProtocolViolation

#: Channels per SUBSCRIBE command when re-subscribing after a reconnect.
RESUBSCRIBE_BATCH = 500


class Subscriber:
    """The pub/sub side of one shard (classic pub/sub; the sharded pub/sub of a
    Redis Cluster primary is :class:`~cluster.redis_spubsub.ShardedSubscriber`)."""

    #: The commands and the kinds of push they are answered with.
    SUBSCRIBE = b"SUBSCRIBE"
    UNSUBSCRIBE = b"UNSUBSCRIBE"
    SUBSCRIBED = b"subscribe"
    MESSAGE = b"message"
    #: Channels per SUBSCRIBE command when re-subscribing after a reconnect.
    batch: int = RESUBSCRIBE_BATCH

    #: Seconds a subscribe waits for Redis to confirm before giving up (503).
    subscribe_timeout: float = 3.0

    def __init__(
        self,
        name: str,
        factory: ConnectionFactory,
        keys: Keys,
        *,
        is_up: Callable[[], bool],
    ) -> None:
        self.name = name
        self._factory = factory
        self._keys = keys
        self._is_up = is_up
        self.handler: BrokerHandler | None = None
        self.wanted: dict[str, bytes] = {}  # channel -> pub/sub name, from subscribe to unsubscribe
        self.routes: dict[bytes, str] = {}  # confirmed on the current connection: delivered
        self._outstanding: dict[bytes, int] = {}  # SUBSCRIBEs sent, not yet confirmed
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._lost: set[str] = set()  # routed when a connection was lost: gap once re-confirmed
        # Gaps found while the shard was down, told when up: channel -> the
        # epoch whose live publications are held back meanwhile (None: any).
        self._held_gaps: dict[str, str | None] = {}
        # Epoch of the last publication of earlier connections (``_last`` holds
        # the current one's), filled from ``_last`` when a connection is lost.
        self._epochs: dict[str, str | None] = {}
        self._last: dict[str, tuple[int, str | None]] = {}  # offset, epoch of the last one
        self.conn: AbstractConnection | None = None
        self._writer: Writer | None = None
        self._attached = asyncio.Event()
        self._wake = asyncio.Event()
        #: The delivery probe's bookkeeping (off until the shard sets it).
        self.probe = Probe(0.0, 1.0)
        #: The node's probe channel on this connection (None: not probed).
        self.probe_channel: bytes | None = None
        self._dropping: set[asyncio.Task[None]] = set()
        self._settling: dict[bytes, asyncio.Future[None]] = {}
        self._settle_ids = 0
        #: Successful connections after the first one.
        self.reconnects = 0
        self._connections = 0
        self.reader = Supervised(f"{name}-pubsub", self._run)

    # -- lifecycle -------------------------------------------------------------

    def start(self, handler: BrokerHandler) -> None:
        self.handler = handler
        self.reader.start()

    @property
    def connected(self) -> bool:
        return self.conn is not None

    @property
    def deaf(self) -> bool:
        """A probe went missing and none has come back since."""
        return self.probe.deaf

    @property
    def restarts(self) -> int:
        """How many times the reader task ended and was restarted."""
        return self.reader.restarts

    @property
    def needed(self) -> bool:
        """Whether the connection should be open now (classic pub/sub: always,
        so a dead Redis is noticed; sharded: once a channel is wanted)."""
        return True

    async def wait_connected(self, timeout: float) -> bool:
        if not self.needed:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._attached.wait()
        except TimeoutError:
            return False
        return True

    def wake(self) -> None:
        """Reconnect now if waiting to (Redis was seen again), and report the
        gaps held back while the shard was down."""
        self._wake.set()
        if self._held_gaps and self._is_up():
            held, self._held_gaps = self._held_gaps, {}
            for channel in held:
                last = self._last.pop(channel, None)  # what was held back is not a second gap
                if last is not None:
                    self._epochs[channel] = last[1]
                if channel in self.wanted:
                    self._gap(channel)

    async def close(self) -> None:
        await self.reader.stop()
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.set_exception(BrokerUnavailable("broker closed"))
        self._waiters.clear()
        conn, self.conn = self.conn, None
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        await close_quietly(conn)

    # -- subscriptions ---------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        """Subscribe to ``channel``; returns once Redis confirmed it.

        Raises :class:`BrokerUnavailable` at once while the shard is down, or
        when no confirmation came within :attr:`subscribe_timeout`.
        """
        if not self._is_up():
            raise BrokerUnavailable("redis unreachable")
        rch = self._keys.pubsub(channel)
        self.wanted[channel] = rch
        if rch in self.routes:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(future)
        self._send_subscribe((rch,))
        try:
            async with asyncio.timeout(self.subscribe_timeout):
                await future
        except BaseException as exc:
            waiters = self._waiters.get(channel)
            if waiters is not None:
                if future in waiters:
                    waiters.remove(future)
                if not waiters:
                    del self._waiters[channel]
            if channel not in self._waiters and self.wanted.get(channel) == rch:
                self._forget(channel, rch)
            if isinstance(exc, TimeoutError):
                raise BrokerUnavailable("redis did not confirm the subscription") from None
            raise

    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel`` now; UNSUBSCRIBE is sent, not awaited."""
        rch = self.wanted.get(channel)
        if rch is not None:
            self._forget(channel, rch)

    def _forget(self, channel: str, rch: bytes) -> None:
        del self.wanted[channel]
        self._last.pop(channel, None)
        self._epochs.pop(channel, None)
        self._lost.discard(channel)
        self.routes.pop(rch, None)
        if self._writer is not None:
            self._writer.send(pack(self.UNSUBSCRIBE, rch))

    def _send_subscribe(self, channels: tuple[bytes, ...] | list[bytes]) -> None:
        writer = self._writer
        if writer is None:
            return  # the next connection subscribes to everything wanted
        outstanding = self._outstanding
        for rch in channels:
            outstanding[rch] = outstanding.get(rch, 0) + 1
        writer.send(pack(self.SUBSCRIBE, *channels))

    def _confirmed(self, rch: bytes) -> None:
        """A ``subscribe`` reply: route the channel once its last SUBSCRIBE is confirmed."""
        if rch == self.probe_channel:
            self.probe.listening(asyncio.get_running_loop().time())
            return
        left = self._outstanding.pop(rch, 0) - 1
        if left > 0:
            self._outstanding[rch] = left
            return
        channel = self._keys.channel_of(rch)
        if self.wanted.get(channel) != rch:
            if self._writer is not None:  # unsubscribed meanwhile (or given up): undo
                self._writer.send(pack(self.UNSUBSCRIBE, rch))
            return
        self.routes[rch] = channel
        for future in self._waiters.pop(channel, ()):
            if not future.done():
                future.set_result(None)
        if channel in self._lost:
            self._lost.discard(channel)
            self._gap(channel)

    # -- the reader ------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            while not self.needed:  # a first subscription wakes us
                self._wake.clear()
                await self._wake.wait()
            conn = self._factory()
            try:
                await connect(conn)
                self._connections += 1
                if self._connections > 1:
                    self.reconnects += 1
                    log.info("redis_pubsub_connected", shard=self.name, channels=len(self.wanted))
                attempt = 0
                self._attach(conn)
                await self._read(conn)
            except Exception as exc:
                if attempt == 0:
                    log.warning("redis_pubsub_lost", shard=self.name, error=describe(exc))
            finally:
                await self._detach(conn)
            delay = backoff(attempt)
            attempt += 1
            self._wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _attach(self, conn: AbstractConnection) -> None:
        """Make ``conn`` current and SUBSCRIBE everything wanted (no await: a
        subscribe racing this either is in the snapshot or sends its own)."""
        self.conn = conn
        writer = self._writer = Writer(conn, f"{self.name}-pubsub-writer")
        writer.task.add_done_callback(lambda task: self._writer_done(conn, task))
        self._outstanding.clear()
        self._subscribe_probe()
        channels = list(self.wanted.values())
        for i in range(0, len(channels), self.batch):
            self._send_subscribe(channels[i : i + self.batch])
        self._attached.set()

    def _writer_done(self, conn: AbstractConnection, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and self.conn is conn:
            self._drop(conn)  # a failed write: make the reader fail and reconnect

    def _drop(self, conn: AbstractConnection) -> None:
        """Close ``conn`` under the reader, which then fails and reconnects."""
        task = asyncio.get_running_loop().create_task(close_quietly(conn))
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    async def _detach(self, conn: AbstractConnection) -> None:
        if self.conn is conn:
            self.conn = None
            self._attached.clear()
            if self._writer is not None:
                self._writer.stop()
                self._writer = None
            self._lost.update(self.routes.values())  # held gaps included: told once re-confirmed
            self._held_gaps.clear()
            self.routes.clear()
            self._outstanding.clear()
            for channel, (_, epoch) in self._last.items():
                self._epochs[channel] = epoch
            self._last.clear()
            self.probe.stop()
        await close_quietly(conn)

    async def _read(self, conn: AbstractConnection) -> None:
        message, subscribed = self.MESSAGE, self.SUBSCRIBED
        while True:
            try:
                reply = await conn.read_response(timeout=math.inf)
            except ResponseError as exc:
                self._error_reply(exc)
                continue
            if type(reply) is list:
                kind = reply[0]
                if kind == message:
                    self._dispatch(reply[1], reply[2])
                elif kind == subscribed:
                    self._confirmed(reply[1])
                elif kind == b"pong":
                    if self._settling and len(reply) > 1:
                        self._settled(reply[1])
                else:
                    self._other_push(reply)
            elif self._settling and type(reply) is bytes:
                self._settled(reply)  # PING <token> while subscribed to nothing

    def _error_reply(self, exc: ResponseError) -> None:
        """An error reply on the connection: unexpected here, so it is dropped
        and reopened (the sharded subscriber handles ``MOVED``)."""
        raise exc

    def _other_push(self, reply: list[object]) -> None:
        """A push the reader has no use for (``unsubscribe`` confirmations)."""

    def _settled(self, token: bytes) -> None:
        future = self._settling.pop(token, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def settle(self, timeout: float) -> None:
        """Return once every message Redis published before this call has been
        read and dispatched: a PING on the pub/sub connection is answered after
        them (used when draining). Gives up quietly after ``timeout``."""
        writer = self._writer
        if writer is None:
            return
        self._settle_ids += 1
        token = b"hubbub-settle-%d" % self._settle_ids
        future = asyncio.get_running_loop().create_future()
        self._settling[token] = future
        writer.send(pack(b"PING", token))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            log.warning("redis_settle_timeout", shard=self.name)
        finally:
            self._settling.pop(token, None)

    def _dispatch(self, rch: bytes, payload: bytes) -> None:
        """One message of a subscribed channel: decode once, hand to the node."""
        channel = self.routes.get(rch)
        handler = self.handler
        if channel is None or handler is None:
            if rch == self.probe_channel:
                self._probe_back(payload)
            return  # unsubscribed meanwhile
        try:
            message = decode(payload)
            kind = message.get("k")
            if kind is None:
                offset = message.get("o")
                epoch = message.get("e")
                if offset is not None:
                    if self._held_gaps and self._held_back(channel, epoch):
                        return
                    last = self._last.get(channel)
                    self._last[channel] = (offset, epoch)
                    if last is not None and (
                        offset != last[0] + 1 if epoch == last[1] else offset != 1
                    ):
                        self._gap(channel)
                handler.on_publication(publication(channel, message, offset, epoch))
            elif kind == JOIN:
                handler.on_join(channel, member_of(message))
            elif kind == LEAVE:
                handler.on_leave(channel, member_of(message))
        except ProtocolViolation:
            log.warning("redis_bad_message", shard=self.name, channel=channel)
        except Exception:
            log.error("handler_failed", exc_info=True, shard=self.name, channel=channel)

    def _held_back(self, channel: str, epoch: str | None) -> bool:
        """Whether a publication of ``channel`` waits for the gap its subscribers
        are owed (told once the shard is up): they will recover from their last
        position, and a live one of the same history now would move that
        position past the publications the recovery must bring (they come from
        history with the rest). One of a new history (Redis came back empty)
        is delivered: that recovery is refused anyway."""
        if channel not in self._held_gaps:
            return False
        held = self._held_gaps[channel]
        return held is None or held == epoch

    def _gap(self, channel: str) -> None:
        handler = self.handler
        if handler is None:
            return
        if not self._is_up():
            # Re-subscribed before the health check saw Redis again: subscribers
            # told now would recover from a history the node still refuses (503),
            # so they are told once the shard is up (:meth:`wake`).
            last = self._last.get(channel)
            self._held_gaps[channel] = last[1] if last is not None else self._epochs.get(channel)
            return
        try:
            handler.on_gap(channel)
        except Exception:
            log.error("handler_failed", exc_info=True, shard=self.name, channel=channel)

    # -- the delivery probe (cluster.redis_probe) ------------------------------

    def set_probe_channel(self, rch: bytes | None) -> None:
        """Probe this connection on ``rch`` from now on (None: not at all); a
        Redis Cluster primary's changes with the slots it owns."""
        if rch == self.probe_channel:
            return
        old, self.probe_channel = self.probe_channel, rch
        if old is not None and self._writer is not None:
            self._writer.send(pack(self.UNSUBSCRIBE, old))
        if rch is None:
            self.probe.reset()
        else:
            self._subscribe_probe()

    def _subscribe_probe(self) -> None:
        rch, writer = self.probe_channel, self._writer
        if rch is None or writer is None or not self.probe.enabled:
            return
        self.probe.start(asyncio.get_running_loop().time())
        writer.send(pack(self.SUBSCRIBE, rch))

    def _probe_back(self, payload: bytes) -> None:
        try:
            seq = int(payload)
        except ValueError:
            return
        self.probe.seen(seq, asyncio.get_running_loop().time())

    def probe_check(self, now: float) -> int | None:
        """Called by the shard's probe loop: drop the connection when its probe
        (or its probe channel's confirmation) is overdue; else the number of
        the probe to publish now, if one is due."""
        conn, probe = self.conn, self.probe
        if conn is None or self.probe_channel is None:
            return None
        if probe.missing(now):
            log.warning("redis_pubsub_deaf", shard=self.name, timeout=probe.timeout)
            probe.missed()
            self._drop(conn)
            return None
        if probe.due(now):
            return probe.sent(now)
        return None
