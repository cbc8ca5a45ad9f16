"""Token buckets for commands and publications, with time passed in (after aioquic).

Pure logic: the caller passes ``now`` (the event loop's monotonic clock), so
rates, refills and the abuse rule are tested without sleeping.

The rule for abuse (PROTOCOL.md §5, code 3006; docs/limits.md): a connection
whose commands are refused (429) **more than** ``2 * burst`` times within one
*abuse window* is cut with 3006. A window opens at the first refusal after the
previous window ended and lasts ``burst / rate`` seconds: the time an empty
bucket takes to fill again. So refusals may come at up to twice the rate: a
client that retries as soon as ``retry_after`` says (about one refusal per
admitted command) or that sends at twice the rate is never cut; one that keeps
sending at more than three times the rate after its bucket ran dry is cut
within one window.
"""

from __future__ import annotations

import math

#: :meth:`CommandLimiter.check`: the command may run.
ADMIT = 0
#: :meth:`CommandLimiter.check`: the abuse rule tripped, disconnect with 3006.
ABUSE = -1
#: Slack for float error, so a client sending exactly at the rate is never refused.
_EPSILON = 1e-9


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 when there was one, else the seconds until there is."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens >= 1.0 - _EPSILON:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate

    def charge(self, count: int, now: float) -> float:
        """Take ``count`` tokens even if they are not there (the bucket goes into
        debt); returns the seconds until the debt is paid (0.0: none)."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        self.tokens = tokens - count
        return 0.0 if self.tokens >= -_EPSILON else -self.tokens / self.rate

    def full(self, now: float) -> bool:
        """Whether the bucket would be full at ``now`` (it then equals a new one)."""
        return self.tokens + (now - self.stamp) * self.rate >= self.burst - _EPSILON

    def configure(self, rate: float, burst: float, now: float) -> None:
        """Change the rate and size (config reload), keeping what was earned so far."""
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.tokens = min(float(burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.rate = float(rate)
        self.burst = float(burst)


class CommandLimiter(TokenBucket):
    """One connection's command bucket (``messages_per_second``, ``message_burst``)
    and the abuse rule of the module docstring. One :meth:`check` per command."""

    __slots__ = ("refused", "window_end")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        super().__init__(rate, burst, now)
        self.refused = 0  # refusals in the current abuse window
        self.window_end = now  # the window is closed

    def check(self, now: float) -> int:
        """:data:`ADMIT`, :data:`ABUSE`, or a refusal: ``retry_after`` in ms (> 0)."""
        wait = self.take(now)
        if wait == 0.0:
            return ADMIT
        if now >= self.window_end:
            self.window_end = now + self.burst / self.rate
            self.refused = 0
        self.refused += 1
        if self.refused > 2.0 * self.burst:
            return ABUSE
        return max(1, math.ceil(wait * 1000.0))

    @property
    def refill_ms(self) -> int:
        """Milliseconds an empty bucket takes to fill: the ``after`` of a 3006."""
        return max(1, math.ceil(self.burst / self.rate * 1000.0))


def bucket_burst(rate: float) -> float:
    """The burst of a rate-only limit (namespace ``publish_rate``): one second's
    worth, at least one token."""
    return float(max(1, math.ceil(rate)))
