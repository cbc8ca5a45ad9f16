"""``reconnect-storm``: a steady population while a node restarts or drains.

Like ``livefeed`` on a channel with history (namespace ``chat`` by default),
with every subscription asking for recovery. Restart or drain a node during
the run, yourself or with ``--disrupt-at 10s --disrupt-cmd 'systemctl restart
hubbub@2'``: each client reconnects (the server's ``after``, else backoff),
re-subscribes from its last offset and gets what it missed. The report gives
the time each client was away ("reconnect"), when the last one was back,
publications recovered, recoveries refused, and what was lost.

    hubbub-loadtest --scenario reconnect-storm -u 2001 --rate 20 -t 60s \\
        --host tcp://10.0.0.1:7400 --host tcp://10.0.0.2:7400 --disrupt-at 20s \\
        --disrupt-cmd 'ssh 10.0.0.1 systemctl kill -s TERM hubbub'
"""

from __future__ import annotations

from hubbub.loadtest.config import RunConfig
from hubbub.loadtest.scenarios import Scenario
from hubbub.loadtest.scenarios.livefeed import FeedPublisher, FeedSubscriber, publishers
from hubbub.loadtest.users.user import User


class RecoveringSubscriber(FeedSubscriber):
    """A feed subscriber that recovers missed publications after a reconnect."""

    default_namespace = "chat"
    recover = True


class SteadyPublisher(FeedPublisher):
    """The feed publisher, on the history namespace."""

    default_namespace = "chat"


def assign(index: int, config: RunConfig) -> type[User]:
    return SteadyPublisher if index < publishers(config) else RecoveringSubscriber


SCENARIO = Scenario("reconnect-storm", "steady population through a node restart", assign)
