"""Per-client input never creates unbounded server state (docs/limits.md
"State a client can create"): floods of one client against a real node,
measured by the node's RSS (tests/e2e/floods.py prints the full-size figures)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.floods import FLOOD_CONFIG, flood, history_reads, namespaces
from tests.procs import NodeProc, start_node

MB = 1024 * 1024
COUNT = 100_000


@pytest.fixture(scope="module")
def flood_node() -> Iterator[NodeProc]:
    node = start_node(FLOOD_CONFIG)
    yield node
    node.stop()


async def test_invented_namespaces_are_not_cached(flood_node: NodeProc) -> None:
    """Each new namespace used to add a cache entry for good (+16 MB here)."""
    await flood(flood_node, namespaces, 2000)  # warm up
    growth = await flood(flood_node, namespaces, COUNT)
    assert growth < 5 * MB, growth / MB


async def test_reading_history_creates_none(flood_node: NodeProc) -> None:
    """A history read of a never-published channel used to create a stream kept
    for history_ttl (+110 MB here)."""
    await flood(flood_node, history_reads, 2000)
    growth = await flood(flood_node, history_reads, COUNT)
    assert growth < 5 * MB, growth / MB
