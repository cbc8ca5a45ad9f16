"""The coordinator's merge of every worker's ticks: per-second rows and run totals.

Tick ``k`` of every worker covers the same second (ticks are aligned on the
common start time), so a row is complete when each live worker has sent its
tick ``k``; its interval histograms are added (exact percentiles of all
values), then reduced to a few numbers and dropped. Whole-run histograms and
counters are kept as they come.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from hubbub.loadtest.accounting.hist import add_encoded, new_histogram, summary


@dataclass
class RequestTotals:
    count: int = 0
    failures: int = 0
    hist: HdrHistogram = field(default_factory=new_histogram)


@dataclass
class _Bucket:
    workers: set[int] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    disconnects: int = 0
    connects: int = 0
    received: int = 0
    users: int = 0
    connected: int = 0
    down: int = 0
    gaps: int = 0
    lag_ms: float = 0.0
    late_ms: float = 0.0
    cpu: dict[int, float] = field(default_factory=dict)
    latency: HdrHistogram = field(default_factory=new_histogram)


@dataclass
class WorkerTotals:
    """One worker over the run: (tick, CPU, loop lag ms, schedule lateness ms) per tick."""

    ticks: list[tuple[int, float, float, float]] = field(default_factory=list)
    received: int = 0

    def steady(self, warmup: float) -> list[tuple[int, float, float, float]]:
        """The ticks that describe the run: not the first (process start-up), not
        the last (the stop and the final accounting), none within ``warmup``."""
        ticks = sorted(self.ticks)[1:-1] if len(self.ticks) > 2 else sorted(self.ticks)
        kept = [t for t in ticks if t[0] > warmup]
        return kept or ticks


class Aggregate:
    """Everything merged so far."""

    def __init__(self, workers: int, warmup: float = 0.0) -> None:
        self.workers = workers
        #: Seconds from the start whose latencies stay out of the run totals.
        self.warmup = warmup
        self.live: set[int] = set(range(workers))
        self.rows: list[dict[str, Any]] = []
        self._buckets: dict[int, _Bucket] = {}
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()
        self.groups: dict[str, HdrHistogram] = {}
        self.group_received: Counter[str] = Counter()
        self.requests: dict[str, RequestTotals] = {}
        self.per_worker = [WorkerTotals() for _ in range(workers)]
        self.peak_users = 0
        self.peak_connected = 0

    def add_tick(self, worker: int, tick: dict[str, Any]) -> list[dict[str, Any]]:
        """Merge one worker's tick; returns the rows it completed (oldest first)."""
        k = int(tick["k"])
        bucket = self._buckets.setdefault(k, _Bucket())
        bucket.workers.add(worker)
        counts = tick.get("counts", {})
        bucket.counts.update(counts)
        self.counts.update(counts)
        errors = tick.get("errors", {})
        self.errors.update(errors)
        bucket.errors += sum(errors.values())
        disconnects = tick.get("disconnects", {})
        self.disconnects.update(disconnects)
        bucket.disconnects += sum(disconnects.values())
        for name in ("users", "connected", "down", "gaps"):
            setattr(bucket, name, getattr(bucket, name) + int(tick.get(name, 0)))
        bucket.lag_ms = max(bucket.lag_ms, float(tick.get("lag_ms", 0)))
        bucket.late_ms = max(bucket.late_ms, float(tick.get("late_ms", 0)))
        cpu = float(tick.get("cpu", 0))
        bucket.cpu[worker] = cpu
        totals = self.per_worker[worker]
        totals.ticks.append((k, cpu, float(tick.get("lag_ms", 0)), float(tick.get("late_ms", 0))))
        counted = k > self.warmup  # tick k covers (k - 1, k] seconds
        for name, group in tick.get("groups", {}).items():
            received = int(group.get("received", 0))
            bucket.received += received
            totals.received += received
            self.group_received[name] += received
            hist = self.groups.get(name)
            if hist is None:
                hist = self.groups[name] = new_histogram()
            if group.get("hist"):
                if counted:
                    add_encoded(hist, group["hist"])
                add_encoded(bucket.latency, group["hist"])
        for name, req in tick.get("requests", {}).items():
            totals_req = self.requests.get(name)
            if totals_req is None:
                totals_req = self.requests[name] = RequestTotals()
            count, failures = int(req.get("count", 0)), int(req.get("failures", 0))
            totals_req.count += count
            totals_req.failures += failures
            if name == "connect":
                bucket.connects += count - failures
            if req.get("hist") and (counted or name == "connect"):
                add_encoded(totals_req.hist, req["hist"])
        return self._complete()

    def worker_gone(self, worker: int) -> list[dict[str, Any]]:
        """A worker ended: rows no longer wait for it."""
        self.live.discard(worker)
        return self._complete()

    def flush(self) -> list[dict[str, Any]]:
        """Turn every bucket still open into a row (at the end of the run)."""
        out = [self._row(k, self._buckets.pop(k)) for k in sorted(self._buckets)]
        self.rows.extend(out)
        return out

    def _complete(self) -> list[dict[str, Any]]:
        out = []
        for k in sorted(self._buckets):
            if not self.live <= self._buckets[k].workers:
                break
            out.append(self._row(k, self._buckets.pop(k)))
        self.rows.extend(out)
        return out

    def _row(self, k: int, bucket: _Bucket) -> dict[str, Any]:
        lat = summary(bucket.latency)
        self.peak_users = max(self.peak_users, bucket.users)
        self.peak_connected = max(self.peak_connected, bucket.connected)
        return {
            "t": k,
            "users": bucket.users,
            "connected": bucket.connected,
            "down": bucket.down,
            "msgs_out": bucket.counts.get("written", 0),
            "msgs_in": bucket.received,
            "sent_ok": bucket.counts.get("sent", 0),
            "errors": bucket.errors,
            "disconnects": bucket.disconnects,
            "connects": bucket.connects,
            "gaps": bucket.gaps,
            "p50": lat.get("p50"),
            "p90": lat.get("p90"),
            "p99": lat.get("p99"),
            "max": lat.get("max"),
            "cpu": {str(w): round(c, 3) for w, c in sorted(bucket.cpu.items())},
            "lag_ms": bucket.lag_ms,
            "late_ms": bucket.late_ms,
        }

    def latency(self) -> HdrHistogram:
        """Delivery latency of every group together."""
        out = new_histogram()
        for hist in self.groups.values():
            if hist.get_total_count():
                out.add(hist)
        return out
