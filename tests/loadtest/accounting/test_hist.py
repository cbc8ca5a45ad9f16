"""Histograms: encoded, sent, merged exactly."""

from __future__ import annotations

import random

from hubbub.loadtest.accounting.hist import (
    add_encoded,
    encode,
    merged,
    new_histogram,
    quantize,
    record_seconds,
    summary,
)


def test_merging_encoded_interval_histograms_equals_one_histogram() -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(-6, 1.2) for _ in range(20000)]
    whole = new_histogram()
    parts = [new_histogram() for _ in range(4)]
    for i, v in enumerate(values):
        record_seconds(whole, v)
        record_seconds(parts[i % 4], v)
    total = new_histogram()
    for part in parts:
        add_encoded(total, encode(part))  # as the coordinator does with workers' ticks
    assert summary(total) == summary(whole)
    assert summary(merged(*parts)) == summary(whole)
    assert total.get_total_count() == 20000


def test_summary_in_milliseconds_and_clamping() -> None:
    h = new_histogram()
    assert summary(h) == {"count": 0}
    for seconds in (0.001, 0.002, 0.003, -5.0, 10_000.0):
        record_seconds(h, seconds)
    s = summary(h)
    assert s["count"] == 5
    assert s["min"] == 0.001  # negative -> 1 us
    assert 1.99 < s["p50"] < 2.01
    assert s["max"] >= 3_600_000  # clamped at one hour


def test_counting_quantized_values_gives_the_same_histogram() -> None:
    """The receivers' shortcut (count quantized values, record them per tick) is exact."""
    rng = random.Random(9)
    values = [int(rng.lognormvariate(8, 2.5)) + 1 for _ in range(50000)]
    direct, counted = new_histogram(), new_histogram()
    counts: dict[int, int] = {}
    for v in values:
        v = min(v, 3_600_000_000)
        direct.record_value(v)
        q = quantize(v)
        counts[q] = counts.get(q, 0) + 1
    for v, n in counts.items():
        counted.record_value(v, n)
    assert direct.get_counts_array_index(quantize(123_456_789)) == direct.get_counts_array_index(
        123_456_789
    )
    assert encode(counted) == encode(direct)
    assert len(counts) < 12000  # far fewer distinct keys than values
