"""Every limit check of the node and how every limit hit is reported (docs/limits.md).

- :class:`Limits`: the checks a command or a publication passes — the
  command rate and its abuse rule (PROTOCOL.md §5: 429, 3006),
  ``max_subscriptions`` (403), ``max_publication`` (413) and ``publish_rate``
  (429) — and :meth:`Limits.hit`, through which every limit reports, including
  those detected elsewhere: ``max_frame`` by the parsers (``tcp``, ``ws``),
  ``origin`` by the WebSocket handshake, the timers (``connection``), the
  connection limits (``admission``) and ``outbound_buffer`` (``outbox``).
- :class:`LimitReporter`: every hit is one increment of
  ``hubbub_limited_total{what=...}`` (pre-bound children) and is logged in
  aggregate: at most one ``limits`` line per kind per :data:`REPORT_EVERY`
  seconds, with the count since the last line, so a flood cannot flood the log.
- :class:`ChannelRates`: the per-channel publish buckets of namespaces with a
  ``publish_rate`` (per node; docs/limits.md).
- :func:`publication_size`: how ``max_publication`` measures ``data``.

The token buckets themselves are pure logic in :mod:`server.ratelimit`; time
is passed in, as there.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from hubbub import log
from hubbub.protocol.codec import encode_msgpack
from hubbub.protocol.codes import ErrorCode
from hubbub.protocol.exceptions import CommandError
from hubbub.server.config import NamespaceConfig
from hubbub.server.ratelimit import ABUSE, ADMIT, CommandLimiter, TokenBucket, bucket_burst
from hubbub.server.settings import Settings

#: Seconds between two ``limits`` log lines of one kind.
REPORT_EVERY = 10.0
#: Limits whose aggregated line is an error: the node itself is short of something.
ERROR_KINDS = frozenset({"fd_limit", "internal_error"})
#: ``after`` of a 3007 (connection limit): uniform in this range, in ms, so
#: refused clients do not all come back at once.
CONNECTION_LIMIT_AFTER_MS = (1000, 5000)


class Limits:
    """The node's limit checks and their report; one per node, shared."""

    __slots__ = ("_last_fault", "channel_rates", "connect_rates", "reporter", "settings")

    def __init__(self, counter: Any, settings: Settings) -> None:
        self.settings = settings
        self.reporter = LimitReporter(counter)
        self.channel_rates = ChannelRates()
        self.connect_rates = ChannelRates()  # keyed by client address
        self._last_fault = -REPORT_EVERY

    def hit(self, what: str) -> None:
        """One hit of limit ``what``: the metric now, the aggregated log line later."""
        self.reporter.hit(what)

    def connect_rate(self, ip: str, now: float) -> bool:
        """Whether a new connection from ``ip`` is within
        ``max_connects_per_ip_per_second`` (a bucket per address, like a
        channel's publish bucket); a refusal is counted."""
        rate = self.settings.limits.max_connects_per_ip_per_second
        if not rate or not self.connect_rates.take(ip, rate, now):
            return True
        self.hit("max_connects_per_ip_per_second")
        return False

    def fault(self, transport: str) -> None:
        """A bug of ours escaped a transport's read loop (called in its
        ``except``): that connection ends, the node goes on. Counted as
        ``internal_error``; the traceback is logged at most once per
        :data:`REPORT_EVERY` seconds, so a client that can trigger it on demand
        cannot flood the log."""
        self.reporter.hit("internal_error")
        now = time.monotonic()
        if now - self._last_fault >= REPORT_EVERY:
            self._last_fault = now
            log.error("transport_failed", exc_info=True, transport=transport)

    def sweep(self, now: float) -> None:
        """Log the hits due (:meth:`LimitReporter.report`), forget full buckets
        (called by the node's sweeper)."""
        self.reporter.report(now)
        self.channel_rates.prune(now)
        self.connect_rates.prune(now)

    def command(self, limiter: CommandLimiter, now: float) -> int:
        """One command against the connection's bucket: :data:`ADMIT`,
        :data:`ABUSE` (disconnect 3006), or ``retry_after`` in ms (refuse 429)."""
        verdict = limiter.check(now)
        if verdict != ADMIT:
            self.hit("rate_abuse" if verdict == ABUSE else "rate")
        return verdict

    def check_subscriptions(self, count: int) -> None:
        """Room for one more subscription on a connection holding ``count``."""
        if count >= self.settings.limits.max_subscriptions:
            self.hit("max_subscriptions")
            raise CommandError(ErrorCode.FORBIDDEN, "max_subscriptions reached")

    def check_publication(
        self, channel: str, ns: NamespaceConfig, data: Any, *, client: bool, now: float
    ) -> None:
        """A namespace's limits on one publication: ``max_publication`` (413) for
        everyone, ``publish_rate`` (429 with ``retry_after``) for clients."""
        if ns.max_publication and publication_size(data) > ns.max_publication:
            self.hit("max_publication")
            raise CommandError(
                ErrorCode.TOO_LARGE,
                "publication too large",
                extra={"max_publication": ns.max_publication},
            )
        if client and ns.publish_rate:
            wait = self.channel_rates.take(channel, ns.publish_rate, now)
            if wait:
                self.hit("publish_rate")
                raise CommandError(
                    ErrorCode.RATE_LIMITED,
                    "channel publish rate limited",
                    extra={"retry_after": max(1, math.ceil(wait * 1000))},
                )


class LimitReporter:
    """Counts limit hits: a metric at once, a log line per kind every 10 s."""

    __slots__ = ("_children", "_counter", "_last", "counts")

    def __init__(self, counter: Any) -> None:
        self._counter = counter  # the labelled prometheus Counter ``hubbub_limited``
        self._children: dict[str, Any] = {}
        self._last: dict[str, float] = {}  # kind -> when its last line was logged
        self.counts: dict[str, int] = {}  # kind -> hits not logged yet

    def hit(self, what: str) -> None:
        """One hit of limit ``what`` (e.g. ``rate``, ``max_connections``)."""
        child = self._children.get(what)
        if child is None:
            child = self._children[what] = self._counter.labels(what)
        child.inc()
        counts = self.counts
        counts[what] = counts.get(what, 0) + 1

    def report(self, now: float) -> list[tuple[str, int]]:
        """Log (and return) the kinds due at ``now`` with their counts; called by
        the node's sweeper. A kind is due when it has hits and its last line is
        at least :data:`REPORT_EVERY` seconds old."""
        due: list[tuple[str, int]] = []
        if not self.counts:
            return due
        last = self._last
        for what, count in list(self.counts.items()):
            since = last.get(what)
            if since is not None and now - since < REPORT_EVERY:
                continue
            del self.counts[what]
            last[what] = now
            due.append((what, count))
            report = log.error if what in ERROR_KINDS else log.warning
            report("limits", what=what, count=count, every=REPORT_EVERY)
        return due


class ChannelRates:
    """Publish buckets per channel, for namespaces with ``publish_rate``.

    A bucket that has filled up again equals a new one, so :meth:`prune` drops
    it; only channels published to within about a second are held.
    """

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: dict[str, TokenBucket] = {}

    def take(self, channel: str, rate: float, now: float) -> float:
        """Take one publication of ``channel``: 0.0, or seconds to wait."""
        bucket = self.buckets.get(channel)
        if bucket is None:
            bucket = self.buckets[channel] = TokenBucket(rate, bucket_burst(rate), now)
        elif bucket.rate != rate:
            bucket.configure(rate, bucket_burst(rate), now)
        return bucket.take(now)

    def prune(self, now: float) -> int:
        """Forget full buckets; returns how many are left."""
        buckets = self.buckets
        if buckets:
            for channel in [c for c, b in buckets.items() if b.full(now)]:
                del buckets[channel]
        return len(buckets)


def publication_size(data: Any) -> int:
    """The size ``max_publication`` limits: ``data`` encoded with msgpack, in bytes,
    whatever the client's transport (binary values count their raw bytes)."""
    return len(encode_msgpack(data))


def connection_limit_after() -> int:
    """The ``after`` (ms) of one 3007 disconnect."""
    return random.randint(*CONNECTION_LIMIT_AFTER_MS)
