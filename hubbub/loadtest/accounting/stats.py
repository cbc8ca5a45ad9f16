"""What one worker counts, and its once-a-tick report to the coordinator.

Interval histograms are swapped for fresh ones at every tick (creating one is
cheaper than resetting it); counters are sent as deltas. The hot path touches
only a :class:`Group` (received count and latency histogram).
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from typing import Any

from hdrh.histogram import HdrHistogram

from hubbub.loadtest.accounting.hist import encode, new_histogram, record_seconds


class Group:
    """Receivers whose latency is reported together (e.g. "fast" and "slow").

    The hot path counts latencies (microseconds, already cut to the
    histogram's 11 significant bits) in the plain dict ``counts``: cheaper
    than ``record_value`` per message, and exactly the same histogram once
    :meth:`flush` records each distinct value with its count.
    """

    __slots__ = ("counts", "hist", "name", "received")

    def __init__(self, name: str) -> None:
        self.name = name
        self.hist: HdrHistogram = new_histogram()
        self.counts: dict[int, int] = {}
        self.received = 0

    def flush(self) -> None:
        """Move the counted latencies into :attr:`hist`."""
        record = self.hist.record_value
        for value, count in self.counts.items():
            record(value, count)
        self.counts.clear()


class Request:
    """One kind of request (connect, subscribe, publish, ...): timings and failures."""

    __slots__ = ("count", "failures", "hist")

    def __init__(self) -> None:
        self.hist: HdrHistogram = new_histogram()
        self.count = 0
        self.failures = 0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class WorkerStats:
    """Counters, gauges and histograms of one worker process."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.requests: dict[str, Request] = {}
        #: Plain counters: sent, connects, reconnects, recovered, lagged, ...
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()
        #: Gauges, read at each tick.
        self.users = 0
        self.connected = 0
        self.down = 0
        self.gaps = 0
        self.lag_max = 0.0
        self.late_max = 0.0
        #: Reconnects: the first loss and the last return seen (monotonic), for
        #: "how long until every client was back".
        self.first_down: float | None = None
        self.last_back: float | None = None
        self._group_sent: dict[str, int] = {}
        self._cpu = _cpu_seconds()
        self._wall = time.monotonic()

    def group(self, name: str) -> Group:
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = Group(name)
            self._group_sent[name] = 0
        return group

    def request(self, name: str, seconds: float | None, ok: bool = True) -> None:
        """Record one request: its duration (None: not timed) and whether it worked."""
        req = self.requests.get(name)
        if req is None:
            req = self.requests[name] = Request()
        req.count += 1
        if not ok:
            req.failures += 1
        elif seconds is not None:
            record_seconds(req.hist, seconds)

    def error(self, key: str, n: int = 1) -> None:
        self.errors[key] += n

    def late(self, seconds: float) -> None:
        """A task started ``seconds`` after its slot (the client fell behind)."""
        if seconds > self.late_max:
            self.late_max = seconds

    def note_down(self, now: float) -> None:
        if self.first_down is None or now < self.first_down:
            self.first_down = now

    def note_back(self, now: float) -> None:
        if self.last_back is None or now > self.last_back:
            self.last_back = now

    def tick(self) -> dict[str, Any]:
        """This interval's report (JSON-able); starts the next interval."""
        now = time.monotonic()
        cpu = _cpu_seconds()
        wall = now - self._wall
        out: dict[str, Any] = {
            "cpu": (cpu - self._cpu) / wall if wall > 0 else 0.0,
            "users": self.users,
            "connected": self.connected,
            "down": self.down,
            "gaps": self.gaps,
            "lag_ms": round(self.lag_max * 1000, 3),
            "late_ms": round(self.late_max * 1000, 3),
            "counts": dict(self.counts),
            "errors": dict(self.errors),
            "disconnects": dict(self.disconnects),
            "groups": {},
            "requests": {},
        }
        self._cpu, self._wall = cpu, now
        self.lag_max = self.late_max = 0.0
        self.counts.clear()
        self.errors.clear()
        self.disconnects.clear()
        for name, group in self.groups.items():
            received = group.received - self._group_sent[name]
            self._group_sent[name] = group.received
            group.flush()
            hist, group.hist = group.hist, new_histogram()
            out["groups"][name] = {
                "received": received,
                "hist": encode(hist) if hist.get_total_count() else "",
            }
        for name, req in self.requests.items():
            if not req.count:
                continue
            out["requests"][name] = {
                "count": req.count,
                "failures": req.failures,
                "hist": encode(req.hist) if req.hist.get_total_count() else "",
            }
            req.hist, req.count, req.failures = new_histogram(), 0, 0
        return out
