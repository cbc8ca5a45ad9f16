"""``slow-consumers``: a fraction of subscribers read slowly; what do the others see?

Like ``livefeed``, but every subscriber whose index falls in ``--slow-fraction``
(spread evenly) reads slowly: after each read it stops reading for
``-o slow_pause=0.2`` seconds, with a small socket receive buffer
(``-o slow_rcvbuf=4096`` bytes), so the server's outbound buffer for it fills
and its slow-consumer policy (disconnect 3002, or drop + ``lag``) applies.
Latency and loss are reported for the groups "fast" and "slow" apart: the
fast ones should not notice.

    hubbub-loadtest --scenario slow-consumers -u 1001 --slow-fraction 0.1 --rate 100 -t 30s
"""

from __future__ import annotations

from hubbub.loadtest.config import RunConfig
from hubbub.loadtest.scenarios import Scenario
from hubbub.loadtest.scenarios.livefeed import FeedPublisher, FeedSubscriber, publishers
from hubbub.loadtest.users.user import User


class FastSubscriber(FeedSubscriber):
    group = "fast"


class SlowSubscriber(FeedSubscriber):
    """Subscribes, then reads slowly."""

    group = "slow"

    async def on_start(self) -> None:
        await super().on_start()
        config = self.config
        self.read_slowly(
            float(config.option("slow_pause", 0.2)), int(config.option("slow_rcvbuf", 4096))
        )


def is_slow(index: int, config: RunConfig) -> bool:
    """Whether subscriber ``index`` is slow: a Bresenham spread of the fraction."""
    k = index - publishers(config)
    f = min(1.0, max(0.0, config.slow_fraction))
    return int((k + 1) * f) > int(k * f)


def assign(index: int, config: RunConfig) -> type[User]:
    if index < publishers(config):
        return FeedPublisher
    return SlowSubscriber if is_slow(index, config) else FastSubscriber


SCENARIO = Scenario("slow-consumers", "some subscribers read slowly", assign)
