"""One Redis shard as the node sees it: commands, pub/sub and health.

A shard has three connections: the pipelined command connection
(:class:`~cluster.redis_pipe.Pipe`), the pub/sub connection
(:class:`~cluster.redis_pubsub.Subscriber`) and a small one for the health
check, all opened through the shard's :class:`~cluster.redis_conn.Endpoint` (one
address, or the primary the sentinels name). The health loop probes (PING; ROLE
behind Sentinel) every :attr:`Shard.health_interval` seconds with
a :attr:`Shard.health_timeout` bound, so an unreachable Redis is known within
about a second (``/readyz`` must say so within 2 s, PROTOCOL.md §6); while it
is known down, commands and subscribes fail at once with 503 instead of
waiting. The same loop runs the command watchdog, and when Redis answers again
it marks the shard up and wakes the pub/sub reader so delivery resumes without
waiting out a backoff.

The probe loop (when ``probe_interval`` > 0) is the pub/sub side's watchdog:
every ``probe_interval`` it PUBLISHes a probe on the node's own probe channel
through the command pipe and the subscriber drops its connection when one is
not back within ``probe_timeout`` (:mod:`cluster.redis_probe`); ``healthy`` is
False from then until a probe comes back.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import (
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from hubbub import log
from hubbub.cluster.broker import BrokerHandler
from hubbub.cluster.exceptions import BrokerUnavailable
from hubbub.cluster.redis_conn import (
    Endpoint,
    Supervised,
    close_quietly,
    connect,
    describe,
    endpoint,
    pack,
    redact,
    replicas_in,
)
from hubbub.cluster.redis_layout import Keys
from hubbub.cluster.redis_pipe import Pipe
from hubbub.cluster.redis_probe import Probe
from hubbub.cluster.redis_pubsub import Subscriber
from hubbub.cluster.redis_scripts import ALL, Script

#: Error replies that mean "not now" (503), not a bug (500).
_UNAVAILABLE = (OutOfMemoryError, ReadOnlyError, MasterDownError, TryAgainError)


class Backend(Protocol):
    """Where the commands of some keys go, as presence, the node registry and
    the engine use it: a :class:`Shard`, or a route to a Redis Cluster slot."""

    @property
    def label(self) -> str: ...

    @property
    def up(self) -> bool: ...

    async def call(self, *args: bytes | str | int) -> Any: ...

    async def eval(
        self,
        script: Script,
        keys: Sequence[str | bytes],
        args: Sequence[str | bytes | int],
        *,
        replicated: bool = False,
    ) -> Any: ...


class Commands:
    """``call`` and ``eval`` on top of :meth:`execute` (a shard, or a route
    that finds the shard of a Redis Cluster slot)."""

    async def execute(self, command: bytes, *, replicated: bool = False) -> Any:
        raise NotImplementedError

    async def call(self, *args: bytes | str | int) -> Any:
        """Run one command; 503 when the shard is down or the reply is "not now"."""
        return await self.execute(pack(*args))

    async def eval(
        self,
        script: Script,
        keys: Sequence[str | bytes],
        args: Sequence[str | bytes | int],
        *,
        replicated: bool = False,
    ) -> Any:
        """EVALSHA ``script``; on NOSCRIPT (``SCRIPT FLUSH``: a new connection
        loaded it first) EVAL it, which caches it again. ``replicated``: answered
        once the URL's ``min_replicas`` hold it (:class:`~cluster.redis_pipe.Pipe`),
        else 503."""
        try:
            return await self.execute(
                pack(b"EVALSHA", script.sha, len(keys), *keys, *args), replicated=replicated
            )
        except NoScriptError:
            return await self.execute(
                pack(b"EVAL", script.source, len(keys), *keys, *args), replicated=replicated
            )


class Shard(Commands):
    """One Redis server of the node's broker (found through its :class:`Endpoint`)."""

    #: The pub/sub side's class (sharded pub/sub on a Redis Cluster primary).
    subscriber_class: type[Subscriber] = Subscriber
    #: How a probe is published (SPUBLISH on a Redis Cluster primary).
    probe_command: bytes = b"PUBLISH"
    #: The scripts its command connection loads first (cluster.redis_pipe).
    scripts: tuple[Script, ...] = ALL

    #: Seconds between health checks.
    health_interval: float = 0.5
    #: Seconds a health check (connect included) may take before Redis counts as down.
    health_timeout: float = 0.75
    #: Seconds a command may wait for its reply before the connection is broken.
    command_timeout: float = 2.0

    def __init__(
        self,
        index: int | str,
        url: str,
        keys: Keys,
        *,
        node_id: str,
        probe_interval: float = 0.0,
        probe_timeout: float = 3.0,
    ) -> None:
        self.index = index
        self.url = url
        self.label = f"{index}:{redact(url)}"
        self.keys = keys
        self.up = False
        self._down_reason = "not checked yet"
        self.endpoint: Endpoint = endpoint(url)
        self.pipe = Pipe(
            f"redis-{index}",
            self.endpoint.factory(f"hubbub-{node_id}-cmd"),
            is_up=self._is_up,
            on_error=self._pipe_error,
            preamble=tuple(pack(b"SCRIPT", b"LOAD", s.source) for s in self.scripts),
            replication=self.endpoint.replication,
        )
        self.subscriber = self.subscriber_class(
            self.label,
            self.endpoint.factory(f"hubbub-{node_id}-sub"),
            keys,
            is_up=self._is_up,
        )
        self.subscriber.probe = Probe(probe_interval, probe_timeout)
        #: What names this node's probe channels (random per process: private).
        self.probe_name = f"{node_id}.{secrets.token_hex(4)}"
        self._probes: set[asyncio.Task[None]] = set()
        self.prober = Supervised(f"redis-{index}-probe", self._probe_loop)
        self._health_factory = self.endpoint.factory(
            f"hubbub-{node_id}-health", socket_timeout=self.health_timeout
        )
        self._health_conn: AbstractConnection | None = None
        self.health = Supervised(f"redis-{index}-health", self._health_loop)

    def _is_up(self) -> bool:
        return self.up

    @property
    def healthy(self) -> bool:
        """Reachable, and the pub/sub connection open and not found deaf."""
        subscriber = self.subscriber
        return self.up and subscriber.connected and not subscriber.deaf

    # -- lifecycle -------------------------------------------------------------

    async def start(self, handler: BrokerHandler) -> None:
        """Check health once (so ``healthy`` is right from the start), then run."""
        await self.check_health()
        if not self.up:
            log.warning("redis_down", shard=self.label, reason=self._down_reason)
        self.subscriber.set_probe_channel(self.first_probe_channel())
        self.subscriber.start(handler)
        self.health.start()
        if self.subscriber.probe.enabled:
            self.prober.start()

    def first_probe_channel(self) -> bytes | None:
        """The probe channel to start with (a Redis Cluster primary's comes from its slots)."""
        return self.keys.probe(self.probe_name)

    async def close(self) -> None:
        await self.prober.stop()
        for task in list(self._probes):
            task.cancel()
        await self.health.stop()
        await self.subscriber.close()
        await self.pipe.close()
        conn, self._health_conn = self._health_conn, None
        await close_quietly(conn)
        await self.endpoint.close()

    # -- commands --------------------------------------------------------------

    async def execute(
        self, command: bytes, *, replicated: bool = False, asking: bool = False
    ) -> Any:
        """Run one packed command (after ``ASKING``: a Redis Cluster ASK redirect;
        ``replicated``: acknowledged by the URL's ``min_replicas``)."""
        try:
            return await self.pipe.call(command, asking=asking, replicated=replicated)
        except _UNAVAILABLE as exc:
            raise BrokerUnavailable(f"redis: {exc}") from exc
        except ResponseError as exc:
            if str(exc).startswith("BUSY"):
                raise BrokerUnavailable(f"redis: {exc}") from exc
            raise

    # -- the delivery probe ----------------------------------------------------

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        subscriber = self.subscriber
        probe = subscriber.probe
        tick = max(0.01, min(probe.interval, probe.timeout) / 4)
        while True:
            await asyncio.sleep(tick)
            seq = subscriber.probe_check(loop.time())
            rch = subscriber.probe_channel
            if seq is not None and rch is not None:
                task = loop.create_task(self._publish_probe(rch, seq))
                self._probes.add(task)
                task.add_done_callback(self._probes.discard)

    async def _publish_probe(self, rch: bytes, seq: int) -> None:
        """PUBLISH one probe; one that fails is not expected back (the command
        side's failures are the health check's to report)."""
        try:
            await self.execute(pack(self.probe_command, rch, b"%d" % seq))
        except Exception as exc:
            self.subscriber.probe.unsent(seq)
            self.probe_failed(exc)

    def probe_failed(self, exc: Exception) -> None:
        """A probe could not be published (a Redis Cluster primary hears of MOVED)."""

    # -- health ----------------------------------------------------------------

    async def _health_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.health_interval)
            await self.check_health()
            self.pipe.check(loop.time(), self.command_timeout)

    async def check_health(self) -> bool:
        """Probe once (PING, or ROLE: :class:`Endpoint`) within :attr:`health_timeout`;
        update :attr:`up`."""
        ok = await self._ping()
        if ok and not self.up:
            self.up = True
            log.info("redis_up", shard=self.label)
            self.subscriber.wake()
        elif not ok and self.up:
            self._mark_down()
        return ok

    async def _ping(self) -> bool:
        conn = self._health_conn
        try:
            async with asyncio.timeout(self.health_timeout):
                if conn is None:
                    conn = self._health_factory()
                    await connect(conn, self.health_timeout)
                    self._health_conn = conn
                await conn.send_packed_command(self.endpoint.probe, check_health=False)
                reply = await conn.read_response()
            wrong = self.endpoint.probe_ok(reply)
            if wrong is not None:
                raise ConnectionError(wrong)
            self.pipe.replicas_seen = replicas_in(reply)
        except Exception as exc:  # refused, reset, timeout, LOADING, ...
            self._down_reason = describe(exc)
            self._health_conn = None
            await close_quietly(conn)
            return False
        return True

    def _pipe_error(self, exc: BaseException) -> None:
        self._down_reason = describe(exc)
        if self.up:
            self._mark_down()

    def _mark_down(self) -> None:
        self.up = False
        log.warning("redis_down", shard=self.label, reason=self._down_reason)
        # Commands in flight on a Redis that stopped answering would wait for the
        # watchdog: fail them now (a killed Redis already broke the connection).
        self.pipe.abort("redis unreachable")
