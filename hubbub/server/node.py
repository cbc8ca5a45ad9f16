"""The node: listeners, connections, the flush scheduler, timers and draining.

Shutdown is a straight line (after hypercorn, DESIGN.md "Draining"): close the
client listeners (the admin one stays up until the end) → ``/readyz`` 503 →
``disconnect`` 3001 to every client with an ``after`` spread over the drain
window → let buffers flush → at ``drain_timeout`` abort the rest → close the
broker. A second signal aborts at once.

Connection limits, the per-channel publish buckets, limit reporting and
SIGHUP reloads are also the node's (docs/limits.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import secrets
import ssl
import time
from collections.abc import Coroutine
from typing import Any

from hubbub.cluster.broker import Broker, ChannelOptions
from hubbub.protocol.channels import namespace_of
from hubbub.protocol.codes import DisconnectCode, ErrorCode
from hubbub.protocol.errors import CommandError
from hubbub.server import log, reload, tls
from hubbub.server.auth import Authenticator
from hubbub.server.config import Config, ConfigError, NamespaceConfig, parse_address
from hubbub.server.connection import Connection
from hubbub.server.hub import Hub
from hubbub.server.limits import (
    ChannelRates,
    LimitReporter,
    connection_limit_after,
    publication_size,
)
from hubbub.server.metrics import Metrics, Stats
from hubbub.server.wire import Format

#: Listeners closed at the start of a drain; the admin listener stays up so
#: ``/readyz`` can answer 503 (PROTOCOL.md §7) until the node stops.
CLIENT_LISTENERS = ("tcp", "ws")


class Node:
    """One hubbub process: everything a client reaches."""

    def __init__(self, config: Config, broker: Broker) -> None:
        self.config = config
        self.broker = broker
        self.node_id = config.server.node_id or secrets.token_hex(4)
        self.stats = Stats()
        self.hub = Hub(broker, self.stats)
        self.metrics = Metrics(self.stats, self._gauges)
        self.authenticator = Authenticator(config.auth)
        self.connections: dict[Connection, None] = {}
        self.lagging: set[Connection] = set()
        self.draining = False
        self.started_at = time.time()
        self.addresses: dict[str, tuple[str, int]] = {}
        self.limits = LimitReporter(self.metrics.limited)
        self.channel_rates = ChannelRates()
        self.counted = 0  # connections counted against max_connections
        self.per_ip: dict[str, int] = {}  # counted connections by peer address
        self.tls: ssl.SSLContext | None = None
        self._servers: dict[str, asyncio.Server] = {}
        self._policies: dict[str, str] = {}
        self._stopping = False
        self._dirty: list[Connection] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._roots: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._options: dict[str, ChannelOptions] = {}
        self._stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.clock = self._loop.time

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start the broker and bind every listener; raises OSError on a busy port
        and ConfigError when the TLS files cannot be loaded."""
        from hubbub.server.admin import serve_admin
        from hubbub.server.tcp import serve_tcp
        from hubbub.server.ws import serve_ws

        s = self.config.server
        if s.tls_cert:
            self.tls = tls.server_context(s.tls_cert, s.tls_key)
        await self.broker.start(self.hub)
        handlers = {"tcp": serve_tcp, "ws": serve_ws, "admin": serve_admin}
        try:
            for name in ("tcp", "ws", "admin"):
                address = parse_address(getattr(s, name), f"[server] {name}")
                if address is None:
                    continue
                handler = handlers[name]

                async def on_client(reader: Any, writer: Any, _h: Any = handler) -> None:
                    await _h(self, reader, writer)

                secure = self.tls if name in CLIENT_LISTENERS else None
                server = await asyncio.start_server(
                    on_client,
                    address[0],
                    address[1],
                    limit=2**16,
                    backlog=4096,
                    ssl=secure,
                    ssl_handshake_timeout=(
                        self.config.limits.handshake_timeout if secure else None
                    ),
                )
                self._servers[name] = server
                sock = server.sockets[0].getsockname()
                self.addresses[name] = (sock[0], sock[1])
        except OSError:
            await self._close_servers()
            await self.broker.close()
            raise
        self.broker.describe_node(self.describe)
        self._sweeper = self._loop.create_task(self._sweep())
        log.info(
            "listening",
            node=self.node_id,
            broker=self.broker.name,
            tls="on" if self.tls else "off",
            **{k: f"{h}:{p}" for k, (h, p) in self.addresses.items()},
        )

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _close_servers(self, names: tuple[str, ...] = ("tcp", "ws", "admin")) -> None:
        for name in names:
            server = self._servers.pop(name, None)
            if server is not None:
                server.close()

    async def drain(self) -> None:
        """Drain on SIGTERM/SIGINT (PROTOCOL.md §7), then stop. Idempotent."""
        if self.draining:
            return
        self.draining = True
        await self._close_servers(CLIENT_LISTENERS)
        window = self.config.limits.drain_timeout
        log.info("draining", clients=len(self.connections), drain_timeout=window)
        # Publications the broker accepted before the signal may still be on
        # their way back (Redis pub/sub): let them reach the connections first,
        # so they are queued ahead of the disconnect push.
        await self.broker.settle(timeout=min(1.0, window))
        for conn in list(self.connections):
            conn.flush()
            conn.disconnect(
                DisconnectCode.DRAINING,
                after=int(random.uniform(0, window) * 1000),
                abort_after=-1,
            )
        # Wait for what is queued in the node to reach the kernel; the kernel
        # delivers the rest (and the FIN) after the sockets are closed.
        deadline = self.clock() + window
        while self._unflushed() and self.clock() < deadline:
            await asyncio.sleep(0.05)
        await self.stop()

    def _unflushed(self) -> bool:
        return any(c.transport.get_write_buffer_size() for c in self.connections)

    async def stop(self) -> None:
        """Close every connection — flushed ones cleanly, the rest aborted —
        close the broker, and stop. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self.draining = True
        await self._close_servers()
        for conn in list(self.connections):
            transport = conn.transport
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()
            conn.closed()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        try:
            await self.broker.close()
        finally:
            log.info("stopped", node=self.node_id)
            self._stopped.set()

    # -- connections -----------------------------------------------------------

    def accept(self, transport: asyncio.Transport, kind: str, fmt: Format) -> Connection:
        """Register a new connection. It counts against ``max_connections`` and
        ``max_connections_per_ip`` when both have room (``conn.counted``); else
        its transport refuses it with :meth:`refuse` (TCP at once, WebSocket
        right after the handshake, so browsers see the close code). So is one
        that slipped in while the listeners were closing for a drain."""
        peer = transport.get_extra_info("peername")
        ip = peer[0] if peer else ""
        conn = Connection(self, transport, kind, fmt, ip)
        self.connections[conn] = None
        if self.draining:
            return conn
        lim = self.config.limits
        if lim.max_connections and self.counted >= lim.max_connections:
            self.limits.hit("max_connections")
            return conn
        per_ip = self.per_ip
        count = per_ip.get(ip, 0)
        if lim.max_connections_per_ip and count >= lim.max_connections_per_ip:
            self.limits.hit("max_connections_per_ip")
            return conn
        per_ip[ip] = count + 1
        self.counted += 1
        conn.counted = True
        return conn

    def refuse(self, conn: Connection) -> None:
        """Turn away a connection :meth:`accept` did not count: 3007 (PROTOCOL.md
        §5) over a connection limit, 3001 while draining."""
        if self.draining:
            after = int(random.uniform(0, self.config.limits.drain_timeout) * 1000)
            conn.disconnect(DisconnectCode.DRAINING, after=after, abort_after=1.0)
            return
        conn.disconnect(
            DisconnectCode.CONNECTION_LIMIT, after=connection_limit_after(), abort_after=1.0
        )

    def forget(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        del self.connections[conn]
        if conn.counted:
            conn.counted = False
            self.counted -= 1
            left = self.per_ip.get(conn.peer, 1) - 1
            if left > 0:
                self.per_ip[conn.peer] = left
            else:
                self.per_ip.pop(conn.peer, None)

    def mark_dirty(self, conn: Connection) -> None:
        """``conn`` has output: flush it at the end of this loop iteration."""
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run background work tied to the node's lifetime; errors are logged."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def spawn_root(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run node-lifecycle work (drain, stop) that ``stop`` must not cancel."""
        task = self._loop.create_task(coro)
        self._roots.add(task)
        task.add_done_callback(self._roots.discard)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background_task_failed", error=repr(task.exception()))

    async def _sweep(self) -> None:
        while True:
            limits = self.config.limits  # re-read: SIGHUP may have changed it
            period = min(
                1.0, limits.handshake_timeout / 4, limits.ping_interval / 4, limits.ping_timeout / 4
            )
            await asyncio.sleep(period)
            try:
                self._sweep_once(self.clock())
            except Exception:  # a bug here must not stop keepalive for everyone
                log.error("sweep_failed", exc_info=True)

    def _sweep_once(self, now: float) -> None:
        """Timers of every connection, late ``lag`` pushes, limit reports."""
        limits = self.config.limits
        for conn in list(self.connections):
            conn.tick(now)
        self.limits.report(now)
        self.channel_rates.prune(now)
        if self.lagging:
            half = limits.outbound_buffer // 2
            for conn in list(self.lagging):
                if not conn.dropped or not conn.writable:
                    self.lagging.discard(conn)
                elif conn.transport.get_write_buffer_size() <= half:
                    self.lagging.discard(conn)
                    conn.send_lag()

    # -- configuration views ---------------------------------------------------

    def namespace(self, channel: str) -> NamespaceConfig:
        return self.config.namespace(namespace_of(channel))

    def channel_options(self, channel: str) -> ChannelOptions:
        name = namespace_of(channel)
        opts = self._options.get(name)
        if opts is None:
            ns = self.config.namespace(name)
            opts = self._options[name] = ChannelOptions(
                history_size=ns.history_size,
                history_ttl=ns.history_ttl,
                presence=ns.presence,
                join_leave=ns.join_leave,
            )
        return opts

    def slow_consumer_policy(self, channel: str) -> str:
        """The namespace's ``slow_consumer``, else ``[limits] slow_consumer``
        (called only when a client's buffer overflows, never per delivery)."""
        name = namespace_of(channel)
        policy = self._policies.get(name)
        if policy is None:
            own = self.config.namespace(name).slow_consumer
            policy = self._policies[name] = own or self.config.limits.slow_consumer
        return policy

    def check_publication(
        self, channel: str, ns: NamespaceConfig, data: Any, *, client: bool
    ) -> None:
        """A namespace's limits on one publication: ``max_publication`` (413) for
        everyone, ``publish_rate`` (429 with ``retry_after``) for clients."""
        if ns.max_publication and publication_size(data) > ns.max_publication:
            self.limits.hit("max_publication")
            raise CommandError(
                ErrorCode.TOO_LARGE,
                "publication too large",
                extra={"max_publication": ns.max_publication},
            )
        if client and ns.publish_rate:
            wait = self.channel_rates.take(channel, ns.publish_rate, self.clock())
            if wait:
                self.limits.hit("publish_rate")
                raise CommandError(
                    ErrorCode.RATE_LIMITED,
                    "channel publish rate limited",
                    extra={"retry_after": max(1, math.ceil(wait * 1000))},
                )

    def reload(self, config: Config) -> reload.ReloadPlan:
        """Apply what a SIGHUP may change live (server.reload); connections stay."""
        plan = reload.plan(self.config, config)
        old, new = self.config, plan.config
        if new.server.tls_cert and self.tls is not None:
            try:  # validate on a scratch context, then rotate the live one
                tls.server_context(new.server.tls_cert, new.server.tls_key)
                tls.load_chain(self.tls, new.server.tls_cert, new.server.tls_key)
            except ConfigError as exc:
                log.error("reload_tls_failed", error=str(exc))
                new = dataclasses.replace(new, server=old.server)
        self.config = new
        if new.auth != old.auth:
            self.authenticator = Authenticator(new.auth)
        self._policies.clear()
        self._options.clear()
        lim, was = new.limits, old.limits
        if (lim.messages_per_second, lim.message_burst) != (
            was.messages_per_second,
            was.message_burst,
        ):
            now = self.clock()
            for conn in self.connections:
                conn.limiter.configure(lim.messages_per_second, lim.message_burst, now)
        if new.server.log_level != old.server.log_level:
            log.logger.setLevel(new.server.log_level.upper())
        log.info("reloaded", changed=",".join(plan.changed) or "-")
        if plan.needs_restart:
            log.warning("reload_needs_restart", keys=",".join(plan.needs_restart))
        return plan

    def public_limits(self) -> dict[str, Any]:
        lim = self.config.limits
        return {
            "max_frame": lim.max_frame,
            "messages_per_second": lim.messages_per_second,
            "message_burst": lim.message_burst,
            "max_subscriptions": lim.max_subscriptions,
            "outbound_buffer": lim.outbound_buffer,
        }

    @property
    def ready(self) -> bool:
        return not self.draining and self.broker.healthy

    def describe(self) -> dict[str, Any]:
        """This node as the cluster registry shows it (``GET /api/nodes``)."""
        return {
            "address": {k: f"{h}:{p}" for k, (h, p) in self.addresses.items()},
            "connections": len(self.connections),
            "subscriptions": sum(len(c.subs) for c in self.connections),
            "draining": self.draining,
        }

    def _gauges(self) -> dict[str, Any]:
        by_kind: dict[str, int] = {}
        subs = 0
        for conn in self.connections:
            by_kind[conn.kind] = by_kind.get(conn.kind, 0) + 1
            subs += len(conn.subs)
        return {
            "connections": by_kind,
            "subscriptions": subs,
            "channels": len(self.hub.channels),
            "broker_up": 1 if self.broker.healthy else 0,
            "draining": 1 if self.draining else 0,
            "backends": self.broker.backends(),
        }
