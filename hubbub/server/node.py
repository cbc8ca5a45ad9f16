"""The node: its parts wired together, its listeners, and its lifecycle.

The node builds its parts — settings, limits, admission, outboxes, hub,
commands — and passes each the collaborators it needs (DESIGN.md: never
reached through the node). What is left here is the node's own life, a state
table (``server.lifecycle``): start → run → drain → stop, the registry of
connections, the sweeper that runs their timers, and SIGHUP reloads.

Shutdown is a straight line (after hypercorn, DESIGN.md "Draining"): close the
client listeners (the admin one stays up until the end) → ``/readyz`` 503 →
``disconnect`` 3001 to every client with an ``after`` spread over the drain
window → let buffers flush → at ``drain_timeout`` abort the rest → close the
broker. A second signal aborts at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import resource
import secrets
import ssl
import time
from collections.abc import Coroutine
from typing import Any

from hubbub import log
from hubbub.cluster.broker import Broker
from hubbub.protocol.codes import DisconnectCode
from hubbub.server import reload, tls
from hubbub.server.admission import Admission
from hubbub.server.auth import Authenticator
from hubbub.server.commands import Commands
from hubbub.server.config import Config, parse_address
from hubbub.server.connection import Connection, Goodbye, Services
from hubbub.server.exceptions import ConfigError
from hubbub.server.hub import Hub
from hubbub.server.lifecycle import Lifecycle, NodeState
from hubbub.server.limits import Limits
from hubbub.server.metrics import Metrics, Stats
from hubbub.server.outbox import Outboxes
from hubbub.server.settings import Settings
from hubbub.server.wire import Format

#: Listeners closed at the start of a drain; the admin listener stays up so
#: ``/readyz`` can answer 503 (PROTOCOL.md §7) until the node stops.
CLIENT_LISTENERS = ("tcp", "ws")


class Node:
    """One hubbub process: everything a client reaches."""

    def __init__(self, config: Config, broker: Broker) -> None:
        self.broker = broker
        self.node_id = config.server.node_id or secrets.token_hex(4)
        self.settings = Settings(config)
        self.lifecycle = Lifecycle()
        self.stats = Stats()
        self.hub = Hub(broker, self.stats, self.settings.write_delay)
        self.metrics = Metrics(self.stats, self._gauges)
        self.limits = Limits(self.metrics.limited, self.settings)
        self.admission = Admission(self.settings, self.limits, self.lifecycle)
        self._loop = asyncio.get_running_loop()
        self.clock = self._loop.time
        self.admission.clock = self.clock
        self.outboxes = Outboxes(self.settings, self.limits, self.stats, self._loop)
        self.commands = Commands(
            settings=self.settings,
            hub=self.hub,
            broker=broker,
            limits=self.limits,
            metrics=self.metrics,
            authenticator=Authenticator(config.auth),
            lifecycle=self.lifecycle,
            spawn=self.spawn,
            node_id=self.node_id,
            clock=self.clock,
        )
        self.services = Services(
            settings=self.settings,
            outboxes=self.outboxes,
            limits=self.limits,
            metrics=self.metrics,
            stats=self.stats,
            admission=self.admission,
            commands=self.commands,
            clock=self.clock,
            accept=self.accept,
            forget=self.forget,
        )
        self.connections: dict[Connection, None] = {}
        self.admin_connections = 0  # open admin HTTP connections (server.admin)
        self.started_at = time.time()
        self.addresses: dict[str, tuple[str, int]] = {}
        self.tls: ssl.SSLContext | None = None
        self._servers: dict[str, asyncio.Server] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._roots: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    @property
    def config(self) -> Config:
        """The running configuration (``Settings.config``; a reload replaces it)."""
        return self.settings.config

    @property
    def draining(self) -> bool:
        """From the first signal on (``server.lifecycle``)."""
        return self.lifecycle.draining

    @property
    def ready(self) -> bool:
        return not self.lifecycle.draining and self.broker.healthy

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start the broker and bind every listener; raises OSError on a busy port
        and ConfigError when the TLS files cannot be loaded."""
        s = self.config.server
        if s.tls_cert:
            self.tls = tls.server_context(s.tls_cert, s.tls_key)
        await self.broker.start(self.hub)
        try:
            await self._listen()
        except OSError:
            await self._close_servers()
            await self.broker.close()
            raise
        self._count_files()
        self.lifecycle.to(NodeState.RUNNING)
        await self.broker.describe_node(self.describe)
        self._sweeper = self._loop.create_task(self._sweep())
        log.info(
            "listening",
            node=self.node_id,
            broker=self.broker.name,
            tls="on" if self.tls else "off",
            **{k: f"{h}:{p}" for k, (h, p) in self.addresses.items()},
        )

    def _count_files(self) -> None:
        """Give admission the open-files limit and a cheap count of the open
        files: those open now (listeners, broker, logs) plus one per client and
        admin connection (server.admission refuses clients near the limit)."""
        try:
            base = len(os.listdir("/proc/self/fd"))
        except OSError:
            return  # no /proc: not checked
        self.admission.file_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.admission.open_files = lambda: base + len(self.connections) + self.admin_connections

    async def _listen(self) -> None:
        """Bind the configured listeners: TCP and WebSocket (over TLS when set), admin."""
        from hubbub.server.admin import serve_admin
        from hubbub.server.tcp import serve_tcp
        from hubbub.server.ws import serve_ws

        s = self.config.server
        services = self.services

        async def tcp(reader: Any, writer: Any) -> None:
            await serve_tcp(services, reader, writer)

        async def ws(reader: Any, writer: Any) -> None:
            await serve_ws(services, reader, writer)

        async def admin(reader: Any, writer: Any) -> None:
            try:
                await serve_admin(self, reader, writer)
            except asyncio.CancelledError:
                # The node stopped and the loop cancels what is left (a
                # keep-alive connection of a scraper or a health checker): it
                # ends with the node, not as an error-level traceback.
                writer.transport.abort()

        handlers = {"tcp": tcp, "ws": ws, "admin": admin}
        for name in ("tcp", "ws", "admin"):
            address = parse_address(getattr(s, name), f"[server] {name}")
            if address is None:
                continue
            secure = self.tls if name in CLIENT_LISTENERS else None
            server = await asyncio.start_server(
                handlers[name],
                address[0],
                address[1],
                limit=2**16,
                backlog=4096,
                ssl=secure,
                ssl_handshake_timeout=(self.config.limits.handshake_timeout if secure else None),
            )
            self._servers[name] = server
            sock = server.sockets[0].getsockname()
            self.addresses[name] = (sock[0], sock[1])

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _close_servers(self, names: tuple[str, ...] = ("tcp", "ws", "admin")) -> None:
        for name in names:
            server = self._servers.pop(name, None)
            if server is not None:
                server.close()

    async def drain(self) -> None:
        """Drain on SIGTERM/SIGINT (PROTOCOL.md §7), then stop. Idempotent."""
        if self.lifecycle.draining:
            return
        self.lifecycle.to(NodeState.DRAINING)
        await self._close_servers(CLIENT_LISTENERS)
        window = self.config.limits.drain_timeout
        log.info("draining", clients=len(self.connections), drain_timeout=window)
        # Publications the broker accepted before the signal may still be on
        # their way back (Redis pub/sub): let them reach the connections first,
        # so they are queued ahead of the disconnect push.
        await self.broker.settle(timeout=min(1.0, window))
        for conn in list(self.connections):
            conn.outbox.flush()
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
        if self.lifecycle.state in (NodeState.STOPPING, NodeState.STOPPED):
            return
        self.lifecycle.to(NodeState.STOPPING)
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
            self.lifecycle.to(NodeState.STOPPED)
            self._stopped.set()

    # -- connections -----------------------------------------------------------

    def accept(
        self, transport: asyncio.Transport, kind: str, fmt: Format, goodbye: Goodbye
    ) -> Connection:
        """Register a connection on a new transport. Its transport asks
        ``server.admission`` to admit it once it knows the client's address (at
        once, or after a trusted proxy said it) and refuses one that is not."""
        conn = Connection(self.services, transport, kind, fmt, goodbye)
        self.connections[conn] = None
        return conn

    def forget(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        del self.connections[conn]
        self.admission.release(conn)

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
            limits = self.settings.limits  # re-read: SIGHUP may have changed it
            period = min(
                1.0, limits.handshake_timeout / 4, limits.ping_interval / 4, limits.ping_timeout / 4
            )
            due = self.clock() + period
            await asyncio.sleep(period)
            now = self.clock()
            self.metrics.loop_lag.observe(max(0.0, now - due))
            try:
                self._sweep_once(now)
            except Exception:  # a bug here must not stop keepalive for everyone
                log.error("sweep_failed", exc_info=True)

    def _sweep_once(self, now: float) -> None:
        """Timers of every connection, late ``lag`` pushes, limit reports."""
        for conn in list(self.connections):
            conn.tick(now)
        self.limits.sweep(now)
        self.outboxes.send_due_lag()

    # -- reload and introspection ----------------------------------------------

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
        self.settings.update(new)
        if new.auth != old.auth:
            self.commands.authenticator = Authenticator(new.auth)
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

    def describe(self) -> dict[str, Any]:
        """This node as the cluster registry shows it (``GET /api/nodes``)."""
        return {
            "address": {k: f"{h}:{p}" for k, (h, p) in self.addresses.items()},
            "connections": len(self.connections),
            "subscriptions": sum(len(c.subs) for c in self.connections),
            "draining": self.draining,
            "top_clients": self.admission.top_clients(),
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
            "ready": 1 if self.ready else 0,
            "backends": self.broker.backends(),
        }
