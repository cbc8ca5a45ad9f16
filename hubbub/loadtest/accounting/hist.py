"""Latency histograms: HdrHistogram in microseconds, 3 significant digits.

Workers record into interval histograms, send them encoded (compressed,
base64 text) to the coordinator once per tick, and start fresh ones; the
coordinator adds them into per-tick and whole-run histograms. Adding
HdrHistograms is exact: the merged percentiles are those of all values
together, never an average of percentiles.
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
#: One hour: anything slower is recorded as one hour.
HIGHEST_US = 3_600_000_000
DIGITS = 3
#: Percentiles of every summary.
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


#: Significant bits HdrHistogram keeps at 3 digits (2048 sub-buckets).
SIGNIFICANT_BITS = 11


def quantize(us: int) -> int:
    """``us`` cut to the histogram's resolution (a value it cannot tell apart).

    Values below 2048 are exact; above, HdrHistogram's bucket for a value of
    bit length L has a width of 2**(L - 11), so recording the quantized value
    lands in the same bucket. The receivers' hot path does this inline.
    """
    shift = us.bit_length() - SIGNIFICANT_BITS
    return us >> shift << shift if shift > 0 else us


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def record_seconds(hist: HdrHistogram, seconds: float) -> None:
    """Record a duration given in seconds (clamped into the histogram's range)."""
    us = int(seconds * 1e6)
    hist.record_value(us if 0 < us < HIGHEST_US else (LOWEST_US if us <= 0 else HIGHEST_US))


def encode(hist: HdrHistogram) -> str:
    """Compressed base64 text (HdrHistogram's own encoding)."""
    return hist.encode().decode("ascii")


def add_encoded(hist: HdrHistogram, text: str) -> None:
    """Add an :func:`encode`-d histogram into ``hist``."""
    hist.decode_and_add(text.encode("ascii"))


def merged(*hists: HdrHistogram) -> HdrHistogram:
    out = new_histogram()
    for h in hists:
        if h.get_total_count():
            out.add(h)
    return out


def summary(hist: HdrHistogram) -> dict[str, float]:
    """Count and latencies in milliseconds: min, mean, p50, p90, p99, p99.9, max."""
    count = hist.get_total_count()
    if not count:
        return {"count": 0}
    values = hist.get_percentile_to_value_dict(list(PERCENTILES))
    out: dict[str, float] = {
        "count": count,
        "min": hist.get_min_value() / 1000,
        "mean": round(hist.get_mean_value() / 1000, 3),
    }
    for p in PERCENTILES:
        out[percentile_key(p)] = values[p] / 1000
    out["max"] = hist.get_max_value() / 1000
    return out


def percentile_key(p: float) -> str:
    """``p50``, ``p99``, ``p99.9`` ..."""
    return f"p{p:g}"
