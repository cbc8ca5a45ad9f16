"""Every metric of a node, defined in one place (after centrifuge's metrics.go).

Process figures (RSS, CPU, ``process_open_fds``, ``process_max_fds``) come from
prometheus-client's ProcessCollector; ``hubbub_event_loop_lag_seconds`` is how late
the sweeper's sleep returned, sampled once per sweep (node.Node._sweep).

Per-message counts (publications, deliveries, bytes) are plain ``int``
attributes of :class:`Stats`, bumped with ``+=`` on the hot path and read only
when Prometheus scrapes, through :class:`_StatsCollector`. Per-command metrics
use pre-bound label children. Nothing here formats a string per message.
"""

from __future__ import annotations

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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

TRANSPORTS = ("tcp", "ws")


class Stats:
    """Hot-path counters, one object per node."""

    __slots__ = ("bytes_in", "bytes_out", "deliveries", "dropped", "publications")

    def __init__(self) -> None:
        self.publications = 0  # publications the node received from the broker
        self.deliveries = 0  # pub pushes queued to clients
        self.dropped = 0  # pub pushes skipped for slow consumers (policy drop)
        self.bytes_in = {t: 0 for t in TRANSPORTS}
        self.bytes_out = {t: 0 for t in TRANSPORTS}


class _StatsCollector(Collector):
    def __init__(self, stats: Stats, gauges: Callable[[], dict[str, Any]]) -> None:
        self.stats = stats
        self.gauges = gauges

    def collect(self) -> Iterator[Any]:
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
        backends = g.get("backends", [])
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
        for b in backends:
            up.add_metric([b.name], 1 if b.up else 0)
            sub.add_metric([b.name], 1 if b.subscriber_connected else 0)
            reconnects.add_metric([b.name], b.reconnects)
            restarts.add_metric([b.name], b.reader_restarts)
        yield from (up, sub, reconnects, restarts)


class Metrics:
    """A node's Prometheus registry and its metrics."""

    def __init__(self, stats: Stats, gauges: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(_StatsCollector(stats, gauges))
        r = self.registry
        self.commands = Counter(
            "hubbub_commands", "Commands handled, by op and result.", ["op", "result"], registry=r
        )
        self.command_seconds = Histogram(
            "hubbub_command_duration_seconds",
            "Time to handle a command, by op.",
            ["op"],
            buckets=(
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
            ),
            registry=r,
        )
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
        self._command_children: dict[tuple[str, str], Any] = {}
        self._seconds_children: dict[str, Any] = {}

    def command(self, op: str, result: str, seconds: float) -> None:
        """Count one command (children bound once per op/result pair)."""
        key = (op, result)
        child = self._command_children.get(key)
        if child is None:
            child = self._command_children[key] = self.commands.labels(op, result)
        child.inc()
        hist = self._seconds_children.get(op)
        if hist is None:
            hist = self._seconds_children[op] = self.command_seconds.labels(op)
        hist.observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
