"""Every metric of a node, defined in one place (after centrifuge's metrics.go).

Process figures (RSS, CPU, ``process_open_fds``, ``process_max_fds``) come from
prometheus-client's ProcessCollector; ``hubbub_event_loop_lag_seconds`` is how late
the sweeper's sleep returned, sampled once per sweep (node.Node._sweep).

Per-message counts (publications, deliveries, bytes) are plain ``int``
attributes of :class:`Stats`, bumped with ``+=`` on the hot path and read only
when Prometheus scrapes, through :class:`_StatsCollector`. Per-command counts
and durations are kept the same way by :class:`CommandStats` (a list of bucket
counts per op, no lock: the node is one thread), which costs a third of
prometheus-client's locked ``Counter.inc`` + ``Histogram.observe`` per command.
Nothing here formats a string per message.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

TRANSPORTS = ("tcp", "ws")


class Stats:
    """Hot-path counters, one object per node."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "deliveries",
        "dropped",
        "duplicates_skipped",
        "publications",
    )

    def __init__(self) -> None:
        self.publications = 0  # publications the node received from the broker
        self.deliveries = 0  # pub pushes queued to clients
        self.dropped = 0  # pub pushes skipped for slow consumers (policy drop)
        self.duplicates_skipped = 0  # live publications a recovered subscriber already had
        self.bytes_in = {t: 0 for t in TRANSPORTS}
        self.bytes_out = {t: 0 for t in TRANSPORTS}


#: Upper bounds (seconds) of ``hubbub_command_duration_seconds``; +Inf is implied.
COMMAND_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


class CommandStats:
    """Commands handled by op and result, and their durations by op, as plain
    counts read when Prometheus scrapes (``hubbub_commands_total``,
    ``hubbub_command_duration_seconds``)."""

    __slots__ = ("buckets", "counts", "sums")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.buckets: dict[str, list[int]] = {}  # op -> count per bucket, the last +Inf
        self.sums: dict[str, float] = {}  # op -> seconds

    def record(self, op: str, result: str, seconds: float) -> None:
        key = (op, result)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        row = self.buckets.get(op)
        if row is None:
            row = self.buckets[op] = [0] * (len(COMMAND_BUCKETS) + 1)
            self.sums[op] = 0.0
        row[bisect_left(COMMAND_BUCKETS, seconds)] += 1
        self.sums[op] += seconds

    def collect(self) -> Iterator[Any]:
        commands = CounterMetricFamily(
            "hubbub_commands", "Commands handled, by op and result.", labels=["op", "result"]
        )
        for (op, result), value in sorted(self.counts.items()):
            commands.add_metric([op, result], value)
        yield commands
        seconds = HistogramMetricFamily(
            "hubbub_command_duration_seconds", "Time to handle a command, by op.", labels=["op"]
        )
        bounds = [*(repr(b) for b in COMMAND_BUCKETS), "+Inf"]
        for op, row in sorted(self.buckets.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, row, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            seconds.add_metric([op], buckets, sum_value=self.sums[op])
        yield seconds


class _StatsCollector(Collector):
    def __init__(
        self, stats: Stats, commands: CommandStats, gauges: Callable[[], dict[str, Any]]
    ) -> None:
        self.stats = stats
        self.commands = commands
        self.gauges = gauges

    def collect(self) -> Iterator[Any]:
        yield from self.commands.collect()
        s = self.stats
        yield CounterMetricFamily(
            "hubbub_publications", "Publications received from the broker.", value=s.publications
        )
        yield CounterMetricFamily(
            "hubbub_deliveries", "Publications queued to subscribers.", value=s.deliveries
        )
        yield CounterMetricFamily(
            "hubbub_deliveries_dropped", "Publications skipped for slow consumers.", value=s.dropped
        )
        yield CounterMetricFamily(
            "hubbub_duplicates_skipped",
            "Live publications skipped for subscribers whose subscribe reply already covered them.",
            value=s.duplicates_skipped,
        )
        for name, values, doc in (
            ("hubbub_bytes_received", s.bytes_in, "Bytes read from clients."),
            ("hubbub_bytes_sent", s.bytes_out, "Bytes written to clients."),
        ):
            fam = CounterMetricFamily(name, doc, labels=["transport"])
            for transport, value in values.items():
                fam.add_metric([transport], value)
            yield fam
        g = self.gauges()
        conns = GaugeMetricFamily(
            "hubbub_connections", "Open client connections.", labels=["transport"]
        )
        for transport in TRANSPORTS:
            conns.add_metric([transport], g["connections"].get(transport, 0))
        yield conns
        yield GaugeMetricFamily(
            "hubbub_subscriptions", "Client subscriptions on this node.", value=g["subscriptions"]
        )
        yield GaugeMetricFamily(
            "hubbub_channels", "Channels with local subscribers.", value=g["channels"]
        )
        yield GaugeMetricFamily(
            "hubbub_broker_up", "1 when every broker backend is reachable.", value=g["broker_up"]
        )
        yield GaugeMetricFamily("hubbub_draining", "1 while the node drains.", value=g["draining"])
        yield GaugeMetricFamily(
            "hubbub_ready",
            "1 while /readyz answers 200 (not draining, broker up).",
            value=g["ready"],
        )
        yield from _backend_families(g.get("backends", []))


def _backend_families(backends: list[Any]) -> tuple[Any, ...]:
    """The broker's backends (Redis shards), one sample per shard in each family."""
    up = GaugeMetricFamily(
        "hubbub_broker_shard_up", "1 when the shard answers health checks.", labels=["shard"]
    )
    sub = GaugeMetricFamily(
        "hubbub_broker_pubsub_connected",
        "1 while the shard's pub/sub connection is open.",
        labels=["shard"],
    )
    reconnects = CounterMetricFamily(
        "hubbub_broker_pubsub_reconnects",
        "Pub/sub (re)connections per shard.",
        labels=["shard"],
    )
    restarts = CounterMetricFamily(
        "hubbub_broker_reader_restarts",
        "Pub/sub reader tasks restarted after dying.",
        labels=["shard"],
    )
    deaf = CounterMetricFamily(
        "hubbub_broker_probe_misses",
        "Delivery probes not back within probe_timeout (the pub/sub connection was reopened).",
        labels=["shard"],
    )
    for b in backends:
        up.add_metric([b.name], 1 if b.up else 0)
        sub.add_metric([b.name], 1 if b.subscriber_connected else 0)
        reconnects.add_metric([b.name], b.reconnects)
        restarts.add_metric([b.name], b.reader_restarts)
        deaf.add_metric([b.name], b.probe_misses)
    return (up, sub, reconnects, restarts, deaf)


class Metrics:
    """A node's Prometheus registry and its metrics."""

    def __init__(self, stats: Stats, gauges: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.command_stats = CommandStats()
        #: Count one command: ``command(op, result, seconds)``.
        self.command = self.command_stats.record
        self.registry.register(_StatsCollector(stats, self.command_stats, gauges))
        r = self.registry
        self.disconnects = Counter(
            "hubbub_disconnects",
            "Connections closed by the server, by code.",
            ["code"],
            registry=r,
        )
        self.limited = Counter(
            "hubbub_limited", "Limits hit, by what was limited.", ["what"], registry=r
        )
        self.broker_errors = Counter(
            "hubbub_broker_errors", "Broker operations that failed, by op.", ["op"], registry=r
        )
        self.loop_lag = Histogram(
            "hubbub_event_loop_lag_seconds",
            "How late the event loop ran the sweeper's timer (sampled once per sweep).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
