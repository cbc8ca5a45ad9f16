"""``livefeed``: a few publishers at a fixed rate, many subscribers (the fan-out case).

Users ``0 .. publishers-1`` publish (publisher ``p`` on channel ``p % channels``,
``--rate`` publications/s each, open loop); every other user subscribes to
channel ``index % channels``. Publishers start only once every user of every
worker is in place, so each subscriber expects every publication:
``sent x subscribers == delivered + lost``.

    hubbub-loadtest --scenario livefeed -u 1001 -r 500 -t 30s --rate 100
"""

from __future__ import annotations

from typing import ClassVar

from hubbub.loadtest.config import RunConfig
from hubbub.loadtest.scenarios import Scenario
from hubbub.loadtest.users.schedule import constant_rate
from hubbub.loadtest.users.user import User, WorkerContext, task

DEFAULT_RATE = 10.0


def publishers(config: RunConfig) -> int:
    return config.publishers if config.publishers is not None else 1


class _FeedUser(User):
    abstract = True
    fast = True
    #: Namespace of the channels when ``--namespace`` is not given.
    default_namespace: ClassVar[str] = "feed"

    def feed_channel(self) -> str:
        """``NS:live-K``: the channel of this user (K = index % channels)."""
        number = self.index % max(1, self.config.channels or 1)
        return f"{self.config.namespace or self.default_namespace}:live-{number}"


class FeedSubscriber(_FeedUser):
    """Subscribes to one channel and receives."""

    async def on_start(self) -> None:
        await self.subscribe(self.feed_channel())


class FeedPublisher(_FeedUser):
    """Publishes stamped payloads at ``--rate`` per second on a fixed schedule."""

    def __init__(self, ctx: WorkerContext, index: int) -> None:
        super().__init__(ctx, index)
        self.wait_time = constant_rate(self.config.rate or DEFAULT_RATE)
        self.channel = self.feed_channel()

    async def on_start(self) -> None:
        await self.wait_all_spawned()

    @task
    async def send(self) -> None:
        await self.publish(self.channel)


def assign(index: int, config: RunConfig) -> type[User]:
    return FeedPublisher if index < publishers(config) else FeedSubscriber


SCENARIO = Scenario("livefeed", "few publishers, many subscribers (fan-out)", assign)
