"""Limits that are not per connection, and how every limit hit is reported.

- :class:`LimitReporter`: every hit is one increment of
  ``hubbub_limited_total{what=...}`` (pre-bound children) and is logged in
  aggregate: at most one ``limits`` line per kind per :data:`REPORT_EVERY`
  seconds, with the count since the last line, so a flood cannot flood the log.
- :class:`ChannelRates`: the per-channel publish buckets of namespaces with a
  ``publish_rate`` (per node; docs/limits.md).
- :func:`publication_size`: how ``max_publication`` measures ``data``.

Time is passed in, as in :mod:`server.ratelimit`.
"""

from __future__ import annotations

import random
from typing import Any

from hubbub.protocol.codec import encode_msgpack
from hubbub.server import log
from hubbub.server.ratelimit import TokenBucket, bucket_burst

#: Seconds between two ``limits`` log lines of one kind.
REPORT_EVERY = 10.0
#: ``after`` of a 3007 (connection limit): uniform in this range, in ms, so
#: refused clients do not all come back at once.
CONNECTION_LIMIT_AFTER_MS = (1000, 5000)


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
            log.warning("limits", what=what, count=count, every=REPORT_EVERY)
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
