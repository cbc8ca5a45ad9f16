"""``connect-storm``: connect ``-u`` clients at ``-r`` per second; measure connect latency.

Each user opens its connection at its slot (open loop: ``index / rate`` after
the start, however long earlier connects took), sends ``connect`` and then
stays idle, answering pings. The "connect" request is timed from the slot, so a
server that accepts slowly shows up in the latency; failures are counted by
reason (refused, timeout, 3007 connection limit, ...).

    hubbub-loadtest --scenario connect-storm -u 10000 -r 1000 -t 30s --source-ips 8
"""

from __future__ import annotations

from hubbub.loadtest.config import RunConfig
from hubbub.loadtest.scenarios import Scenario
from hubbub.loadtest.users.user import User


class StormUser(User):
    """Connects and idles."""

    fast = True


def assign(index: int, config: RunConfig) -> type[User]:
    return StormUser


SCENARIO = Scenario("connect-storm", "connect N clients at a spawn rate", assign)
