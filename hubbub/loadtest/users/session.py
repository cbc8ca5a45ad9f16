"""The two ways a user talks to hubbub, behind one small surface.

:class:`FastSession` drives the client core's lean fast path
(:class:`hubbub.client.lean.LeanSession`, the built-in scenarios) and counts
what it reports; :class:`ClientSession` wraps the friendly
:class:`hubbub.client.Client`, which user scenarios also reach directly as
``self.client``. :class:`loadtest.users.user.User` calls only what is here.
A failed command raises the client's own error (:mod:`hubbub.client.exceptions`);
``connect`` counts its failure and returns False.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hubbub.client import ChannelEvent, Client, ClientError, ReplyError, Subscription
from hubbub.client.exceptions import NOT_CONNECTED, Disconnected, command_reason, connect_reason
from hubbub.client.lean import LeanSession, Listener
from hubbub.loadtest.accounting.receiver import Receiver
from hubbub.loadtest.accounting.stats import WorkerStats
from hubbub.protocol.codes import ErrorCode

#: Publish outcome: (ok, error code or reason, reply time).
Done = Callable[[bool, str | None, float], None]


async def timed_connect(connect: Awaitable[Any], intended: float, stats: WorkerStats) -> bool:
    """Await a first connection and record it as request ``connect``, timed from
    ``intended``; a failure is counted under its :func:`connect_reason`."""
    try:
        await connect
    except Exception as exc:
        stats.request("connect", None, ok=False)
        stats.error(f"connect {connect_reason(exc)}")
        return False
    stats.request("connect", time.monotonic() - intended)
    return True


class FastSession(Listener):
    """A :class:`LeanSession` seen through the common surface; it hears (as the
    session's :class:`Listener`) what the worker counts."""

    def __init__(
        self,
        urls: list[str],
        first: int,
        stats: WorkerStats,
        receiver: Receiver,
        *,
        local_addr: tuple[str, int] | None,
        timeout: float,
    ) -> None:
        self.stats = stats
        self.receiver = receiver
        self.lean = LeanSession(
            urls,
            first,
            on_pub=receiver.on_pub,
            listener=self,
            local_addr=local_addr,
            timeout=timeout,
        )

    @property
    def connected(self) -> bool:
        return self.lean.connected

    async def connect(self, intended: float) -> bool:
        """The first connection, timed from ``intended``; False (counted) when it failed."""
        return await timed_connect(self.lean.connect(), intended, self.stats)

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

        self.lean.send({"op": "publish", "channel": channel, "data": data}, reply)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        return await self.lean.request(message)

    async def subscribe(self, channel: str, recover: bool) -> None:
        await self.lean.subscribe(channel, recover)

    async def unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(ClientError):
            await self.lean.unsubscribe(channel)

    def poll(self) -> None:
        """Once a tick: drop the connection if the server went silent."""
        self.lean.check_alive(time.monotonic())

    async def close(self) -> None:
        await self.lean.close()

    # -- what the lean session reports (Listener) ---------------------------------

    def error(self, key: str) -> None:
        self.stats.error(key)
        self.receiver.note(time.monotonic(), key)

    def up(self) -> None:
        self.stats.connected += 1
        self.receiver.note(time.monotonic(), f"up {self.lean.index}")

    def lost(self, reason: str | None) -> None:
        self.stats.connected -= 1
        self.receiver.note(time.monotonic(), f"lost {reason}")
        if reason is not None:
            self.stats.disconnects[reason] += 1

    def subscribed(self, channel: str, now: float) -> None:
        self.receiver.joined(channel, now)
        self.receiver.note(now, f"subscribed {channel}")

    def left(self, channel: str, now: float) -> None:
        self.receiver.leave(channel, now)

    def recovered(self, count: int) -> None:
        self.stats.counts["recovered"] += count

    def recovery_refused(self, channel: str) -> None:
        self.stats.counts["recovery_failed"] += 1
        self.receiver.reloaded(channel)
        self.receiver.note(time.monotonic(), f"refused {channel}")

    def lagged(self, dropped: int) -> None:
        self.stats.counts["lagged"] += dropped
        self.receiver.note(time.monotonic(), f"lag {dropped}")

    def presence(self) -> None:
        self.stats.counts["presence_events"] += 1

    def reconnecting(self, since: float) -> None:
        self.stats.down += 1
        self.stats.note_down(since)

    def reconnected(self, since: float, now: float) -> None:
        self.stats.request("reconnect", now - since)
        self.stats.note_back(now)

    def reconnect_over(self) -> None:
        self.stats.down -= 1


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

    async def connect(self, intended: float) -> bool:
        """The first connection, timed from ``intended``; False (counted) when it failed."""
        if not await timed_connect(self.client.connect(), intended, self.stats):
            return False
        self.stats.connected += 1
        self._was_connected = True
        return True

    def publish(self, channel: str, data: Any, done: Done) -> None:
        if not self.client.connected:
            raise Disconnected(None, NOT_CONNECTED)

        async def run() -> None:
            try:
                await self.client.publish(channel, data)
            except ClientError as exc:
                done(False, command_reason(exc), time.monotonic())
            else:
                done(True, None, time.monotonic())

        self._spawn(run())

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "presence":
            return {"clients": await self.client.presence(message["channel"])}
        if op == "history":
            result = await self.client.history(message["channel"], limit=message.get("limit"))
            return {"publications": result.publications}
        if op == "ping":
            await self.client.ping()
            return {}
        raise ReplyError(ErrorCode.BAD_REQUEST, f"unsupported op {op!r}", data={"local": True})

    async def subscribe(self, channel: str, recover: bool) -> None:
        def on_event(event: ChannelEvent) -> None:
            if event.kind == "lag":
                self.stats.counts["lagged"] += event.dropped
            elif event.kind == "reset":
                self.stats.counts["recovery_failed"] += 1
            else:
                self.stats.counts["presence_events"] += 1

        sub = await self.client.subscribe(channel, recover=recover, on_event=on_event)
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
