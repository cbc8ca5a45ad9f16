"""The one reconnect delay: capped exponential backoff with jitter.

Every side that reconnects uses it: the clients (the asyncio client, the lean
fast path) with full jitter, so a crowd dropped at once comes back spread out
(PROTOCOL.md §3: without an ``after`` the client picks its own delay); the Redis
engine with "equal jitter" (``floor=0.5``), so it never retries at once. Pure
arithmetic on an attempt number: no clock, no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    attempt: int,
    base: float = 0.1,
    cap: float = 10.0,
    rand: Callable[[], float] = random.random,
    *,
    floor: float = 0.0,
) -> float:
    """Seconds to wait before attempt ``attempt`` (0, 1, 2 ...): uniform in
    ``[floor * d, d]`` with ``d = min(cap, base * 2**attempt)``."""
    delay = min(cap, base * 2 ** min(attempt, 32))
    return delay * (floor + (1.0 - floor) * rand())
