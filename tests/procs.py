"""Real processes for integration and e2e tests: ``hubbub serve`` nodes and
``redis-server`` instances on free loopback ports, from the tree's one
launcher (:mod:`benchmarks.launcher`, shared with the benchmarks).
"""

from __future__ import annotations

from benchmarks.launcher import (
    HUBBUB,
    ROOT,
    NodeProc,
    RedisProc,
    free_port,
    start_node,
    start_redis,
)

__all__ = ["HUBBUB", "ROOT", "NodeProc", "RedisProc", "free_port", "start_node", "start_redis"]
