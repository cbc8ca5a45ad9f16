"""A pipelined command connection: many commands in flight on one connection.

Redis answers the commands of a connection in order, so replies are matched
to callers first-in first-out; every caller waits for its own reply while any
number of others are in flight, and commands queued in one loop iteration
share one write (DESIGN.md "The hot path", point 4). One connection per shard
carries every publish, history read and presence call of the node.

Each new connection first loads the engine's scripts (``preamble``: ``SCRIPT
LOAD``, answered before anything after it), so an ``EVALSHA`` on it never
meets a Redis that lost them (a restart, a failover): the fallback on NOSCRIPT
re-sends a command *after* the ones queued behind it, which would reorder a
connection's publishes.

Commands go on the wire in the order :meth:`Pipe.call` was called, also
while a connection is being opened: a caller arriving then queues behind the
ones waiting for it (one connection carries a client connection's publishes,
whose order Redis numbers them in).

Failure is loud and fast: a broken connection fails every command in flight
with :class:`~cluster.exceptions.BrokerUnavailable` and reports the error (the
shard is then known down and later commands fail at once until a health check
succeeds); a command without a reply after ``timeout`` seconds (checked by the
shard's watchdog through :meth:`Pipe.check`) breaks the connection the same way.

A replicated command (the publish script, when the URL asks for
``min_replicas``) is answered only once Redis ``WAIT`` says enough replicas
hold it. WAIT is sent on the same connection right behind the command (it waits
for the connection's last write), and commits are grouped: while one WAIT is
on the wire, the replicated commands sent after it share the next one, sent as
soon as the first is answered. So one replica round trip acknowledges every
publication of its interval, and one WAIT at most is on the wire.
Fewer replicas than asked within the timeout: 503, "not replicated" (the
command ran on the primary; whether it survives a failover is unknown).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from hubbub.cluster.exceptions import BrokerUnavailable
from hubbub.cluster.redis_conn import (
    NO_REPLICAS,
    ConnectionFactory,
    Replication,
    Writer,
    close_quietly,
    connect,
    pack,
)

_ASKING = pack(b"ASKING")


class _Session:
    """One TCP connection of a pipe and the commands waiting on it."""

    __slots__ = ("acks", "conn", "dead", "later", "pending", "reader", "waiting", "writer")

    def __init__(self, conn: AbstractConnection, name: str) -> None:
        self.conn = conn
        self.dead = False
        # (reply future, when it was queued), in the order of the wire.
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.waiting = False  # a WAIT is on the wire
        self.acks: list[asyncio.Future[int]] = []  # what that WAIT acknowledges
        self.later: list[asyncio.Future[int]] = []  # sent after it: the next WAIT's
        self.writer = Writer(conn, f"{name}-writer")
        self.reader: asyncio.Task[None] | None = None


class Pipe:
    """Request/response over one pipelined connection, reopened on demand.

    At most :attr:`max_in_flight` commands wait at once (DESIGN.md
    "Backpressure": a bounded queue to Redis, 503 when full). ``is_up`` says
    whether the shard is believed reachable: while it is not, no connection is
    attempted and commands fail at once. ``on_error`` hears of every
    connection-level failure.
    """

    #: Commands in flight on the connection before new ones are refused (503).
    max_in_flight: int = 20_000

    def __init__(
        self,
        name: str,
        factory: ConnectionFactory,
        *,
        is_up: Callable[[], bool],
        on_error: Callable[[BaseException], None],
        preamble: tuple[bytes, ...] = (),
        replication: Replication = NO_REPLICAS,
    ) -> None:
        self.name = name
        self._preamble = preamble
        self.replication = replication
        #: Replicas the primary's ``ROLE`` listed at the last health check (for
        #: ``min_replicas=auto``; the shard sets it).
        self.replicas_seen = 0
        self._wait = replication.wait
        self._factory = factory
        self._is_up = is_up
        self._on_error = on_error
        self._session: _Session | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()  # connections being dropped
        #: Callers waiting for a connection to open: later ones queue behind them.
        self._queued = 0

    async def call(self, command: bytes, *, asking: bool = False, replicated: bool = False) -> Any:
        """Send one packed command and return its reply.

        Raises :class:`BrokerUnavailable` when the shard is down or the
        connection breaks before the reply; an error reply raises its
        ``ResponseError``. With ``asking`` the command follows an ``ASKING`` in
        the same write (a Redis Cluster ASK redirect; its ``OK`` is dropped).
        With ``replicated`` the reply is returned once ``WAIT`` counted
        :attr:`replication`'s replicas (503 when fewer answered in time; with
        ``min_replicas=auto``, none while :attr:`replicas_seen` is 0).
        """
        if not self._is_up():
            raise BrokerUnavailable("redis unreachable")
        session = self._session
        if session is None or session.dead or self._queued:
            # In line behind those already waiting (the lock is FIFO), so commands
            # go out in the order they were made even while a connection opens.
            self._queued += 1
            try:
                session = await self._open()
            finally:
                self._queued -= 1
        if len(session.pending) >= self.max_in_flight:
            raise BrokerUnavailable("too many commands waiting for redis")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if asking:
            ok: asyncio.Future[Any] = loop.create_future()
            ok.add_done_callback(_ignore)
            session.pending.append((ok, loop.time()))
            command = _ASKING + command
        session.pending.append((future, loop.time()))
        session.writer.send(command)
        wanted = self.replication.wanted(self.replicas_seen) if replicated else 0
        if not wanted:
            return await future
        ack = self._acknowledgement(session)
        try:
            reply = await future
        except BaseException:
            ack.add_done_callback(_ignore)
            raise
        try:
            replicas = await ack
        except ResponseError as exc:  # "WAIT cannot be used with replica instances", ...
            raise BrokerUnavailable(f"not replicated: WAIT answered {exc}") from exc
        if replicas < wanted:
            raise BrokerUnavailable(
                f"not replicated: {replicas} of {wanted} replicas acknowledged"
                f" within {self.replication.timeout_ms} ms"
            )
        return reply

    def _acknowledgement(self, session: _Session) -> asyncio.Future[int]:
        """The future of the WAIT that covers the command just sent: a new WAIT
        now, or the next one when a WAIT is already on the wire."""
        ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if session.waiting:
            session.later.append(ack)
        else:
            session.acks.append(ack)
            self._send_wait(session)
        return ack

    def _send_wait(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        reply.add_done_callback(lambda done: self._waited(session, done))
        session.waiting = True
        session.pending.append((reply, loop.time()))
        session.writer.send(self._wait)

    def _waited(self, session: _Session, reply: asyncio.Future[Any]) -> None:
        """A WAIT was answered: settle what it covered, send the next one if due."""
        acks, session.acks, session.later = session.acks, session.later, []
        session.waiting = False
        error = reply.exception() if not reply.cancelled() else ConnectionError("pipe closed")
        for ack in acks:
            if not ack.done():
                if error is None:
                    ack.set_result(reply.result())
                else:
                    ack.set_exception(error)
        if session.acks and not session.dead:
            self._send_wait(session)

    async def _open(self) -> _Session:
        async with self._lock:
            session = self._session
            if session is not None and not session.dead:
                return session
            if self._closed:
                raise BrokerUnavailable("broker closed")
            if not self._is_up():
                raise BrokerUnavailable("redis unreachable")
            conn = self._factory()
            try:
                await connect(conn)
            except Exception as exc:
                self._on_error(exc)
                raise BrokerUnavailable("redis unreachable") from exc
            session = self._session = _Session(conn, self.name)
            session.reader = asyncio.get_running_loop().create_task(
                self._read(session), name=f"{self.name}-reader"
            )
            session.writer.task.add_done_callback(lambda t: self._writer_done(session, t))
            now = asyncio.get_running_loop().time()
            for command in self._preamble:  # ahead of every command (module doc)
                done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                done.add_done_callback(_ignore)
                session.pending.append((done, now))
                session.writer.send(command)
            return session

    async def _read(self, session: _Session) -> None:
        conn = session.conn
        pending = session.pending
        try:
            while True:
                try:
                    reply = await conn.read_response(timeout=math.inf)
                except ResponseError as exc:  # an error reply: the connection is fine
                    reply = exc
                if not pending:
                    raise ConnectionError("a reply nobody asked for")
                future = pending.popleft()[0]
                if not future.done():
                    if isinstance(reply, ResponseError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except asyncio.CancelledError:
            self._fail(session, ConnectionError("pipe closed"))
            raise
        except Exception as exc:
            self._fail(session, exc)

    def _writer_done(self, session: _Session, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self._fail(session, ConnectionError("pipe closed"))
        else:
            self._fail(session, task.exception() or ConnectionError("writer ended"))

    def _fail(self, session: _Session, exc: BaseException) -> None:
        """Break ``session``: fail its waiting commands, drop the connection."""
        if session.dead:
            return
        session.dead = True
        if self._session is session:
            self._session = None
        session.writer.stop()
        if session.reader is not None and session.reader is not asyncio.current_task():
            session.reader.cancel()
        pending = [*session.pending, *((ack, 0.0) for ack in session.acks + session.later)]
        session.pending.clear()
        session.acks, session.later = [], []
        for future, _ in pending:
            if not future.done():
                error = BrokerUnavailable("redis connection lost")
                error.__cause__ = exc
                future.set_exception(error)
        closing = asyncio.get_running_loop().create_task(close_quietly(session.conn))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        if not self._closed:
            self._on_error(exc)

    def check(self, now: float, timeout: float) -> None:
        """Watchdog: break the connection when its oldest command waited over ``timeout``."""
        session = self._session
        if session is not None and session.pending and now - session.pending[0][1] > timeout:
            self._fail(session, TimeoutError(f"no reply from redis in {timeout} s"))

    def abort(self, reason: str) -> None:
        """Break the connection now (the shard was found unreachable): what
        waits fails with 503 instead of waiting for the watchdog."""
        session = self._session
        if session is not None:
            self._fail(session, ConnectionError(reason))

    @property
    def in_flight(self) -> int:
        session = self._session
        return 0 if session is None else len(session.pending)

    async def close(self) -> None:
        """Fail what waits and drop the connection; later calls fail. Idempotent."""
        self._closed = True
        session = self._session
        if session is not None:
            self._fail(session, ConnectionError("pipe closed"))
            await close_quietly(session.conn)


def _ignore(future: asyncio.Future[Any]) -> None:
    """Retrieve the result nobody awaits (the ``OK`` of an ``ASKING``)."""
    if not future.cancelled():
        future.exception()
