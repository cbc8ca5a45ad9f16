"""Connection plumbing of the Redis engine: opening connections from a URL,
packing commands, a batched writer, backoff, and self-restarting tasks.

Connections are redis-py's asyncio ``Connection`` (with the hiredis parser when
installed), used directly rather than through a client and pool: the engine
pipelines many commands on one connection (:mod:`cluster.redis_pipe`) and reads
pub/sub itself (:mod:`cluster.redis_pubsub`). Every connection is created with
no retries and no read timeout of its own; the engine bounds connects here and
detects stalls with its own watchdogs, so nothing ever waits on a dead Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import hiredis
from redis.asyncio.connection import AbstractConnection, Connection, parse_url

from hubbub import log
from hubbub.protocol.backoff import backoff_delay

ConnectionFactory = Callable[[], AbstractConnection]

#: Seconds to open a TCP connection and finish the handshake (AUTH, SELECT, SETNAME).
CONNECT_TIMEOUT = 0.5


def connection_factory(
    url: str, *, client_name: str, socket_timeout: float | None = None
) -> ConnectionFactory:
    """A function making unconnected connections to ``url`` (redis://, rediss://, unix://)."""
    kwargs: dict[str, Any] = dict(parse_url(url))
    cls = kwargs.pop("connection_class", Connection)
    kwargs.update(connection_options(client_name, socket_timeout))

    def make() -> AbstractConnection:
        conn: AbstractConnection = cls(**kwargs)
        return conn

    return make


def connection_options(client_name: str, socket_timeout: float | None) -> dict[str, Any]:
    """What every engine connection is opened with, whatever finds its address."""
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "client_name": client_name,
        "driver_info": None,  # no CLIENT SETINFO round trips (Redis < 7.2 refuses them anyway)
        "protocol": 2,
    }


async def connect(conn: AbstractConnection, timeout: float = 2 * CONNECT_TIMEOUT) -> None:
    """Connect ``conn`` within ``timeout`` (the handshake included); closes it on failure."""
    try:
        async with asyncio.timeout(timeout):
            await conn.connect()
    except BaseException:
        await close_quietly(conn)
        raise


async def close_quietly(conn: AbstractConnection | None) -> None:
    """Drop a connection without waiting for the peer; never raises."""
    if conn is None:
        return
    with contextlib.suppress(Exception):
        await conn.disconnect(nowait=True)


def describe(exc: BaseException) -> str:
    """An exception for a log line (redis-py's ``repr`` hides the message)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def redact(url: str) -> str:
    """``url`` without its passwords (``user:password@``, and any query parameter
    named ``*password*``: ``?sentinel_password=``), for logs, labels and
    ``/api/nodes``."""
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        parts = parts._replace(netloc=user + netloc)
    if "password" in parts.query.lower():
        query = [
            (key, "***" if "password" in key.lower() else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)


@dataclass(frozen=True, slots=True)
class HostsURL:
    """A URL naming several servers: ``SCHEME://[[user]:password@]H1:P1,H2:P2/PATH?QUERY``."""

    hosts: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    path: list[str]
    query: dict[str, str]


def split_hosts_url(url: str, scheme: str) -> HostsURL:
    """Split a ``redis+sentinel://`` or ``redis+cluster://`` URL; ``ValueError`` if bad."""
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise ValueError(f"not a {scheme}:// URL: {url!r}")
    auth, _, netloc = parts.netloc.rpartition("@")
    username = password = None
    if auth:
        user, sep, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
    hosts = []
    for item in netloc.split(","):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{scheme}: not HOST:PORT: {item!r}")
        hosts.append((host.strip("[]"), int(port)))
    return HostsURL(
        tuple(hosts),
        username,
        password,
        [unquote(p) for p in parts.path.split("/") if p],
        {k: v[-1] for k, v in parse_qs(parts.query).items()},
    )


#: The most a ``replica_timeout_ms`` may be: a command waits at most two WAITs
#: on the pipe, well inside the shard's command watchdog (2 s).
MAX_REPLICA_TIMEOUT_MS = 900
#: Milliseconds WAIT waits for the replicas unless the URL says.
REPLICA_TIMEOUT_MS = 500


@dataclass(frozen=True, slots=True)
class Replication:
    """How many replicas must hold a publication before it is acknowledged:
    the URL's ``?min_replicas=N&replica_timeout_ms=MS`` (Redis ``WAIT N MS``
    after the publish script; fewer replicas in time: 503, "not replicated").

    ``min_replicas=auto`` (``auto``; the default behind Sentinel and on a Redis
    Cluster): one replica, when the primary has one that has acknowledged its
    replication stream (``ROLE``, read by every health check), else none. A
    primary that lost its replicas (a promoted replica whose old primary is
    dead) then goes on acknowledging, like a lone Redis, instead of refusing.
    """

    replicas: int = 0
    timeout_ms: int = REPLICA_TIMEOUT_MS
    auto: bool = False

    @property
    def query(self) -> str:
        """The URL query that says this (for the primaries of a Redis Cluster)."""
        wanted = "auto" if self.auto else self.replicas
        return urlencode({"min_replicas": wanted, "replica_timeout_ms": self.timeout_ms})

    @property
    def wait(self) -> bytes:
        return pack(b"WAIT", self.replicas, self.timeout_ms)

    def wanted(self, replicas_seen: int) -> int:
        """Replicas to WAIT for, when the last health check saw ``replicas_seen``."""
        return min(self.replicas, replicas_seen) if self.auto else self.replicas


#: Acknowledge without waiting for replicas (a plain ``redis://`` URL's default).
NO_REPLICAS = Replication()
#: One replica when there is one (the default behind Sentinel and on a Redis Cluster).
AUTO_REPLICAS = Replication(1, auto=True)


def split_replication(url: str, default: Replication) -> tuple[str, Replication]:
    """``url`` without its replication parameters, and the :class:`Replication`
    they say (``default``'s count when ``min_replicas`` is not given);
    ``ValueError`` when a value is not ``auto`` or a number in range."""
    base, _, query = url.partition("?")
    rest: list[tuple[str, str]] = []
    given: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in ("min_replicas", "replica_timeout_ms"):
            given[key] = value
        else:
            rest.append((key, value))
    auto = given.get("min_replicas", "auto" if default.auto else "") == "auto"
    replicas = 1 if auto else _integer(given, "min_replicas", default.replicas, 0, 100)
    timeout_ms = _integer(
        given, "replica_timeout_ms", REPLICA_TIMEOUT_MS, 1, MAX_REPLICA_TIMEOUT_MS
    )
    if given:
        url = f"{base}?{urlencode(rest)}" if rest else base
    return url, Replication(replicas, timeout_ms, auto)


def _integer(given: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    text = given.get(key)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"?{key}= must be a whole number from {low} to {high}: {text!r}")
    return int(text)


def pack(*args: bytes | str | int) -> bytes:
    """One command in RESP: an array of bulk strings (hiredis packs it in C,
    twice as fast as the same in Python, on every publish)."""
    return hiredis.pack_command(args)  # type: ignore[arg-type]  # its stub says a 1-tuple


class Writer:
    """Sends queued commands of one connection, in queue order, batched.

    :meth:`send` appends synchronously, so the order of calls is the order on
    the wire; a task writes everything queued since its last write at once
    (several commands share one ``send()``). A failed write ends the task with
    the exception, which its owner reads in ``task``'s done callback.
    """

    __slots__ = ("_out", "_wake", "conn", "task")

    def __init__(self, conn: AbstractConnection, name: str) -> None:
        self.conn = conn
        self._out: list[bytes] = []
        self._wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name=name)

    def send(self, command: bytes) -> None:
        self._out.append(command)
        self._wake.set()

    async def _run(self) -> None:
        conn = self.conn
        while True:
            await self._wake.wait()
            self._wake.clear()
            out, self._out = self._out, []
            if not out:
                continue
            if not conn.is_connected:  # never let redis-py reconnect behind our back
                raise ConnectionError("connection closed")
            await conn.send_packed_command(b"".join(out), check_health=False)

    def stop(self) -> None:
        self.task.cancel()


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """The engine's reconnect delay: in ``[d/2, d]``, ``d = min(cap, base * 2**n)``
    (:func:`hubbub.protocol.backoff.backoff_delay` with equal jitter)."""
    return backoff_delay(attempt, base, cap, floor=0.5)


class Supervised:
    """A background task that is restarted whenever it ends, until :meth:`stop`.

    The engine's long-lived loops (pub/sub reader, health check, presence
    heartbeat) must never die silently: an end for any reason (a bug, a
    cancellation from outside) is logged, counted in :attr:`restarts` and
    followed by a new task (after a short pause when it happens again within a
    second, so a crash loop cannot spin). The task cleans up after itself in
    ``finally`` blocks.
    """

    def __init__(self, name: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self._factory = factory
        self.task: asyncio.Task[None] | None = None
        self.restarts = 0
        self._stopped = False
        self._last_restart = -1e9
        self._pending: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.task is None and not self._stopped:
            self._spawn()

    def _spawn(self) -> None:
        self._pending = None
        if self._stopped:
            return
        self.task = asyncio.get_running_loop().create_task(self._factory(), name=self.name)
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if self._stopped or task is not self.task:
            return
        self.restarts += 1
        error = None if task.cancelled() else task.exception()
        reason = "cancelled" if error is None else describe(error)
        log.error("task_restarted", task=self.name, reason=reason, restarts=self.restarts)
        loop = asyncio.get_running_loop()
        now = loop.time()
        delay = 0.0 if now - self._last_restart > 1.0 else 0.5
        self._last_restart = now
        self._pending = loop.call_later(delay, self._spawn)

    async def stop(self) -> None:
        """Cancel the task and wait for it; no restart follows. Idempotent."""
        self._stopped = True
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class Endpoint:
    """Where one shard's connections go, how the health check knows it is
    the right server, and how many replicas a publication must reach
    (:class:`Replication`): a plain ``redis://`` URL is one address, PINGed.
    :class:`~cluster.redis_sentinel.SentinelEndpoint` asks the sentinels for
    the primary on every connect and checks its ``ROLE``.
    """

    #: The health check's command and :meth:`probe_ok` judges its reply
    #: (``ROLE`` whenever the replicas it lists decide the WAIT: ``min_replicas=auto``).
    probe: bytes = pack(b"PING")
    #: Replicas a publication must reach unless the URL says (plain Redis: none).
    default_replication: Replication = NO_REPLICAS

    def __init__(self, url: str) -> None:
        self.url, self.replication = split_replication(url, self.default_replication)
        if self.replication.auto:
            self.probe = pack(b"ROLE")

    def factory(self, client_name: str, socket_timeout: float | None = None) -> ConnectionFactory:
        return connection_factory(self.url, client_name=client_name, socket_timeout=socket_timeout)

    def probe_ok(self, reply: Any) -> str | None:
        """None when the probe's reply says the server can take commands, else why not."""
        if reply == b"PONG" or (isinstance(reply, list) and reply):  # PING, or ROLE
            return None
        return f"health check answered {reply!r}"

    async def close(self) -> None:
        """Release what finding the server holds (nothing for a plain URL)."""


def endpoint(url: str) -> Endpoint:
    """The endpoint of one shard URL, by scheme (``redis+sentinel://``: Sentinel)."""
    if url.startswith("redis+sentinel://"):
        from hubbub.cluster.redis_sentinel import SentinelEndpoint

        return SentinelEndpoint(url)
    return Endpoint(url)


def replicas_in(role: Any) -> int:
    """The replicas a ``ROLE`` reply lists that have acknowledged the primary's
    stream (a replica still in its first sync shows offset 0 and cannot count
    for WAIT yet); 0 for anything but a primary's reply."""
    if not isinstance(role, list) or len(role) < 3 or role[0] != b"master":
        return 0
    replicas = role[2]
    if not isinstance(replicas, list):
        return 0
    return sum(1 for r in replicas if isinstance(r, list) and len(r) > 2 and _acked(r[2]))


def _acked(offset: Any) -> bool:
    try:
        return int(offset) > 0
    except (TypeError, ValueError):
        return False
