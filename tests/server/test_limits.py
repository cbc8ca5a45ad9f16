"""Limit reporting, per-channel publish buckets and publication size (server.limits)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from hubbub.server.config import ConfigError, from_mapping, validate
from hubbub.server.limits import (
    CONNECTION_LIMIT_AFTER_MS,
    REPORT_EVERY,
    ChannelRates,
    LimitReporter,
    connection_limit_after,
    publication_size,
)


def _reporter() -> tuple[LimitReporter, CollectorRegistry]:
    registry = CollectorRegistry()
    counter = Counter("hubbub_limited", "Limits hit.", ["what"], registry=registry)
    return LimitReporter(counter), registry


def test_every_hit_is_counted_in_the_metric_at_once() -> None:
    reporter, registry = _reporter()
    for _ in range(3):
        reporter.hit("rate")
    reporter.hit("max_frame")
    assert registry.get_sample_value("hubbub_limited_total", {"what": "rate"}) == 3
    assert registry.get_sample_value("hubbub_limited_total", {"what": "max_frame"}) == 1


def test_log_lines_are_aggregated_per_kind_every_ten_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reporter, _ = _reporter()
    caplog.set_level(logging.WARNING, logger="hubbub")
    assert reporter.report(0.0) == []  # nothing hit: nothing logged
    for _ in range(1000):
        reporter.hit("rate")
    reporter.hit("origin")
    assert sorted(reporter.report(1.0)) == [("origin", 1), ("rate", 1000)]
    for _ in range(500):
        reporter.hit("rate")
    assert reporter.report(1.0 + REPORT_EVERY / 2) == []  # too soon for "rate"
    reporter.hit("max_frame")
    assert reporter.report(1.0 + REPORT_EVERY / 2) == [("max_frame", 1)]  # a new kind
    assert reporter.report(1.0 + REPORT_EVERY) == [("rate", 500)]
    assert reporter.report(100.0) == []
    lines = [r for r in caplog.records if r.getMessage() == "limits"]
    assert len(lines) == 4
    assert [r.fields for r in lines][-1] == {  # type: ignore[attr-defined]
        "what": "rate",
        "count": 500,
        "every": REPORT_EVERY,
    }


def test_channel_rates_limit_each_channel_separately() -> None:
    rates = ChannelRates()
    assert rates.take("news:a", 2.0, 0.0) == 0.0  # burst = one second's worth = 2
    assert rates.take("news:a", 2.0, 0.0) == 0.0
    assert rates.take("news:a", 2.0, 0.0) == pytest.approx(0.5)
    assert rates.take("news:b", 2.0, 0.0) == 0.0
    assert rates.take("news:a", 2.0, 0.5) == 0.0


def test_channel_rates_follow_a_changed_rate_and_prune_full_buckets() -> None:
    rates = ChannelRates()
    rates.take("a", 1.0, 0.0)
    rates.take("b", 1.0, 0.0)
    assert rates.take("a", 1.0, 0.0) > 0
    # Reloaded: half a token earned at the old rate, the rest at the new one.
    assert rates.take("a", 10.0, 0.5) == pytest.approx(0.05)
    assert rates.prune(0.6) == 2
    assert rates.prune(1.0) == 1  # "b" refilled: forgotten
    assert rates.prune(10.0) == 0
    assert rates.buckets == {}


def test_publication_size_is_the_msgpack_size_of_data() -> None:
    assert publication_size(b"x" * 1000) == 1000 + 3  # bin 16: raw bytes + header
    assert publication_size("é" * 10) == 20 + 1  # UTF-8 bytes + header
    assert publication_size({"text": "hi"}) == len(b"\x81\xa4text\xa2hi")
    assert publication_size(None) == 1


def test_connection_limit_after_is_spread() -> None:
    values = {connection_limit_after() for _ in range(200)}
    low, high = CONNECTION_LIMIT_AFTER_MS
    assert all(low <= v <= high for v in values)
    assert len(values) > 50


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"namespaces": {"feed": {"slow_consumer": "explode"}}}, "slow_consumer"),
        ({"namespaces": {"feed": {"publish_rate": -1.0}}}, "publish_rate"),
        ({"namespaces": {"feed": {"max_publication": -1}}}, "max_publication"),
        ({"server": {"tls_cert": "a.pem"}}, "tls_key"),
        ({"server": {"tls_key": "a.key"}}, "tls_cert"),
    ],
)
def test_new_limit_keys_are_validated(table: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        validate(from_mapping(table, "test"), "test")


def test_new_limit_keys_have_safe_defaults() -> None:
    config = validate(from_mapping({"namespaces": {"feed": {}}}, "test"), "test")
    ns = config.namespace("feed")
    assert (ns.publish_rate, ns.max_publication, ns.slow_consumer) == (0.0, 0, "")
    assert (config.server.tls_cert, config.server.tls_key) == ("", "")
