"""Scenario users, written the way a Locust user writes a locustfile.

::

    from hubbub.loadtest import User, task, between, constant_rate

    class ChatUser(User):
        wait_time = constant_rate(0.5)        # open loop: 0.5 tasks/s, fixed slots

        async def on_start(self):
            self.room = f"chat:room-{self.random.randint(1, 10)}"
            await self.subscribe(self.room)   # every publication is accounted

        @task(10)
        async def say(self):
            await self.publish(self.room)     # stamped: stream, sequence, intended time

        @task(1)
        async def who(self):
            await self.presence(self.room)

``self.client`` is the connected :class:`client.Client` for anything else
(``fast = True`` users run on the lean fast path instead and have no
``client``). Helpers record each request (count, failures, latency) and never
raise for a failed command: like Locust's HTTP client, a failure is counted
and the task goes on. ``raise StopUser()`` ends a user's task loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from hubbub.client.exceptions import ClientError, command_reason
from hubbub.loadtest.accounting.payload import make_payload, stream_id
from hubbub.loadtest.accounting.sequences import PublishedStream
from hubbub.loadtest.users.session import ClientSession, FastSession

if TYPE_CHECKING:
    from hubbub.client import Client
    from hubbub.loadtest.accounting.stats import WorkerStats
    from hubbub.loadtest.config import RunConfig


def task(weight: Any = 1) -> Any:
    """Mark a method as a task: ``@task`` or ``@task(3)`` (picked 3x as often)."""

    def mark(func: Callable[..., Any], w: int = 1) -> Callable[..., Any]:
        if w < 0:
            raise ValueError("a task weight must be >= 0")
        func._hubbub_task = w  # type: ignore[attr-defined]
        return func

    if callable(weight):
        return mark(weight)
    return lambda func: mark(func, int(weight))


@dataclass
class WorkerContext:
    """What a worker shares with its users."""

    config: RunConfig
    worker: int
    stats: WorkerStats
    all_spawned: asyncio.Event = field(default_factory=asyncio.Event)
    #: Every stream published by this worker's users: id -> record.
    streams: dict[int, PublishedStream] = field(default_factory=dict)
    #: Called when a user is in place (its on_start done, or waiting for the others).
    on_ready: Callable[[User], None] = lambda user: None

    def local_addr(self, index: int) -> tuple[str, int] | None:
        """A source address spread over 127.0.0.1..N (``--source-ips N``), or None."""
        n = self.config.source_ips
        return (f"127.0.0.{1 + index % n}", 0) if n > 0 else None


class User:
    """One simulated client. Subclass it; see the module doc.

    Class attributes: ``weight`` (share among the file's user classes),
    ``wait_time``, ``fast`` (lean fast path), ``group`` (whose latency is
    reported together), ``recover`` (subscribe with recovery).
    """

    abstract: ClassVar[bool] = True
    weight: ClassVar[int] = 1
    wait_time: Any = None
    fast: ClassVar[bool] = False
    group: ClassVar[str] = "all"
    recover: ClassVar[bool] = False

    def __init__(self, ctx: WorkerContext, index: int) -> None:
        from hubbub.loadtest.accounting.receiver import Receiver

        config = ctx.config
        self.ctx = ctx
        #: This user's number in the whole run (0 .. users - 1).
        self.index = index
        self.worker = ctx.worker
        self.config = config
        self.options = config.options
        self.random = random.Random(config.seed * 1_000_003 + index)
        self.hosts = list(config.hosts)
        self.host = self.hosts[index % len(self.hosts)]
        #: Intended start time of the task being run (monotonic); ``now`` outside tasks.
        self.intended = time.monotonic()
        self._in_task = False
        self._ready = False
        self.receiver = Receiver(config.run_id, ctx.stats.group(self.group), ctx.stats)
        self._streams: dict[str, tuple[int, PublishedStream]] = {}
        self.session: FastSession | ClientSession
        if self.fast:
            self.session = FastSession(
                self.hosts,
                index,
                ctx.stats,
                self.receiver,
                local_addr=ctx.local_addr(index),
                timeout=config.connect_timeout,
            )
        else:
            self.session = ClientSession(
                self.hosts,
                index,
                ctx.stats,
                self.receiver,
                encoding=config.encoding,
                timeout=config.connect_timeout,
            )

    # -- hooks ------------------------------------------------------------------

    async def on_start(self) -> None:
        """Called once connected, before the first task (may also be a plain def)."""

    async def on_stop(self) -> None:
        """Called at the end of the run, before the connection closes."""

    # -- helpers ----------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The connected :class:`client.Client` (not on the fast path)."""
        if not isinstance(self.session, ClientSession):
            raise AttributeError("fast users have no client.Client; use the helpers")
        return self.session.client

    @property
    def stats(self) -> WorkerStats:
        return self.ctx.stats

    def _now_intended(self) -> float:
        return self.intended if self._in_task else time.monotonic()

    async def subscribe(self, channel: str, *, recover: bool | None = None) -> bool:
        """Subscribe; its publications are accounted. False (and counted) on failure."""
        start = time.monotonic()
        try:
            await self.session.subscribe(channel, self.recover if recover is None else recover)
        except ClientError as exc:
            self.stats.request("subscribe", None, ok=False)
            self.stats.error(f"subscribe {command_reason(exc)}")
            return False
        self.stats.request("subscribe", time.monotonic() - start)
        return True

    async def unsubscribe(self, channel: str) -> None:
        await self.session.unsubscribe(channel)

    def _stream(self, channel: str) -> tuple[int, PublishedStream]:
        entry = self._streams.get(channel)
        if entry is None:
            sid = stream_id(self.index, len(self._streams))
            record = PublishedStream(channel)
            self.ctx.streams[sid] = record
            entry = self._streams[channel] = (sid, record)
        return entry

    async def publish(self, channel: str, data: Any = None, *, wait: bool = False) -> bool:
        """Publish ``data``, or (None) a stamped payload of ``--size`` bytes.

        Open loop by default: the command goes out and the task goes on; the
        reply is counted when it comes ("publish" request, timed from the
        task's intended time). ``wait=True`` waits for it. Returns False when
        it could not be sent (or, waiting, was refused).
        """
        intended = self._now_intended()
        stats = self.stats
        record: PublishedStream | None = None
        seq = 0
        if data is None:
            if not self.session.connected:
                stats.request("publish", None, ok=False)
                stats.error("publish not-connected")
                return False
            sid, record = self._stream(channel)
            seq = record.next_seq(intended)
            data = make_payload(self.config.run_id, sid, seq, intended, self.config.size)
        future: asyncio.Future[bool] | None = (
            asyncio.get_running_loop().create_future() if wait else None
        )

        def done(ok: bool, reason: str | None, now: float) -> None:
            if record is not None:
                record.confirmed(seq, ok)
            if ok:
                stats.counts["sent"] += 1
                stats.request("publish", now - intended)
            else:
                stats.request("publish", None, ok=False)
                stats.error(f"publish {reason}")
            if future is not None and not future.done():
                future.set_result(ok)

        try:
            self.session.publish(channel, data, done)
        except ClientError as exc:
            if record is not None:  # numbered but never written: take it back
                record.unwind(seq)
            stats.request("publish", None, ok=False)
            stats.error(f"publish {command_reason(exc)}")
            return False
        stats.counts["written"] += 1
        if future is not None:
            return await future
        return True

    async def presence(self, channel: str) -> dict[str, Any] | None:
        """Who is on ``channel`` (None when the request failed)."""
        ok = await self.request("presence", {"op": "presence", "channel": channel})
        if ok is None:
            return None
        clients = ok.get("clients")
        return clients if isinstance(clients, dict) else {}

    async def history(self, channel: str, limit: int | None = None) -> list[Any] | None:
        """The channel's recent publications (None when the request failed)."""
        message: dict[str, Any] = {"op": "history", "channel": channel}
        if limit is not None:
            message["limit"] = limit
        ok = await self.request("history", message)
        return None if ok is None else list(ok.get("publications") or ())

    async def request(self, name: str, message: dict[str, Any]) -> dict[str, Any] | None:
        """Send any command and record it as request ``name``; its ok map, or None."""
        start = time.monotonic()
        try:
            ok = await self.session.request(message)
        except ClientError as exc:
            self.stats.request(name, None, ok=False)
            self.stats.error(f"{name} {command_reason(exc)}")
            return None
        self.stats.request(name, time.monotonic() - start)
        return ok

    @contextlib.asynccontextmanager
    async def measure(self, name: str) -> AsyncIterator[None]:
        """Time a block as request ``name``; an exception counts as a failure (and propagates)."""
        start = time.monotonic()
        try:
            yield
        except Exception as exc:
            self.stats.request(name, None, ok=False)
            self.stats.error(f"{name} {type(exc).__name__}")
            raise
        self.stats.request(name, time.monotonic() - start)

    def read_slowly(self, pause: float, rcvbuf: int = 4096) -> None:
        """Become a slow consumer (fast path only): pause ``pause`` s after each read,
        with a ``rcvbuf``-byte socket receive buffer, so the server's buffer fills."""
        if not isinstance(self.session, FastSession):
            raise RuntimeError("read_slowly needs a fast user (fast = True)")
        self.session.lean.read_slowly(pause, rcvbuf)

    async def wait_all_spawned(self) -> None:
        """Wait until every user of every worker has started (e.g. before publishing).

        A user waiting here counts as started, so ``on_start`` may call it.
        """
        self.ctx.on_ready(self)
        await self.ctx.all_spawned.wait()

    # -- for the runner -----------------------------------------------------

    _task_table: ClassVar[dict[type, tuple[list[Callable[..., Any]], list[int]]]] = {}

    @classmethod
    def tasks_of(cls) -> tuple[list[Callable[..., Any]], list[int]]:
        """The class's tasks and their cumulative weights (``@task`` methods, ``tasks``)."""
        table = User._task_table.get(cls)
        if table is not None:
            return table
        found: dict[str, tuple[Callable[..., Any], int]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                weight = getattr(value, "_hubbub_task", None)
                if weight is not None:
                    found[name] = (value, weight)
        extra = getattr(cls, "tasks", None)
        if isinstance(extra, dict):
            found.update({f.__name__: (f, int(w)) for f, w in extra.items()})
        elif isinstance(extra, list | tuple):
            found.update({f.__name__: (f, 1) for f in extra})
        funcs, cumulative, total = [], [], 0
        for func, weight in found.values():
            if weight > 0:
                total += weight
                funcs.append(func)
                cumulative.append(total)
        User._task_table[cls] = (funcs, cumulative)
        return funcs, cumulative

    @classmethod
    def is_abstract(cls) -> bool:
        return bool(cls.__dict__.get("abstract", False))
