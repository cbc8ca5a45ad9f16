"""server.admission on fake transports: the connection limits, per-IP counts,
what a refused client is told, and the place given back on close."""

from __future__ import annotations

from hubbub.protocol.codes import DisconnectCode
from hubbub.server.lifecycle import NodeState
from hubbub.server.limits import CONNECTION_LIMIT_AFTER_MS
from tests.server.fakes import connect, node_parts


def _limited(node: object, what: str) -> float | None:
    return node.metrics.registry.get_sample_value(  # type: ignore[attr-defined]
        "hubbub_limited_total", {"what": what}
    )


async def test_max_connections_admits_up_to_the_limit() -> None:
    async with node_parts(limits={"max_connections": 2}) as node:
        results = [connect(node, f"10.0.0.{i}")[2] for i in range(3)]
        assert results == [True, True, False]
        assert node.admission.counted == 2
        assert _limited(node, "max_connections") == 1


async def test_max_connections_per_ip_counts_each_address() -> None:
    async with node_parts(limits={"max_connections_per_ip": 1}) as node:
        assert connect(node, "10.0.0.1")[2]
        assert not connect(node, "10.0.0.1")[2]
        assert connect(node, "10.0.0.2")[2]
        assert node.admission.per_ip == {"10.0.0.1": 1, "10.0.0.2": 1}
        assert _limited(node, "max_connections_per_ip") == 1


async def test_a_refused_client_is_told_3007_with_a_spread_after() -> None:
    async with node_parts(limits={"max_connections": 1}) as node:
        connect(node)
        conn, transport, admitted = connect(node)
        assert not admitted
        node.admission.refuse(conn)
        (message,) = transport.messages()
        assert message["code"] == DisconnectCode.CONNECTION_LIMIT
        low, high = CONNECTION_LIMIT_AFTER_MS
        assert low <= message["after"] <= high
        assert transport.eof  # half-closed, then it lingers


async def test_a_closed_connection_gives_its_place_back() -> None:
    async with node_parts(limits={"max_connections": 1}) as node:
        conn, _, _ = connect(node, "10.0.0.7")
        conn.closed()
        assert node.admission.counted == 0 and node.admission.per_ip == {}
        assert conn not in node.connections
        assert connect(node)[2]


async def test_a_refused_connection_takes_no_place() -> None:
    async with node_parts(limits={"max_connections": 1}) as node:
        connect(node)
        refused, _, _ = connect(node)
        refused.closed()
        assert node.admission.counted == 1


async def test_nobody_is_admitted_while_draining_and_is_told_3001() -> None:
    async with node_parts() as node:
        node.lifecycle.to(NodeState.DRAINING)
        conn, transport, admitted = connect(node)
        assert not admitted
        node.admission.refuse(conn)
        (message,) = transport.messages()
        assert message["code"] == DisconnectCode.DRAINING
        assert 0 <= message["after"] <= node.config.limits.drain_timeout * 1000
