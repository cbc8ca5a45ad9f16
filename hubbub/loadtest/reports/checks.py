"""``--check "p99<50ms,loss==0"``: thresholds that fail a CI run.

A check is ``METRIC OP VALUE[UNIT]``, several joined by commas. Metrics:

- latency statistics, in milliseconds: ``min mean p50 p90 p99 p99.9 max`` of the
  delivery latency, or ``NAME.STAT`` for a request (``connect.p99``,
  ``publish.max``, ``reconnect.p99``) or a receiver group (``latency:fast.p99``);
  a time value takes ``us``, ``ms`` (the default) or ``s``;
- counts: ``loss`` (lost messages), ``dup``, ``reorder``, ``errors``,
  ``disconnects``, ``delivered``, ``expected``, ``sent``, ``received``,
  ``connect_failures``, ``users``, ``lagged``, ``recovery_failed``;
- ratios in percent (write ``%`` or nothing): ``loss%``, ``errors%``;
- ``msgs_in``, ``msgs_out``: average messages per second; ``client_bound``: 1 when
  a worker's CPU was saturated.

OP is one of ``< <= > >= == !=``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from hubbub.loadtest.exceptions import CheckError

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_STATS = ("min", "mean", "p50", "p90", "p99", "p99.9", "max")
COUNTS = (
    "loss", "dup", "reorder", "errors", "disconnects", "delivered", "expected", "sent",
    "received", "connect_failures", "users", "lagged", "recovery_failed", "client_bound",
    "msgs_in", "msgs_out",
)  # fmt: skip
RATIOS = ("loss%", "errors%")
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
_CHECK = re.compile(
    r"^\s*(?P<metric>[A-Za-z0-9_.:%\-\[\]]+?)\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<value>-?\d+(?:\.\d+)?)\s*(?P<unit>us|ms|s|%)?\s*$"
)


@dataclass(frozen=True)
class Check:
    """One threshold: ``metric op value`` (time values in ms, ratios in %)."""

    metric: str
    op: str
    value: float
    text: str

    def passes(self, actual: float) -> bool:
        return _OPS[self.op](actual, self.value)


def _kind(metric: str) -> str:
    """ "time", "count" or "ratio"; raises CheckError for an unknown metric."""
    if metric in RATIOS:
        return "ratio"
    if metric in COUNTS:
        return "count"
    if metric in _STATS:
        return "time"
    name, dot, stat = metric.rpartition(".")
    if dot and name and stat in _STATS:
        return "time"
    # "p99.9" splits as ("p99", "9"): handled above; "connect.p99.9" here.
    if metric.endswith(".p99.9") and len(metric) > len(".p99.9"):
        return "time"
    raise CheckError(
        f"unknown metric {metric!r}: use {', '.join(_STATS)}, NAME.STAT, "
        f"{', '.join(COUNTS)} or {', '.join(RATIOS)}"
    )


def parse_checks(text: str) -> list[Check]:
    """Parse ``"p99<50ms,loss==0"`` into checks; raises :class:`CheckError`."""
    checks: list[Check] = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = _CHECK.match(part)
        if match is None:
            raise CheckError(f"bad check {part.strip()!r}: write METRIC OP VALUE, e.g. p99<50ms")
        metric, op, unit = match["metric"], match["op"], match["unit"]
        value = float(match["value"])
        kind = _kind(metric)
        if kind == "time":
            if unit == "%":
                raise CheckError(f"{part.strip()!r}: a time takes us, ms or s")
            value *= _TIME_UNITS[unit or "ms"]
        elif unit is not None and not (kind == "ratio" and unit == "%"):
            raise CheckError(f"{part.strip()!r}: {metric} takes no unit {unit!r}")
        checks.append(Check(metric, op, value, part.strip()))
    if not checks:
        raise CheckError("no checks given")
    return checks


@dataclass(frozen=True)
class CheckResult:
    check: Check
    actual: float | None
    passed: bool

    def describe(self) -> str:
        seen = "no data" if self.actual is None else f"{self.actual:g}"
        return f"{'PASS' if self.passed else 'FAIL'} {self.check.text} (actual {seen})"


def evaluate(checks: list[Check], lookup: Callable[[str], float | None]) -> list[CheckResult]:
    """Evaluate each check; a metric without data fails."""
    results = []
    for check in checks:
        actual = lookup(check.metric)
        results.append(CheckResult(check, actual, actual is not None and check.passes(actual)))
    return results
