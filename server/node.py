"""The node: listeners, connections, the flush scheduler, timers and draining.

Shutdown is a straight line (after hypercorn, DESIGN.md "Draining"): close the
listeners → ``/readyz`` 503 → ``disconnect`` 3001 to every client with an
``after`` spread over the drain window → let buffers flush → at
``drain_timeout`` abort the rest → close the broker. A second signal aborts
at once.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Coroutine
from typing import Any

from cluster.broker import Broker, ChannelOptions
from protocol.channels import namespace_of
from protocol.codes import DisconnectCode
from server import log
from server.auth import Authenticator
from server.config import Config, NamespaceConfig, parse_address
from server.connection import Connection
from server.hub import Hub
from server.metrics import Metrics, Stats
from server.wire import Format


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
        self._servers: list[asyncio.Server] = []
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
        """Start the broker and bind every listener; raises OSError on a busy port."""
        from server.admin import serve_admin
        from server.tcp import serve_tcp
        from server.ws import serve_ws

        await self.broker.start(self.hub)
        s = self.config.server
        handlers = {"tcp": serve_tcp, "ws": serve_ws, "admin": serve_admin}
        try:
            for name in ("tcp", "ws", "admin"):
                address = parse_address(getattr(s, name), f"[server] {name}")
                if address is None:
                    continue
                handler = handlers[name]

                async def on_client(reader: Any, writer: Any, _h: Any = handler) -> None:
                    await _h(self, reader, writer)

                server = await asyncio.start_server(
                    on_client, address[0], address[1], limit=2**16, backlog=4096
                )
                self._servers.append(server)
                sock = server.sockets[0].getsockname()
                self.addresses[name] = (sock[0], sock[1])
        except OSError:
            await self._close_servers()
            await self.broker.close()
            raise
        self._sweeper = self._loop.create_task(self._sweep())
        log.info(
            "listening",
            node=self.node_id,
            broker=self.broker.name,
            **{k: f"{h}:{p}" for k, (h, p) in self.addresses.items()},
        )

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _close_servers(self) -> None:
        for server in self._servers:
            server.close()
        self._servers = []

    async def drain(self) -> None:
        """Drain on SIGTERM/SIGINT (PROTOCOL.md §7), then stop. Idempotent."""
        if self.draining:
            return
        self.draining = True
        await self._close_servers()
        window = self.config.limits.drain_timeout
        conns = list(self.connections)
        log.info("draining", clients=len(conns), drain_timeout=window)
        # Publications already accepted are queued ahead of the disconnect push.
        for conn in conns:
            conn.flush()
            conn.disconnect(
                DisconnectCode.DRAINING,
                after=int(random.uniform(0, window) * 1000),
                abort_after=-1,
            )
        deadline = self.clock() + window
        while self.connections and self.clock() < deadline:
            await asyncio.sleep(0.05)
        await self.stop()

    async def stop(self) -> None:
        """Abort whatever is still connected, close the broker, and stop."""
        self.draining = True
        await self._close_servers()
        for conn in list(self.connections):
            conn.transport.abort()
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
        peer = transport.get_extra_info("peername")
        conn = Connection(self, transport, kind, fmt, peer[0] if peer else "")
        self.connections[conn] = None
        return conn

    def forget(self, conn: Connection) -> None:
        self.connections.pop(conn, None)

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
        limits = self.config.limits
        period = min(1.0, limits.handshake_timeout / 4, limits.ping_interval / 4,
                     limits.ping_timeout / 4)
        while True:
            await asyncio.sleep(period)
            now = self.clock()
            for conn in list(self.connections):
                conn.tick(now)
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
        return self.config.limits.slow_consumer

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
        }
