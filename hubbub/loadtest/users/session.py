"""The two ways a user talks to hubbub, behind one small surface.

:class:`FastSession` wraps :class:`loadtest.conn.LeanSession` (the fast path of
the built-in scenarios); :class:`ClientSession` wraps the friendly
:class:`client.Client`, which user scenarios also reach directly as
``self.client``. :class:`loadtest.users.User` calls only what is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from hubbub.client import ChannelEvent, Client, ClientError, ReplyError, Subscription
from hubbub.loadtest.accounting.receiver import Receiver
from hubbub.loadtest.accounting.stats import WorkerStats
from hubbub.loadtest.conn import ConnectFailed, LeanSession, NotConnected, RequestFailed

#: Publish outcome: (ok, error code or reason, reply time).
Done = Callable[[bool, str | None, float], None]


class SessionError(Exception):
    """A command failed; ``reason`` is a short key (an error code, "not-connected", ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FastSession:
    """A :class:`LeanSession` seen through the common surface."""

    def __init__(self, lean: LeanSession) -> None:
        self.lean = lean

    @property
    def connected(self) -> bool:
        return self.lean.connected

    async def connect(self, intended: float) -> None:
        await self.lean.connect(intended)

    def publish(self, channel: str, data: Any, done: Done) -> None:
        def reply(message: dict[str, Any] | None, now: float) -> None:
            if message is None:
                done(False, "disconnected", now)
                return
            error = message.get("error")
            if error is None:
                done(True, None, now)
            else:
                done(False, str(error.get("code") if isinstance(error, dict) else error), now)

        try:
            self.lean.send({"op": "publish", "channel": channel, "data": data}, reply)
        except NotConnected:
            raise SessionError("not-connected") from None

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self.lean.request(message)
        except RequestFailed as exc:
            raise SessionError(str(exc.code)) from None
        except NotConnected:
            raise SessionError("not-connected") from None
        except TimeoutError:
            raise SessionError("timeout") from None
        except ConnectionError:
            raise SessionError("disconnected") from None

    async def subscribe(self, channel: str, recover: bool) -> None:
        try:
            await self.lean.subscribe(channel, recover)
        except RequestFailed as exc:
            raise SessionError(str(exc.code)) from None
        except NotConnected:
            raise SessionError("not-connected") from None
        except TimeoutError:
            raise SessionError("timeout") from None
        except ConnectionError:
            raise SessionError("disconnected") from None

    async def unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(RequestFailed, NotConnected, TimeoutError, ConnectionError):
            await self.lean.unsubscribe(channel)

    def poll(self) -> None:
        """Once a tick: drop the connection if the server went silent."""
        self.lean.check_alive(time.monotonic())

    async def close(self) -> None:
        await self.lean.close()


class ClientSession:
    """A :class:`client.Client` seen through the common surface.

    The client reconnects and recovers by itself; its disconnects are noticed
    by :meth:`poll` (the runner calls it every tick) from ``reconnects`` and
    ``last_disconnect``.
    """

    def __init__(
        self,
        urls: list[str],
        first: int,
        stats: WorkerStats,
        receiver: Receiver,
        *,
        encoding: str,
        timeout: float,
    ) -> None:
        order = urls[first % len(urls) :] + urls[: first % len(urls)]
        self.client = Client(order, name="hubbub-loadtest", encoding=encoding, timeout=timeout)
        self.stats = stats
        self.receiver = receiver
        self._tasks: set[asyncio.Task[Any]] = set()
        self._was_connected = False
        self._reconnects = 0

    @property
    def connected(self) -> bool:
        return self.client.connected

    async def connect(self, intended: float) -> None:
        try:
            await self.client.connect()
        except Exception as exc:
            reason = str(exc.code) if isinstance(exc, ReplyError) else type(exc).__name__
            if isinstance(exc, ConnectionRefusedError):
                reason = "refused"
            elif isinstance(exc, TimeoutError):
                reason = "timeout"
            self.stats.request("connect", None, ok=False)
            self.stats.error(f"connect {reason}")
            raise ConnectFailed(reason) from exc
        self.stats.request("connect", time.monotonic() - intended)
        self.stats.connected += 1
        self._was_connected = True

    def publish(self, channel: str, data: Any, done: Done) -> None:
        if not self.client.connected:
            raise SessionError("not-connected")

        async def run() -> None:
            try:
                await self.client.publish(channel, data)
            except ReplyError as exc:
                done(False, str(exc.code), time.monotonic())
            except ClientError as exc:
                done(False, type(exc).__name__, time.monotonic())
            else:
                done(True, None, time.monotonic())

        self._spawn(run())

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        try:
            if op == "presence":
                return {"clients": await self.client.presence(message["channel"])}
            if op == "history":
                result = await self.client.history(message["channel"], limit=message.get("limit"))
                return {"publications": result.publications}
            if op == "ping":
                await self.client.ping()
                return {}
        except ReplyError as exc:
            raise SessionError(str(exc.code)) from None
        except ClientError as exc:
            raise SessionError(type(exc).__name__) from None
        raise SessionError(f"unsupported op {op!r}")

    async def subscribe(self, channel: str, recover: bool) -> None:
        def on_event(event: ChannelEvent) -> None:
            if event.kind == "lag":
                self.stats.counts["lagged"] += event.dropped
            elif event.kind == "reset":
                self.stats.counts["recovery_failed"] += 1
            else:
                self.stats.counts["presence_events"] += 1

        try:
            sub = await self.client.subscribe(channel, recover=recover, on_event=on_event)
        except ReplyError as exc:
            raise SessionError(str(exc.code)) from None
        except ClientError as exc:
            raise SessionError(type(exc).__name__) from None
        self.receiver.joined(channel, time.monotonic())
        self._spawn(self._consume(sub))

    async def _consume(self, sub: Subscription) -> None:
        on_pub = self.receiver.on_pub
        monotonic = time.monotonic
        with contextlib.suppress(ClientError):
            async for pub in sub:
                on_pub(pub.channel, pub.data, monotonic())

    async def unsubscribe(self, channel: str) -> None:
        self.receiver.leave(channel, time.monotonic())
        with contextlib.suppress(ClientError):
            await self.client.unsubscribe(channel)

    def poll(self) -> None:
        """Count reconnects and keep the connected gauge right."""
        client = self.client
        if client.reconnects > self._reconnects:
            n = client.reconnects - self._reconnects
            self._reconnects = client.reconnects
            last = client.last_disconnect
            code = str(last.code) if last is not None and last.code is not None else "lost"
            self.stats.disconnects[code] += n
            self.stats.request("reconnect", None)
            self.stats.counts["reconnects"] += n
        if client.connected != self._was_connected:
            self._was_connected = client.connected
            self.stats.connected += 1 if client.connected else -1
            if not client.connected and client.closed:
                last = client.last_disconnect
                code = str(last.code) if last is not None and last.code is not None else "lost"
                self.stats.disconnects[code] += 1

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._was_connected:
            self.stats.connected -= 1
            self._was_connected = False
        await self.client.close()
        for task in list(self._tasks):
            task.cancel()
